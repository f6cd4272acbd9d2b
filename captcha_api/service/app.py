"""The application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import compat, errors, guard, openapi, routes, security
from .config import load_settings
from .extensions import cors, limiter
from .feedback import Feedback
from .model_set import load_models
from .observability import logs, metrics
from .request_models import JsonProvider

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 0.5  # seconds, for connecting to and each answer from the rate-limit storage


def create_app(test_config: Mapping | None = None) -> Flask:
    """Build the app: settings from CAPTCHA_* variables (overlaid by `test_config`), then the model, once."""
    settings = load_settings(overrides=test_config)
    app = Flask(__name__)
    if settings.trusted_proxies:
        # Behind nginx: take the client address (and scheme) from the X-Forwarded-* headers the trusted proxies
        # set, so limits keyed on the address count the real client, not the proxy.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    app.config.from_mapping(
        SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        RATELIMIT_STORAGE_URI=settings.ratelimit_storage_uri,
        RATELIMIT_STORAGE_OPTIONS=storage_options(settings.ratelimit_storage_uri),
        # A request over its limit takes nothing: with costs (a batch counts its images), a fixed window would
        # still add a refused batch to the count and leave the client less than the limit allows. A moving window
        # also says exactly when the oldest hit leaves it (Retry-After); a sliding-window counter, weighting the last
        # window's count, sent clients back too early, again and again.
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_HEADERS_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
    )
    app.json = JsonProvider(app)
    logs.init_app(app)  # first, so the request id exists before any other hook can fail
    guard.init_app(app)  # the body, read whole within its time and size limits, before anything judges it
    metrics.init_app(app)  # before security: /predict on the metrics listener is a 404, not a 401
    security.init_app(app)
    errors.init_app(app)
    # Registered before the limiter's own hook, so it runs after it (Flask runs these in reverse order).
    app.after_request(_retry_after_only_when_limited)
    limiter.init_app(app)
    cors.init_app(
        app,
        origins=list(settings.cors_origins),
        methods=["GET", "POST"],
        allow_headers=["Content-Type", "X-API-Key", "X-Request-ID"],
        expose_headers=["Retry-After", "X-Request-ID", routes.MODEL_VERSION_HEADER],
    )
    app.register_blueprint(routes.bp)
    app.register_blueprint(openapi.docs)
    app.extensions["models"] = models = load_models(settings)
    compat.init_app(app)
    app.extensions["feedback"] = (
        None
        if settings.feedback_dir.lower() == "none"
        else Feedback(
            Path(settings.feedback_dir),
            settings.feedback_keep_seconds,
            settings.feedback_keep_mb * 2**20,
            settings.feedback_max_mb * 2**20,
        )
    )
    if "metrics" in app.extensions:
        app.extensions["metrics"].watch_models(models)
    return app


def storage_options(uri: str) -> dict:
    """A Redis that stops answering must not stall requests: short timeouts, after which Flask-Limiter counts in
    this worker's memory until Redis is back (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED)."""
    if uri.startswith(("redis", "rediss")):
        return {"socket_connect_timeout": REDIS_TIMEOUT, "socket_timeout": REDIS_TIMEOUT}
    return {}


def _retry_after_only_when_limited(response):
    """Flask-Limiter adds Retry-After to every answer of a limited route; clients that honour it would then wait
    after a 400 or a 503 for no reason. Only a 429 says when to come back, and never "0": Flask-Limiter rounds the
    wait down, so a window that frees in 0.4 s said 0, and a client retrying at once was refused again until its
    retries ran out."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    elif response.headers.get("Retry-After", "").isdigit():
        response.headers["Retry-After"] = str(max(1, int(response.headers["Retry-After"])))
    return response
