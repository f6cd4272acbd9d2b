"""The HTTP API's shapes (DESIGN.md "HTTP API") as pydantic models. spectree validates each request against them
before the view runs and builds /openapi.json from the same models, so the documentation cannot drift from what
is checked.

What a JSON schema cannot say stays in inputs.py: which of the image aliases wins, base64 and data URLs, size
limits, and a batch entry that fails alone."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, create_model, field_validator, model_validator
from spectree.model_adapter.pydantic_adapter import BaseFile

MAX_OPTION_CHARS = 200
IMAGE_FIELDS = ("image", "image_base64", "text")  # the last two are names older clients send
OPTION_NAMES = ("model", "charset", "length")


def _no_default(schema: dict) -> None:
    # These fields may be left out but not sent as null; a "default": null in the schema would say otherwise.
    schema.pop("default", None)


def _optional(description: str, **extra) -> Any:
    """A field a request may leave out (None in the model then), which must have its type when present."""
    return Field(default=None, description=description, json_schema_extra=_no_default, **extra)


OptionText = Annotated[str, Field(min_length=1, max_length=MAX_OPTION_CHARS)]
ImageText = Annotated[str, Field(min_length=1)]
# A 40x12 PNG with "25" on it (Pillow's default font), 191 bytes: the documents' example, so that "Try it out" in
# /docs and schemathesis' example phase send an image the service reads.
IMAGE_EXAMPLE = (
    "iVBORw0KGgoAAAANSUhEUgAAACgAAAAMCAAAAAA1qKCRAAAAhklEQVR42mP8z0AcYGIgQeE8W4NdDLuVHBxq8Kn8//+V3d/rGv8XTf+P"
    "FzAxMLzNYZJ9y/BckqDVGqEMa3wZnm+18buL3+r//+9ov/pfOOX/Wkc8VjP8////s/GJ///v//n/RwS/wn9By/7//x++4f9RAibO47a3"
    "9/5/y9re/Q4ehYxUjxkAxU3D6x9GZsYAAAAASUVORK5CYII="
)
MODEL_DOC = "A model name from GET /info 'models'; the default model when left out."
CHARSET_DOC = "The characters the reading may contain: a subset of the model's alphabet, each once."
LENGTH_DOC = "The reading's length: a number (5) or a range of numbers ('4-6' or '4..6', both ends included)."
IMAGE_DOC = "The image as base64, or as a base64 data URL (data:image/png;base64,...)."


# ---------------------------------------------------------------------------------------------------- requests


class Options(BaseModel):
    """Decoding options in the query string; they win over the same options in the body."""

    model: OptionText = _optional(MODEL_DOC)
    charset: OptionText = _optional(CHARSET_DOC)
    length: OptionText = _optional(LENGTH_DOC)


class _BodyOptions(BaseModel):
    model: OptionText = _optional(MODEL_DOC)
    charset: OptionText = _optional(CHARSET_DOC)
    length: StrictInt | OptionText = _optional(LENGTH_DOC, examples=[5, "4-6"])


class _FormOptions(BaseModel):
    model: OptionText = _optional(MODEL_DOC)
    charset: OptionText = _optional(CHARSET_DOC)
    length: OptionText = _optional(LENGTH_DOC)


class PredictJson(_BodyOptions):
    """One image as a base64 string or data URL, in 'image' or one of its aliases."""

    # One of the three is required (the model validator below); the schema says so with anyOf.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [name]} for name in IMAGE_FIELDS],
            "examples": [{"image": IMAGE_EXAMPLE}],
        },
    )

    image: ImageText = _optional(IMAGE_DOC)
    image_base64: ImageText = _optional("Alias of 'image', for older clients.")
    text: ImageText = _optional("Alias of 'image', for older clients.")

    @model_validator(mode="after")
    def _has_an_image(self) -> PredictJson:
        if not self.model_fields_set.intersection(IMAGE_FIELDS):
            raise ValueError("the JSON body has no 'image' field")
        return self


class PredictForm(_FormOptions):
    """One image file in the multipart field 'image'."""

    image: BaseFile = Field(description="The image file: PNG, JPEG, BMP, GIF or WebP.")


class BatchJson(_BodyOptions):
    """Several images, each a base64 string or data URL."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": [IMAGE_EXAMPLE, "data:image/png;base64," + IMAGE_EXAMPLE]}]},
    )

    images: list[Any] = Field(
        min_length=1,
        description="Base64 strings or data URLs. An entry that is not one (not a string, not base64, not an "
        "image) fails alone: its result carries the error, the other entries are read.",
    )


class BatchForm(_FormOptions):
    """Several image files, each in a multipart field 'images'."""

    images: list[BaseFile] = Field(min_length=1, description="The image files, one field 'images' each.")

    @field_validator("images", mode="before")
    @classmethod
    def _one_file_is_a_list(cls, value: Any) -> Any:
        # spectree hands over a field sent once as its value, not as a list of one.
        return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------------------------------- responses


class _Answer(BaseModel):
    # Exactly the documented fields: a field added to an answer without its model fails the tests, not a client.
    model_config = ConfigDict(extra="forbid")


class Health(_Answer):
    status: Literal["ok", "unavailable"]
    model_loaded: bool
    version: str


class ModelInfo(_Answer):
    name: str
    runtime: str
    image_size: list[int] = Field(min_length=2, max_length=2, description="[height, width] the model takes")
    max_sequence_length: int
    min_sequence_length: int
    alphabet: str
    accuracy: dict[str, Any] = Field(description="Figures measured when the model was made")


class ServedModel(ModelInfo):
    default: bool


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


def _error(name: str, description: str, *codes: str) -> type[BaseModel]:
    """The error envelope {"success": false, "error": {"code", "message"}} with the codes one status carries."""
    detail = create_model(
        f"{name}Detail",
        __base__=_Answer,
        code=(Literal[codes], ...),
        message=(str, ...),
    )
    return create_model(name, __base__=_Answer, __doc__=description, success=(Literal[False], ...), error=(detail, ...))


BadRequest = _error(
    "BadRequest",
    "Malformed request: no image, bad JSON, bad base64, not an image, a bad option.",
    "missing_image",
    "invalid_json",
    "invalid_base64",
    "invalid_image",
    "invalid_parameter",
    "bad_request",
)
Unauthorized = _error(
    "Unauthorized", "Missing or wrong API key (header X-API-Key).", "missing_api_key", "invalid_api_key"
)
NotFound = _error("NotFound", "No model of that name is served.", "unknown_model")
TooLarge = _error(
    "TooLarge",
    "The body, an image or the batch is over its limit, or an image costs too much to decode.",
    "payload_too_large",
    "image_too_large",
    "batch_too_large",
)
UnsupportedMedia = _error(
    "UnsupportedMedia",
    "Not multipart/form-data or application/json, or an image format not served.",
    "unsupported_media_type",
    "unsupported_format",
)
Unreadable = _error(
    "Unreadable", "The image decodes but cannot be a captcha (1x1, absurd proportions).", "unreadable_image"
)
RateLimited = _error(
    "RateLimited",
    "Over the rate limit, or too many wrong API keys from this address; Retry-After says when to come back.",
    "rate_limited",
)
RequestTimeout = _error(
    "RequestTimeout", "The request body did not arrive within CAPTCHA_BODY_TIMEOUT seconds.", "request_timeout"
)
Unavailable = _error(
    "Unavailable",
    "No model is loaded, or the worker holds as many request bodies as it may (retry after Retry-After).",
    "model_unavailable",
    "server_busy",
)
