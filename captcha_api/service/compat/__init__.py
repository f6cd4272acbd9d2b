"""Endpoints beside the native API for scrapers that already call a captcha-solving service: 2captcha's classic
API (twocaptcha.py) and the JSON task API of anti-captcha, CapMonster Cloud and 2captcha v2 (taskapi.py). They
read with the same models, take the same API keys (sent as `key` / `clientKey` instead of X-API-Key) and draw on
the same rate limit; their tasks live in a store every worker and instance reaches (store.py). docs/compat.md
says how each official client is pointed here."""

from __future__ import annotations

import logging

from flask import Flask

from . import params, taskapi, twocaptcha
from .store import open_store

log = logging.getLogger(__name__)

# The paths whose API key travels in the parameters, not in X-API-Key: guard.py reads their bodies before the key is
# checked (the key is in there), within a bound of their own. tests/test_compat.py checks it against the routes.
PATHS = frozenset(
    {
        "/in.php",
        "/res.php",
        "/createTask",
        "/getTaskResult",
        "/getBalance",
        "/reportIncorrectImageCaptcha",
        "/reportIncorrect",
        "/reportCorrect",
    }
)


def init_app(app: Flask) -> None:
    """Register the compatible endpoints and their task store, unless CAPTCHA_TASK_STORE=none."""
    settings = app.config["SETTINGS"]
    location = settings.task_store_location
    if location is None:
        log.info("the solver-compatible endpoints are off (CAPTCHA_TASK_STORE=none)")
        return
    app.extensions["tasks"] = open_store(location, settings.task_ttl_seconds, settings.task_max)
    app.extensions["key_readers"].update(
        {
            twocaptcha.bp.name: lambda: params.credentials(params.merged())[0],
            taskapi.bp.name: lambda: params.credentials(params.task_body())[0],
        }
    )
    app.register_blueprint(twocaptcha.bp)
    app.register_blueprint(taskapi.bp)
