"""One JSON envelope for every error: {"success": false, "error": {"code", "message"}}."""

from __future__ import annotations

import logging
import re

from flask import Flask, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from ..core.errors import CaptchaError
from .observability import context
from .observability.metrics import PORT_KEY

log = logging.getLogger(__name__)

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    500: "internal_error",
    503: "model_unavailable",
}
# Methods werkzeug lists for every route that nobody sends on purpose: a CORS preflight's and a GET's HEAD.
IMPLIED_METHODS = frozenset({"HEAD", "OPTIONS"})


class ApiError(CaptchaError):
    """A request-level error raised by the views: status and code given at the raise site."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


def error_body(code: str, message: str) -> dict:
    return {"success": False, "error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers=None):
    context.current().error_code = code  # for the metrics' error counter
    response = jsonify(error_body(code, message))
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(CaptchaError)
    def captcha_error(exc: CaptchaError):
        return error_response(exc.status, exc.code, exc.message, getattr(exc, "headers", None))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 429:
            message = f"rate limit exceeded: {exc.description}"
        elif isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            message = method_not_allowed(exc.valid_methods)
        # werkzeug's generic texts say what went wrong, not what to do; a description given at a raise site stays.
        elif isinstance(exc, NotFound) and exc.description == NotFound.description:
            message = not_found()
        elif isinstance(exc, RequestEntityTooLarge) and exc.description == RequestEntityTooLarge.description:
            message = too_large()
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")


def method_not_allowed(valid_methods) -> str:
    usable = sorted(set(valid_methods) - IMPLIED_METHODS) or sorted(valid_methods)
    return f"{request.method} is not allowed on {request.path}: use {' or '.join(usable)}"


def not_found() -> str:
    settings = current_app.config["SETTINGS"]
    if settings.metrics_port and request.environ.get(PORT_KEY) == str(settings.metrics_port):
        # The metrics listener has no /docs: send the reader to the API's own port instead.
        return (
            f"nothing is served at {request.path} on this listener: it serves /metrics only "
            f"(CAPTCHA_METRICS_PORT); the API, /docs and /health are on CAPTCHA_PORT ({settings.port})"
        )
    return (
        f"nothing is served at {request.path}: see /docs for the interactive documentation of every endpoint, "
        "or /health to check that the service is up"
    )


def too_large() -> str:
    """Which of werkzeug's limits a 413 it raised is about. CAPTCHA_MAX_BODY_BYTES is Flask's MAX_CONTENT_LENGTH,
    but the guard (guard.py) refuses a longer body before werkzeug reads it; what is left are Flask's limits on a
    multipart form, MAX_FORM_MEMORY_SIZE and MAX_FORM_PARTS, which have no CAPTCHA_ setting: their numbers are
    Flask's defaults, so the message says what to send instead."""
    settings = current_app.config["SETTINGS"]
    max_content = request.max_content_length
    if max_content is not None and (request.content_length or 0) > max_content:
        return f"the request body is larger than {settings.max_body_bytes} bytes (CAPTCHA_MAX_BODY_BYTES)"
    max_memory, max_parts = request.max_form_memory_size, request.max_form_parts
    if max_parts is not None and multipart_parts() > max_parts:
        return (
            f"the multipart form has more than {max_parts} parts (Flask's MAX_FORM_PARTS): send one file 'image' "
            f"to /predict, or at most {settings.max_batch} files 'images' to /predict-batch (CAPTCHA_MAX_BATCH), "
            "and each option (model, charset, length) once"
        )
    if max_memory is not None:
        return too_big_field(max_memory)
    return RequestEntityTooLarge.description


def too_big_field(max_memory: int) -> str:
    return (
        f"a multipart field that is not a file holds more than {max_memory} bytes (Flask's MAX_FORM_MEMORY_SIZE): "
        'send the image as a file part, with a filename (curl -F "image=@captcha.png"), or as JSON '
        '{"image": "<base64>"}; plain fields are for the short options model, charset and length'
    )


def multipart_parts() -> int:
    """The parts of this request's multipart body. The guard holds every body in memory (a BytesIO); a boundary
    never occurs inside a part (RFC 2046), so each delimiter but the closing one (followed by "--") opens a part."""
    boundary = request.mimetype_params.get("boundary", "")
    getvalue = getattr(request.environ.get("wsgi.input"), "getvalue", None)
    if not boundary or getvalue is None:
        return 0
    delimiter = re.escape(b"--" + boundary.encode("latin-1", "replace"))
    return len(re.findall(delimiter + rb"(?!--)", getvalue()))
