"""Logging to stdout and one access line per request: method, path, status, latency, request id.
Never the body, never a key."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, g, request

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access = logging.getLogger("captcha_api.access")


def configure(level: str) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_captcha", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"))
        handler._captcha = True
        root.addHandler(handler)
    root.setLevel(level)


def _start():
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
    g.started = time.perf_counter()


def _finish(response):
    started = g.get("started")
    latency = (time.perf_counter() - started) * 1000 if started else 0.0
    request_id = g.get("request_id", "-")
    response.headers["X-Request-ID"] = request_id
    access.info("%s %s %d %.1fms id=%s", request.method, request.path, response.status_code, latency, request_id)
    return response


def init_app(app: Flask) -> None:
    configure(app.config["SETTINGS"].log_level)
    app.before_request(_start)
    app.after_request(_finish)
