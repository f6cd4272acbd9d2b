"""API keys in the X-API-Key header, compared in constant time; wrong keys limited per client address."""

from __future__ import annotations

import hmac
import logging
import math
import time

from flask import Flask, current_app, g, request
from limits import parse

from .errors import InvalidApiKey, MissingApiKey, RateLimited
from .extensions import client_address, limiter

log = logging.getLogger(__name__)

HEADER = "X-API-Key"
# /health for probes; the API description and its docs page, which hold nothing secret.
PUBLIC_ENDPOINTS = {"api.health", "docs.openapi_json", "docs.swagger_ui", "docs.swagger_asset", "static"}


def key_is_valid(given: str, keys: tuple[str, ...]) -> bool:
    given_bytes = given.encode("utf-8", "replace")
    # compare against every key so the time taken does not tell which one nearly matched
    matches = [hmac.compare_digest(given_bytes, key.encode("utf-8")) for key in keys]
    return any(matches)


def require_api_key():
    settings = current_app.config["SETTINGS"]
    if settings.open_access or request.method == "OPTIONS":
        return None
    if request.endpoint in current_app.extensions["public_endpoints"] or request.endpoint is None:
        return None
    reader = current_app.extensions["key_readers"].get(request.blueprint)
    given = reader() if reader is not None else request.headers.get(HEADER)
    if not given:
        where = "its key parameter" if reader is not None else f"the {HEADER} header"
        raise MissingApiKey(f"send your API key in {where}")
    failures = current_app.extensions["auth_failure_limit"]
    address = client_address()
    if failures is not None and not _allowed(failures, address):
        # Every key is refused from here until the window passes, the right one too: otherwise a 401 against a
        # 200 would still tell a guesser which key is right.
        raise RateLimited(
            f"too many wrong API keys from this address ({failures}, CAPTCHA_AUTH_FAILURE_LIMIT)",
            {"Retry-After": str(_retry_after(failures, address))},
        )
    if not key_is_valid(given, settings.api_keys):
        if failures is not None:
            _count_failure(failures, address)
        raise InvalidApiKey("the API key is not valid")
    g.api_key = given  # whose request this is, for the rate limits (extensions.py)
    return None


# The failure counts live in the rate limiter's storage (Redis when configured: shared by every worker and
# instance). A storage that does not answer leaves keys checked but failures uncounted, as the limiter itself
# does for its limits (RATELIMIT_SWALLOW_ERRORS).
SCOPE = "auth-failures"


def _allowed(item, address: str) -> bool:
    try:
        return limiter.limiter.test(item, SCOPE, address)
    except Exception:  # noqa: BLE001 - any storage failure (connection, timeout) must not fail the request
        log.warning("rate limit storage unreachable: wrong API keys are not counted", exc_info=True)
        return True


def _count_failure(item, address: str) -> None:
    try:
        limiter.limiter.hit(item, SCOPE, address)
    except Exception:  # noqa: BLE001 - as in _allowed
        log.warning("rate limit storage unreachable: wrong API keys are not counted", exc_info=True)


def _retry_after(item, address: str) -> int:
    try:
        reset = limiter.limiter.get_window_stats(item, SCOPE, address).reset_time
    except Exception:  # noqa: BLE001 - as in _allowed
        return item.get_expiry()
    return max(1, math.ceil(reset - time.time()))


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    # CAPTCHA_METRICS=open: a scraper on a private network reads /metrics without a key; "protected" keeps the key.
    open_metrics = {"metrics"} if settings.metrics == "open" else set()
    app.extensions["public_endpoints"] = frozenset(PUBLIC_ENDPOINTS | open_metrics)
    # Blueprints whose requests carry their key elsewhere than X-API-Key -> a function that reads it (compat/).
    app.extensions.setdefault("key_readers", {})
    limit = settings.auth_failure_limit
    app.extensions["auth_failure_limit"] = parse(limit) if limit and not settings.open_access else None
    app.before_request(require_api_key)
