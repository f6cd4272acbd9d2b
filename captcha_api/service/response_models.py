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


Confidence = Annotated[float, Field(ge=0, le=1, description="Probability of the whole reading")]


class Reading(_Answer):
    success: Literal[True]
    prediction: str
    confidence: Confidence


class ErrorDetail(_Answer):
    code: str
    message: str


class EntryRead(_Answer):
    index: int = Field(ge=0)
    success: Literal[True]
    prediction: str
    confidence: Confidence


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
    answer with one status."""
    statuses = {cls.status for cls in classes}
    if len(statuses) != 1:
        raise ValueError(f"{name}: one status per envelope, not {sorted(statuses)}")
    codes = tuple(cls.code for cls in classes)
    detail = create_model(f"{name}Detail", __base__=_Answer, code=(Literal[codes], ...), message=(str, ...))
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
    "Unreadable", "The image decodes but cannot be a captcha (1x1, absurd proportions).", core.UnreadableImage
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
