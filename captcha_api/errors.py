"""One JSON envelope for every error: {"success": false, "error": {"code", "message"}}."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from .ocr.errors import CaptchaError

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
    g.error_code = code  # for the metrics' error counter
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
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        return error_response(status, HTTP_CODES.get(status, "http_error"), message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
