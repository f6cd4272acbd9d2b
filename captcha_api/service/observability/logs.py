"""Logging to stdout, one JSON object a line by default (CAPTCHA_LOG_FORMAT=text: the classic one-line format), and
one access line per request: method, path, status, latency, client address, request id. Never a body, a query
string or a header value other than the request id: no image bytes, no base64, no key reaches a log."""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from . import context

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
# What ends or rewrites a line in a terminal or a log reader: ASCII controls, DEL, and Unicode's line separators.
CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
access = logging.getLogger("captcha_api.access")


class JsonLineFormatter(JsonFormatter):
    """ts, level, logger, pid and message first, then the record's extra fields (request_id, method, status...)
    and exc_info as a string, so a traceback stays inside its one line."""

    def __init__(self):
        super().__init__(
            ["asctime", "levelname", "name", "process", "message"],
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"},
        )

    def formatTime(self, record, datefmt=None):
        # ISO 8601 in UTC with milliseconds: sortable, and the same whatever the host's time zone.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextLineFormatter(logging.Formatter):
    """The classic one-line format. Control characters in the line are escaped (a path with %0a in it would
    otherwise start a forged line of its own); a traceback, the server's own text, follows on its lines."""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record):
        return CONTROL.sub(_escape, super().formatMessage(record))


def _escape(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}" if ord(match.group()) < 0x100 else f"\\u{ord(match.group()):04x}"


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonLineFormatter() if log_format == "json" else TextLineFormatter()


class RequestIdFilter(logging.Filter):
    """Every line logged while a request is handled (a warning, a traceback) carries that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            request_id = context.current().request_id
            if request_id != "-":
                record.request_id = request_id
        return True


def ensure_handler() -> logging.Handler:
    """One stdout handler on the root logger, however many apps the process builds (the tests build many)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_captcha", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.addFilter(RequestIdFilter())
        handler._captcha = True
        root.addHandler(handler)
    return handler


def configure(level: str, log_format: str = "json") -> None:
    """The last app built sets the level and the format."""
    ensure_handler().setFormatter(make_formatter(log_format))
    logging.getLogger().setLevel(level)


def _start():
    given = request.headers.get("X-Request-ID", "")
    record = context.current()
    record.request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
    record.started = time.perf_counter()


def _finish(response):
    record = context.current()
    latency = record.seconds() * 1000
    request_id = record.request_id
    response.headers["X-Request-ID"] = request_id
    # The message keeps the text format's line; the fields are what a JSON reader filters on. The path, never the
    # query string or the body.
    access.info(
        "%s %s %d %.1fms id=%s",
        request.method,
        request.path,
        response.status_code,
        latency,
        request_id,
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "status": response.status_code,
            "latency_ms": round(latency, 2),
            "remote_addr": request.remote_addr,
        },
    )
    return response


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    configure(settings.log_level, settings.log_format)
    app.before_request(_start)
    app.after_request(_finish)
