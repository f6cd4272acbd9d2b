"""Endpoints beside the native API for scrapers that already call a captcha-solving service: 2captcha's classic
API (twocaptcha.py) and the JSON task API of anti-captcha, CapMonster Cloud and 2captcha v2 (taskapi.py). They
read with the same models, take the same API keys (sent as `key` / `clientKey` instead of X-API-Key) and draw on
the same rate limit; their tasks live in a store every worker and instance reaches (store.py). docs/compat.md
says how each official client is pointed here."""

from __future__ import annotations

import logging

from flask import Flask, request
from werkzeug.exceptions import MethodNotAllowed

from . import errors, params, responses, taskapi, twocaptcha
from .store import open_store

log = logging.getLogger(__name__)

# The paths whose API key travels in the parameters, not in X-API-Key: guard.py reads their bodies before the key is
# checked (the key is in there), within bounds of their own. tests/test_compat.py checks them against the routes.
PATHS = twocaptcha.PATHS | taskapi.PATHS


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
    app.before_request(_other_methods)


def _other_methods():
    """A method these paths do not serve is answered in their protocol's format, not the native 405: their clients
    read only that. HEAD too, which Flask would otherwise serve as a GET, creating a task or recording a report
    whose answer nobody reads."""
    if request.path not in PATHS:
        return None
    if request.method != "HEAD" and not isinstance(request.routing_exception, MethodNotAllowed):
        return None
    allowed = "GET or POST" if request.path in twocaptcha.PATHS else "POST"
    error = errors.NO_SUCH_METHOD(f"{request.method} is not served at {request.path}: use {allowed}")
    if request.path in twocaptcha.PATHS:
        return responses.note_error(error, twocaptcha.error_answer(error))
    return taskapi.error_answer(error)
