"""One JSON envelope for every error: {"success": false, "error": {"code", "message"}}."""

from __future__ import annotations

import logging
import re

from flask import Flask, current_app, jsonify, request
from werkzeug import exceptions as http

from ..core.errors import CaptchaError, ModelNotReady
from .observability import context
from .observability.metrics import PORT_KEY

log = logging.getLogger(__name__)

# Methods werkzeug lists for every route that nobody sends on purpose: a CORS preflight's and a GET's HEAD.
IMPLIED_METHODS = frozenset({"HEAD", "OPTIONS"})


class ServiceError(CaptchaError):
    """An error of the service's own request handling; `headers` go with its answer (Retry-After)."""

    def __init__(self, message: str, headers: dict | None = None):
        super().__init__(message)
        self.headers = headers


class MissingImage(ServiceError):
    """The request holds no image: no field, an empty one, or an empty file."""

    code = "missing_image"


class InvalidJson(ServiceError):
    """The body is not JSON, not an object, nests too deeply, or holds too many values."""

    code = "invalid_json"


class InvalidBase64(ServiceError):
    """An image string that is neither base64 nor a base64 data URL."""

    code = "invalid_base64"


class MissingApiKey(ServiceError):
    """No API key in the X-API-Key header."""

    status = 401
    code = "missing_api_key"


class InvalidApiKey(ServiceError):
    """The API key is not one of CAPTCHA_API_KEYS."""

    status = 401
    code = "invalid_api_key"


class NotFound(ServiceError):
    """Nothing is served at this path."""

    status = 404
    code = "not_found"


class UnknownModel(ServiceError):
    """No model of that name is served."""

    status = 404
    code = "unknown_model"


class UnknownRequest(ServiceError):
    """A report names a request id (and index) with no recent reading: unknown, or kept no more."""

    status = 404
    code = "unknown_request"


class MethodNotAllowed(ServiceError):
    """The path is served, with another method."""

    status = 405
    code = "method_not_allowed"


class RequestTimeout(ServiceError):
    """The request body did not arrive within CAPTCHA_BODY_TIMEOUT seconds."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(ServiceError):
    """The body is over CAPTCHA_MAX_BODY_BYTES, or a multipart form over Flask's limits."""

    status = 413
    code = "payload_too_large"


class BatchTooLarge(ServiceError):
    """More images in a batch than CAPTCHA_MAX_BATCH."""

    status = 413
    code = "batch_too_large"


class UnsupportedMediaType(ServiceError):
    """A body that is neither multipart/form-data nor application/json."""

    status = 415
    code = "unsupported_media_type"


class RateLimited(ServiceError):
    """Over the rate limit, or too many wrong API keys from this address; Retry-After says when to come back."""

    status = 429
    code = "rate_limited"


class InternalError(ServiceError):
    """A fault of the service (logged with its traceback); never the client's doing."""

    status = 500
    code = "internal_error"


class ServerBusy(ServiceError):
    """The worker holds as many request bodies as it may (CAPTCHA_MAX_BUFFERED_BYTES); retry after Retry-After."""

    status = 503
    code = "server_busy"


class FeedbackUnavailable(ServiceError):
    """Reports are not stored: the feedback folder (CAPTCHA_FEEDBACK_DIR) is off or not writable."""

    status = 503
    code = "feedback_unavailable"


class FeedbackFull(ServiceError):
    """The feedback folder holds CAPTCHA_FEEDBACK_MAX_MB already."""

    status = 507
    code = "feedback_full"


def codes() -> dict[str, type[CaptchaError]]:
    """Every error code the service answers with -> its class: the classes of core/errors.py and of this module
    (a class defines a code by setting `code` itself). A code defined twice is a bug: ValueError."""
    found: dict[str, type[CaptchaError]] = {}
    pending = [CaptchaError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "code" in vars(cls):
            if cls.code in found and found[cls.code] is not cls:
                raise ValueError(f"the error code {cls.code!r} is defined twice: {found[cls.code]} and {cls}")
            found[cls.code] = cls
    return dict(sorted(found.items()))


# What werkzeug's own HTTP errors (a 404 for a path, a 405, Flask-Limiter's 429, ...) are answered with, by status;
# another status gets the code "http_error".
HTTP_ERRORS: dict[int, type[CaptchaError]] = {
    cls.status: cls
    for cls in (
        CaptchaError,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        PayloadTooLarge,
        UnsupportedMediaType,
        RateLimited,
        InternalError,
        ModelNotReady,
    )
}
HTTP_ERROR = "http_error"


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    """The envelope; `fields` go into "error" after the code and message (a refused reading's prediction)."""
    return {"success": False, "error": {"code": code, "message": message, **(fields or {})}}


def error_response(status: int, code: str, message: str, headers=None, fields: dict | None = None):
    context.current().error_code = code  # for the metrics' error counter
    response = jsonify(error_body(code, message, fields))
    response.status_code = status
    if headers:
        response.headers.update(headers)
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(CaptchaError)
    def captcha_error(exc: CaptchaError):
        return error_response(
            exc.status, exc.code, exc.message, getattr(exc, "headers", None), getattr(exc, "fields", None)
        )

    @app.errorhandler(http.HTTPException)
    def http_error(exc: http.HTTPException):
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 429:
            message = f"rate limit exceeded: {exc.description}"
        elif isinstance(exc, http.MethodNotAllowed) and exc.valid_methods:
            message = method_not_allowed(exc.valid_methods)
        # werkzeug's generic texts say what went wrong, not what to do; a description given at a raise site stays.
        elif isinstance(exc, http.NotFound) and exc.description == http.NotFound.description:
            message = not_found()
        elif isinstance(exc, http.RequestEntityTooLarge) and exc.description == http.RequestEntityTooLarge.description:
            message = too_large()
        headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
        code = HTTP_ERRORS[status].code if status in HTTP_ERRORS else HTTP_ERROR
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(InternalError.status, InternalError.code, "the server failed to handle this request")


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
    return http.RequestEntityTooLarge.description


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
