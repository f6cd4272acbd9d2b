"""API keys in the X-API-Key header, compared in constant time."""

from __future__ import annotations

import hmac
import logging

from flask import Flask, current_app, request

from .errors import ApiError

log = logging.getLogger(__name__)

HEADER = "X-API-Key"
# /health for probes; the API description and its docs page, which hold nothing secret.
PUBLIC_ENDPOINTS = {"api.health", "docs.openapi_json", "docs.swagger_ui", "static"}


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
    given = request.headers.get(HEADER)
    if not given:
        raise ApiError(401, "missing_api_key", f"send your API key in the {HEADER} header")
    if not key_is_valid(given, settings.api_keys):
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    return None


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    # CAPTCHA_METRICS=open: a scraper on a private network reads /metrics without a key; "protected" keeps the key.
    open_metrics = {"metrics"} if settings.metrics == "open" else set()
    app.extensions["public_endpoints"] = frozenset(PUBLIC_ENDPOINTS | open_metrics)
    if settings.open_access:
        log.warning("no API key configured: the service is open to anyone who can reach %s", settings.host)
    app.before_request(require_api_key)
