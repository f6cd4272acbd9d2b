"""A small client for the CaptchaOCR HTTP service, on requests: `CaptchaClient`, `Prediction` and the errors.

Usage and examples: clients/python/README.md.
"""

from __future__ import annotations

import base64
import email.utils
import math
import mimetypes
import os
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__version__ = "1.0.0"
__all__ = [
    "AuthError",
    "CaptchaClient",
    "CaptchaError",
    "CharacterConfidence",
    "Details",
    "InvalidInput",
    "LowConfidence",
    "NetworkError",
    "NoReading",
    "Prediction",
    "RateLimited",
    "RequestTimeout",
    "RunnerUp",
    "ServiceUnavailable",
    "UnknownModel",
    "Unreadable",
    "parse_retry_after",
]

ImageInput = bytes | bytearray | memoryview | str | os.PathLike[str]
Option = str | int | float | bool
RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class CharacterConfidence:
    """One character of a reading and its confidence, in [0, 1]."""

    char: str
    confidence: float


@dataclass(frozen=True)
class RunnerUp:
    """The likeliest other reading (a character swapped, one fewer or one more) and its confidence."""

    text: str
    confidence: float


@dataclass(frozen=True)
class Details:
    """What `details=True` adds to a reading: each character's confidence, in order, and the runner-up (None when
    the model has none)."""

    characters: tuple[CharacterConfidence, ...]
    runner_up: RunnerUp | None

    @classmethod
    def from_json(cls, body: Any) -> Details | None:
        """The service's `details` object (`{"characters": [{"char", "confidence"}, ...], "runner_up": ...}`), or
        None when the answer has none."""
        if not isinstance(body, dict):
            return None
        characters = tuple(
            CharacterConfidence(str(item["char"]), float(item["confidence"])) for item in body.get("characters", [])
        )
        second = body.get("runner_up")
        runner_up = RunnerUp(str(second["prediction"]), float(second["confidence"])) if second else None
        return cls(characters, runner_up)


@dataclass(frozen=True)
class Prediction:
    """One captcha's reading: its text and the model's probability for the whole reading, in [0, 1]; `details` when
    the call asked for them (`details=True`), else None."""

    text: str
    confidence: float
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    details: Details | None = None


class CaptchaError(Exception):
    """Any failure of a call. `status` is the HTTP status (None when no answer came), `code` the service's
    `error.code` (e.g. "invalid_image"), `retry_after` the seconds the service asked to wait, if it said."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        return f"{self.message} ({where}, {self.code})"


class InvalidInput(CaptchaError):
    """The service refused the request or image (400, 413, 415, 422): sending it again will not help."""


class AuthError(CaptchaError):
    """The API key is missing or wrong (401/403)."""


class RateLimited(CaptchaError):
    """429 after every retry; `retry_after` says how long to wait before the next call."""


class UnknownModel(CaptchaError):
    """404 `unknown_model`: the service serves no model of the name given as `model` (see `models()`)."""


class ServiceUnavailable(CaptchaError):
    """503 after every retry: the service has no model loaded (or a proxy in front of it is down)."""


class NoReading(CaptchaError):
    """422: the service read the image but will not vouch for the reading. The reading comes with the error:
    `prediction` (the text read, "" when none), `confidence` and, when asked for, `details`. Refresh the captcha
    and read the new one, or fall back to another reader."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        *,
        prediction: str = "",
        confidence: float = 0.0,
        details: Details | None = None,
    ):
        super().__init__(message, status, code, retry_after)
        self.prediction = prediction
        self.confidence = confidence
        self.details = details


class LowConfidence(NoReading):
    """422 `low_confidence`: the reading is less sure than `min_confidence` (the call's, else the model's own
    default, `min_confidence` in `models()`). `min_confidence=0` returns every reading instead."""


class Unreadable(NoReading):
    """422 `unreadable`: no characters were read, a number of them outside the model's trained lengths (when no
    `length` is given), or the model cannot tell how many characters the image holds (noise, a blank image)."""


class NetworkError(CaptchaError):
    """No HTTP answer: connection refused or reset, DNS failure, and so on. `status` is None."""


class RequestTimeout(NetworkError):
    """The service did not connect or answer within the client's timeout."""


ERRORS_BY_STATUS: dict[int, type[CaptchaError]] = {
    400: InvalidInput,
    401: AuthError,
    403: AuthError,
    413: InvalidInput,
    415: InvalidInput,
    422: InvalidInput,
    429: RateLimited,
    503: ServiceUnavailable,
}
ERRORS_BY_CODE: dict[str, type[CaptchaError]] = {
    "unknown_model": UnknownModel,
    "low_confidence": LowConfidence,
    "unreadable": Unreadable,
}


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header (delay in seconds or an HTTP date) -> seconds to wait from now, or None if unusable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class CaptchaClient:
    """Calls a CaptchaOCR service. One requests.Session per client; use it as a context manager or call close().

    Every predict method takes the keyword-only options `model` (the name of a served model, see `models()`;
    default: the service's default model), `charset` (the characters the reading may use, from the model's
    alphabet), `length` (an exact length, 5 or "5", or a range "4-6"), `min_confidence` (0 to 1: a less sure
    reading raises `LowConfidence`; default: the model's own, 0 returns every reading) and `details` (True: each
    character's confidence and the runner-up reading); the service checks them. A reading the service will not
    vouch for raises a `NoReading` (`LowConfidence` or `Unreadable`) that carries it.

    `timeout` (seconds) bounds connecting and each wait for data on every call. 429 and 503 answers are retried up
    to `retries` times, waiting what Retry-After says (at least the back-off, since servers round it down); when the
    service asks for longer than `max_retry_after`, the error is raised at once with its `retry_after`.
    """

    backoff = 0.5  # seconds before the first retry when Retry-After is absent or 0; doubles each retry
    max_retry_after = 30.0  # never sleep longer than this inside a call

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 2,
        session: requests.Session | None = None,
    ):
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self._owns_session = session is None
        self.session = session if session is not None else requests.Session()
        self._headers = {"Accept": "application/json", "User-Agent": f"captcha-ocr-client/{__version__}"}
        if api_key:
            self._headers["X-API-Key"] = api_key

    def predict_file(
        self,
        path: str | os.PathLike[str],
        *,
        model: str | None = None,
        charset: str | None = None,
        length: int | str | None = None,
        min_confidence: float | None = None,
        details: bool = False,
    ) -> Prediction:
        """Read the captcha in an image file, sent as a multipart upload."""
        path = Path(path)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        options = _options(model, charset, length, min_confidence, details)
        return self._predict_upload(path.name, path.read_bytes(), mime, options)

    def predict_bytes(
        self,
        data: bytes | bytearray | memoryview,
        *,
        model: str | None = None,
        charset: str | None = None,
        length: int | str | None = None,
        min_confidence: float | None = None,
        details: bool = False,
    ) -> Prediction:
        """Read the captcha in encoded image bytes (PNG, JPEG, ...), sent as a multipart upload."""
        options = _options(model, charset, length, min_confidence, details)
        return self._predict_upload("captcha", bytes(data), "application/octet-stream", options)

    def predict_base64(
        self,
        text: str,
        *,
        model: str | None = None,
        charset: str | None = None,
        length: int | str | None = None,
        min_confidence: float | None = None,
        details: bool = False,
    ) -> Prediction:
        """Read a captcha given as a base64 string or a data URL (`data:image/png;base64,...`)."""
        body = {"image": text, **_options(model, charset, length, min_confidence, details)}
        return self._prediction(self._call("POST", "/predict", json=body))

    def predict_batch(
        self,
        images: list[ImageInput],
        *,
        model: str | None = None,
        charset: str | None = None,
        length: int | str | None = None,
        min_confidence: float | None = None,
        details: bool = False,
    ) -> list[dict[str, Any]]:
        """Read several captchas in one call: bytes, paths (Path objects) and base64 strings or data URLs.

        Returns the service's per-image results in order, e.g. `{"index": 0, "success": true, "prediction": "...",
        "confidence": 0.98}` (with `"details"` when asked for) or `{"index": 1, "success": false, "error": {"code":
        ..., "message": ...}}`: one bad image fails only its own entry, nothing is raised for it. An entry refused
        as `/predict` would refuse it (`low_confidence`, `unreadable`) carries its reading in the error:
        `"prediction"`, `"confidence"` (and `"details"`). A `str` is always taken as base64; pass file names as
        `Path`. The options apply to every image.
        """
        options = _options(model, charset, length, min_confidence, details)
        payload = {"images": [_as_base64(image) for image in images], **options}
        return self._call("POST", "/predict-batch", json=payload)["results"]

    def health(self) -> dict[str, Any]:
        """`{"status": "ok", "model_loaded": true, "version": ...}`; a 503 "unavailable" answer is returned, not
        raised or retried, so `health()["model_loaded"]` tells whether the service can read captchas now."""
        return self._call("GET", "/health", ok_statuses=(200, 503), retry=False)

    def info(self) -> dict[str, Any]:
        """The service's description: version, model (alphabet, input size, measured accuracy), endpoints, limits."""
        return self._call("GET", "/info")

    def models(self) -> list[dict[str, Any]]:
        """The served models from `/info`: `name`, `alphabet`, `min_sequence_length`, `max_sequence_length`,
        `min_confidence` (the model's default), `accuracy`, `runtime`, `version`, `image_size` and `default` (true
        for the one used when `model` is not given)."""
        return self.info()["models"]

    def close(self) -> None:
        """Close the session this client made (a session passed in stays its owner's to close)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> CaptchaClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptchaClient({self.base_url!r}, api_key={'***' if self.api_key else None}, timeout={self.timeout})"

    def _predict_upload(self, name: str, data: bytes, mime: str, options: dict[str, Option]) -> Prediction:
        # Form fields are text: True goes as "true", which the service reads as JSON's true.
        fields = {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in options.items()}
        return self._prediction(self._call("POST", "/predict", files={"image": (name, data, mime)}, data=fields))

    @staticmethod
    def _prediction(body: dict[str, Any]) -> Prediction:
        details = Details.from_json(body.get("details"))
        return Prediction(text=body["prediction"], confidence=float(body["confidence"]), raw=body, details=details)

    def _call(
        self, method: str, path: str, *, ok_statuses: tuple[int, ...] = (200,), retry: bool = True, **kwargs: Any
    ) -> dict[str, Any]:
        response = self._send(method, path, retry=retry, **kwargs)
        with response:
            if response.status_code not in ok_statuses:
                raise _error_from(response)
            try:
                body = response.json()
            except ValueError:
                if response.status_code != 200:  # e.g. a proxy's HTML 503 page
                    raise _error_from(response) from None
                raise CaptchaError("the answer is not JSON", response.status_code, "invalid_response") from None
        if not isinstance(body, dict):
            raise CaptchaError("the answer is not a JSON object", response.status_code, "invalid_response")
        return body

    def _send(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> requests.Response:
        url = self.base_url + path
        attempt = 0
        while True:
            try:
                response = self.session.request(method, url, headers=self._headers, timeout=self.timeout, **kwargs)
            except requests.Timeout as exc:
                raise RequestTimeout(f"{method} {url} got no answer within {self.timeout} s", None, "timeout") from exc
            except requests.RequestException as exc:
                raise NetworkError(f"{method} {url} failed: {exc}", None, "network_error") from exc
            if not retry or response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self.max_retry_after:
                return response  # waiting that long inside a call would surprise the caller: let them decide
            response.close()
            time.sleep(max(retry_after or 0.0, self.backoff * 2**attempt))
            attempt += 1


def _options(
    model: str | None, charset: str | None, length: int | str | None, min_confidence: float | None, details: bool
) -> dict[str, Option]:
    """The options that were given, as the service's field names (details only when asked for)."""
    given = {"model": model, "charset": charset, "length": length, "min_confidence": min_confidence}
    options: dict[str, Option] = {key: value for key, value in given.items() if value is not None}
    if details:
        options["details"] = True
    return options


def _as_base64(image: ImageInput) -> str:
    if isinstance(image, str):
        return image
    if isinstance(image, os.PathLike):
        image = Path(image).read_bytes()
    if isinstance(image, bytes | bytearray | memoryview):
        return base64.b64encode(image).decode("ascii")
    raise TypeError(f"an image must be bytes, a Path or a base64 string, not {type(image).__name__}")


def _error_from(response: requests.Response) -> CaptchaError:
    """The service's JSON error envelope (or whatever a proxy sent instead) -> the matching exception."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "http_error")
        message = str(error.get("message") or response.reason)
    else:
        code = "http_error"
        message = f"HTTP {status} {response.reason}: {response.text[:200]}".rstrip(": ")
    # Retry-After only means "come back then" on the statuses worth retrying
    retry_after = parse_retry_after(response.headers.get("Retry-After")) if status in RETRY_STATUSES else None
    kind = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(status, CaptchaError)
    if issubclass(kind, NoReading) and isinstance(error, dict):
        return kind(message, status, code, retry_after, **_refused_reading(error))
    return kind(message, status, code, retry_after)


def _refused_reading(error: dict[str, Any]) -> dict[str, Any]:
    """The reading a low_confidence or unreadable error carries, as NoReading's keyword arguments."""
    confidence = error.get("confidence")
    return {
        "prediction": str(error.get("prediction") or ""),
        "confidence": float(confidence) if isinstance(confidence, int | float) else 0.0,
        "details": Details.from_json(error.get("details")),
    }
