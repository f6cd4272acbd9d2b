"""The HTTP API's answers (DESIGN.md "HTTP API") as pydantic models: spectree checks every answer against the model
of its status (a field added without its model fails the tests, not a client) and documents them in
/openapi.json. The error envelopes are built from the error classes (core/errors.py, errors.py): a code is
defined once, there, and each status documents exactly the codes its view can answer."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..core import errors as core
from . import errors


class _Answer(BaseModel):
    # Exactly the documented fields: a field added to an answer without its model fails the tests, not a client.
    model_config = ConfigDict(extra="forbid")


class Health(_Answer):
    status: Literal["ok", "unavailable"]
    model_loaded: bool
    version: str


class ModelInfo(_Answer):
    name: str
    version: str = Field(description="The model's version: the start of the SHA-256 of its network file")
    runtime: str
    image_size: list[int] = Field(min_length=2, max_length=2, description="[height, width] the model takes")
    max_sequence_length: int
    min_sequence_length: int
    alphabet: str
    min_confidence: float = Field(ge=0, le=1, description="The threshold a request without min_confidence gets")
    accuracy: dict[str, Any] = Field(description="Figures measured when the model was made")
    published: dict[str, Any] = Field(description="Version, figures and time it was published with (else empty)")


class ServedModel(ModelInfo):
    default: bool


class NotServed(_Answer):
    name: str
    reason: str = Field(description="Why it is not served: no file for the runtime, or a load failure")


class Limits(_Answer):
    max_image_bytes: int
    max_batch: int
    rate_limit: str | None


class Info(_Answer):
    name: str
    version: str
    description: str
    model: ModelInfo = Field(description="The default model")
    models: list[ServedModel] = Field(description="Every model served; pick one with the 'model' option")
    not_served: list[NotServed] = Field(description="Models of the folder left out, each with its reason")
    endpoints: dict[str, str]
    limits: Limits


Confidence = Annotated[
    float, Field(ge=0, le=1, description="Probability of the whole reading: the sum over every way of reading it")
]


def _no_default(schema: dict) -> None:
    schema.pop("default", None)  # present or left out, never null


class CharacterConfidence(_Answer):
    char: str
    confidence: float = Field(ge=0, le=1, description="The character's highest probability over its time steps")


class RunnerUp(_Answer):
    prediction: str
    confidence: Confidence


class Details(_Answer):
    characters: list[CharacterConfidence] = Field(description="Each character read, in order")
    runner_up: RunnerUp | None = Field(
        description="The likeliest other reading (a character swapped, one fewer or one more); null when none"
    )


# Left out unless asked for (never null): the default None is not validated, so the schema says only the type.
DETAILS_FIELD = Field(default=None, description="With details=1 only", json_schema_extra=_no_default)


class Reading(_Answer):
    success: Literal[True]
    prediction: str
    confidence: Confidence
    details: Details = DETAILS_FIELD


class ErrorDetail(_Answer):
    code: str
    message: str
    prediction: str = Field(
        default=None, description="low_confidence and unreadable: what was read", json_schema_extra=_no_default
    )
    confidence: float = Field(
        default=None,
        ge=0,
        le=1,
        description="low_confidence and unreadable: its confidence",
        json_schema_extra=_no_default,
    )
    details: Details = DETAILS_FIELD


class EntryRead(_Answer):
    index: int = Field(ge=0)
    success: Literal[True]
    prediction: str
    confidence: Confidence
    details: Details = DETAILS_FIELD


class EntryFailed(_Answer):
    index: int = Field(ge=0)
    success: Literal[False]
    error: ErrorDetail


class BatchReading(_Answer):
    success: Literal[True]
    total: int = Field(ge=1)
    results: list[EntryRead | EntryFailed] = Field(description="One per image, in the order sent")


class ReportStored(_Answer):
    success: Literal[True]
    stored: bool = Field(description="False when the same image was reported before: it is stored once")
    model: str = Field(description="The model that made the wrong reading: its feedback folder")
    file: str = Field(description="The image's file name in that folder (the start of its SHA-256)")


def envelope(name: str, description: str, *classes: type[core.CaptchaError]) -> type[BaseModel]:
    """The error envelope {"success": false, "error": {"code", "message"}} with the codes of `classes`, which all
    answer with one status; an envelope with a refused reading among them (core.NoReading) documents its
    prediction, confidence and details too."""
    statuses = {cls.status for cls in classes}
    if len(statuses) != 1:
        raise ValueError(f"{name}: one status per envelope, not {sorted(statuses)}")
    codes = tuple(cls.code for cls in classes)
    base = ErrorDetail if any(issubclass(cls, core.NoReading) for cls in classes) else _Answer
    detail = create_model(f"{name}Detail", __base__=base, code=(Literal[codes], ...), message=(str, ...))
    model = create_model(
        name, __base__=_Answer, __doc__=description, success=(Literal[False], ...), error=(detail, ...)
    )
    model.status = statuses.pop()  # read by responses()
    return model


BadRequest = envelope(
    "BadRequest",
    "Malformed request: no image, bad JSON, bad base64, not an image, a bad option.",
    errors.MissingImage,
    errors.InvalidJson,
    errors.InvalidBase64,
    core.InvalidImage,
    core.InvalidParameter,
    core.CaptchaError,
)
Unauthorized = envelope(
    "Unauthorized", "Missing or wrong API key (header X-API-Key).", errors.MissingApiKey, errors.InvalidApiKey
)
NotFound = envelope("NotFound", "No model of that name is served.", errors.UnknownModel)
TooLarge = envelope(
    "TooLarge",
    "The body, an image or the batch is over its limit, or an image costs too much to decode.",
    errors.PayloadTooLarge,
    core.ImageTooLarge,
    errors.BatchTooLarge,
)
UnsupportedMedia = envelope(
    "UnsupportedMedia",
    "Not multipart/form-data or application/json, or an image format not served.",
    errors.UnsupportedMediaType,
    core.UnsupportedImageFormat,
)
Unreadable = envelope(
    "Unreadable",
    "The image decodes but cannot be a captcha (1x1, absurd proportions); or the model read nothing, or a length it"
    " was not trained on (unreadable); or the reading is less sure than min_confidence (low_confidence). The last"
    " two carry the reading.",
    core.UnreadableImage,
    core.Unreadable,
    core.LowConfidence,
)
RateLimited = envelope("RateLimited", errors.RateLimited.__doc__, errors.RateLimited)
RequestTimeout = envelope("RequestTimeout", errors.RequestTimeout.__doc__, errors.RequestTimeout)
Unavailable = envelope(
    "Unavailable",
    "No model is loaded, or the worker holds as many request bodies as it may (retry after Retry-After).",
    core.ModelNotReady,
    errors.ServerBusy,
)


ReportBadRequest = envelope(
    "ReportBadRequest",
    "Bad JSON, a missing field, or a text the model could not read (characters, length) or that is the reading.",
    errors.InvalidJson,
    core.InvalidParameter,
    core.CaptchaError,
)
ReportNotFound = envelope("ReportNotFound", errors.UnknownRequest.__doc__, errors.UnknownRequest)
ReportUnsupportedMedia = envelope("ReportUnsupportedMedia", "The body is not JSON.", errors.UnsupportedMediaType)
ReportUnavailable = envelope("ReportUnavailable", errors.FeedbackUnavailable.__doc__, errors.FeedbackUnavailable)
FeedbackFull = envelope("FeedbackFull", errors.FeedbackFull.__doc__, errors.FeedbackFull)
ReportTooLarge = envelope("ReportTooLarge", errors.PayloadTooLarge.__doc__, errors.PayloadTooLarge)


def responses(*models: type[BaseModel], **more) -> dict:
    """spectree's Response arguments for these envelopes: HTTP_<status> -> model."""
    return {f"HTTP_{model.status}": model for model in models} | more
