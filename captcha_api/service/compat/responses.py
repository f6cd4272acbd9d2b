"""The answers of the solver-compatible APIs (documented in /openapi.json), what any failure is answered with, and
the balance they report."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, Field
from werkzeug.exceptions import HTTPException

from ...core.errors import CaptchaError
from ..errors import HTTP_ERRORS, InternalError
from ..extensions import IMAGES_SCOPE, limiter, rate_limit_key
from ..observability import context
from . import errors as e
from .solve import image_limits

log = logging.getLogger(__name__)

# The balance of a service without CAPTCHA_RATE_LIMIT: readings cost nothing here, and clients that check their
# balance before sending must find it large.
UNLIMITED = 1_000_000


class TwoCaptchaAnswer(BaseModel):
    """json=1: {status, request}. Without json=1 the same answer is plain text: `OK|<request>` when status is 1
    (a bare number for getbalance, OK_REPORT_RECORDED for a report), `ERROR_<NAME>` or CAPCHA_NOT_READY when 0."""

    status: int = Field(description="1: done; 0: an error, or not ready.")
    request: str = Field(description="The task id, the reading, the balance, or the error's name.")
    error_text: str | None = Field(None, description="With status 0: what went wrong.")


class TaskCreated(BaseModel):
    errorId: int = Field(description="0, or the error's number (errorCode and errorDescription then say which).")
    taskId: int | None = Field(None, description="The task's id, for /getTaskResult.")
    errorCode: str | None = None
    errorDescription: str | None = None


class Solution(BaseModel):
    text: str = Field(description="The reading.")


class TaskResult(BaseModel):
    errorId: int
    status: str | None = Field(None, description="'ready' (the image is read when the task is created).")
    solution: Solution | None = None
    cost: str | None = Field(None, description="Always '0'.")
    ip: str | None = Field(None, description="The address that created the task.")
    createTime: int | None = Field(None, description="Unix time of its creation.")
    endTime: int | None = Field(None, description="Unix time of its reading.")
    solveCount: int | None = Field(None, description="Always 1: one reading.")
    errorCode: str | None = None
    errorDescription: str | None = None


class Balance(BaseModel):
    errorId: int
    balance: float | None = Field(None, description="Images this key may still send under CAPTCHA_RATE_LIMIT.")
    errorCode: str | None = None
    errorDescription: str | None = None


class Reported(BaseModel):
    errorId: int
    status: str | None = Field(None, description="'success'.")
    errorCode: str | None = None
    errorDescription: str | None = None


def translate(error: Exception) -> tuple[e.CompatError, dict | None]:
    """Any failure of a compatible request as one of its errors, with the headers it carries (Retry-After)."""
    if isinstance(error, e.CompatError):
        return error, None
    if isinstance(error, CaptchaError):
        return e.from_native(error.code, error.message), getattr(error, "headers", None)
    if isinstance(error, HTTPException):
        status = error.code or 500
        code = HTTP_ERRORS[status].code if status in HTTP_ERRORS else "bad_request"
        message = error.description or error.name
        if status == 429:
            message = f"rate limit exceeded: {error.description}"
        headers = {k: v for k, v in error.get_headers() if k.lower() == "retry-after"}
        return e.from_native(code, message), headers
    log.exception("unhandled error")
    return e.from_native(InternalError.code, "the server failed to handle this request"), None


def note_error(error: e.CompatError, response):
    context.current().error_code = error.name  # for the metrics' error counter
    return response


def balance(key: str) -> str:
    """The images `key` may still send now under CAPTCHA_RATE_LIMIT (UNLIMITED without one), as 2captcha writes
    a balance."""
    limits = image_limits()
    if not limits:
        return str(UNLIMITED)
    try:
        left = [limiter.limiter.get_window_stats(item, rate_limit_key(), IMAGES_SCOPE).remaining for item in limits]
    except Exception:  # noqa: BLE001 - a storage that does not answer: the limits are not counted either
        log.warning("rate limit storage unreachable: the balance is the whole allowance", exc_info=True)
        left = [item.amount for item in limits]
    return str(min(left))


def task_error(error: e.CompatError) -> dict[str, Any]:
    return {"errorId": error.error_id, "errorCode": error.name, "errorDescription": error.text}
