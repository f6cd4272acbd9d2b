"""The errors of the solver-compatible APIs: each once, with the name both protocols send (2captcha's classic API
sends the name as text or in JSON's "request"; the task API sends it as "errorCode" with its "errorId"), and the
native error codes (errors.py, core/errors.py) each one answers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CompatError(Exception):
    """One of the errors below, with a message for this occurrence (JSON "error_text" / "errorDescription")."""

    name: str
    error_id: int
    description: str
    message: str = ""

    def __call__(self, message: str) -> CompatError:
        return CompatError(self.name, self.error_id, self.description, message)

    @property
    def text(self) -> str:
        return self.message or self.description

    def __str__(self) -> str:
        return f"{self.name}: {self.text}"


def _error(name: str, error_id: int, description: str) -> CompatError:
    return CompatError(name, error_id, description)


# errorId values are the task API's own where it has the error; the classic API's only errors take one of its
# neighbours that no service uses for anything else.
WRONG_USER_KEY = _error("ERROR_WRONG_USER_KEY", 1, "no API key was sent (key / clientKey)")
KEY_DOES_NOT_EXIST = _error("ERROR_KEY_DOES_NOT_EXIST", 1, "the API key is not one of this service's keys")
NO_SLOT_AVAILABLE = _error("ERROR_NO_SLOT_AVAILABLE", 2, "the service cannot take a task now; retry shortly")
ZERO_CAPTCHA_FILESIZE = _error("ERROR_ZERO_CAPTCHA_FILESIZE", 3, "no image was sent, or an empty one")
TOO_BIG_CAPTCHA_FILESIZE = _error("ERROR_TOO_BIG_CAPTCHA_FILESIZE", 4, "the image is larger than the service takes")
CAPTCHA_UNSOLVABLE = _error("ERROR_CAPTCHA_UNSOLVABLE", 12, "the image could not be read with enough confidence")
NO_SUCH_METHOD = _error("ERROR_NO_SUCH_METHOD", 14, "no such method or action")
IMAGE_TYPE_NOT_SUPPORTED = _error(
    "ERROR_IMAGE_TYPE_NOT_SUPPORTED", 15, "the image is not a PNG, JPEG, BMP, GIF or WebP the service can read"
)
WRONG_CAPTCHA_ID = _error("ERROR_WRONG_CAPTCHA_ID", 16, "no task of this API key has this id (unknown or expired)")
NO_SUCH_CAPCHA_ID = _error("ERROR_NO_SUCH_CAPCHA_ID", 16, "no task of this API key has this id (unknown or expired)")
WRONG_ID_FORMAT = _error("ERROR_WRONG_ID_FORMAT", 16, "a task id is a number")
TASK_ABSENT = _error("ERROR_TASK_ABSENT", 22, "the request has no 'task' object")
TASK_NOT_SUPPORTED = _error("ERROR_TASK_NOT_SUPPORTED", 23, "this service reads image captchas only (ImageToTextTask)")
TOO_MUCH_REQUESTS = _error("ERROR_TOO_MUCH_REQUESTS", 2, "over the rate limit; retry after a pause")
DUPLICATE_REPORT = _error("ERROR_DUPLICATE_REPORT", 16, "this task was reported already")
BAD_PARAMETERS = _error("ERROR_BAD_PARAMETERS", 24, "a parameter has a value the service or its model cannot meet")

# Every error above by its name (a failed task keeps its error's name).
BY_NAME: dict[str, CompatError] = {
    value.name: value for value in list(globals().values()) if isinstance(value, CompatError)
}

# The native error each compatible one stands for, by native code; a native code not listed is a BAD_PARAMETERS.
NATIVE: dict[str, CompatError] = {
    "missing_api_key": WRONG_USER_KEY,
    "invalid_api_key": KEY_DOES_NOT_EXIST,
    "missing_image": ZERO_CAPTCHA_FILESIZE,
    "image_too_large": TOO_BIG_CAPTCHA_FILESIZE,
    "payload_too_large": TOO_BIG_CAPTCHA_FILESIZE,
    "invalid_base64": IMAGE_TYPE_NOT_SUPPORTED,
    "invalid_image": IMAGE_TYPE_NOT_SUPPORTED,
    "unsupported_format": IMAGE_TYPE_NOT_SUPPORTED,
    "unreadable_image": IMAGE_TYPE_NOT_SUPPORTED,
    "rate_limited": TOO_MUCH_REQUESTS,
    "server_busy": NO_SLOT_AVAILABLE,
    "model_unavailable": NO_SLOT_AVAILABLE,
    "request_timeout": NO_SLOT_AVAILABLE,
    "internal_error": NO_SLOT_AVAILABLE,
    "not_found": NO_SUCH_METHOD,
    "method_not_allowed": NO_SUCH_METHOD,
}


# The task API's names for the classic API's errors it has no name of its own for (its clients know only theirs).
TASK_API: dict[str, CompatError] = {
    WRONG_USER_KEY.name: KEY_DOES_NOT_EXIST,
    WRONG_CAPTCHA_ID.name: NO_SUCH_CAPCHA_ID,
    WRONG_ID_FORMAT.name: NO_SUCH_CAPCHA_ID,
}


def for_task_api(error: CompatError) -> CompatError:
    return TASK_API[error.name](error.text) if error.name in TASK_API else error


def from_native(code: str, message: str) -> CompatError:
    return NATIVE.get(code, BAD_PARAMETERS)(message)
