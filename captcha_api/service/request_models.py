"""The request bodies of the HTTP API (DESIGN.md "HTTP API"), one pydantic model each. spectree validates every
request against them before the view runs and builds /openapi.json from the same models; the view then takes its
images and options from the validated instance (`images`, `options`), so what is checked, what is documented and
what is read are one thing.

Each field says which error a bad value of it is answered with (`Refusal`): `refusal()` turns pydantic's errors
into the project's, for spectree's hook (openapi.py). What a JSON schema cannot say stays here as code: base64 and
data URLs, size limits, and a batch entry that fails alone."""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from flask import Request
from flask.json.provider import DefaultJSONProvider
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, WithJsonSchema, model_validator
from pydantic.functional_validators import PlainValidator
from werkzeug.datastructures import FileStorage

from ..core.errors import CaptchaError, ImageTooLarge, InvalidImage, InvalidParameter
from .errors import BatchTooLarge, InvalidBase64, InvalidJson, MissingImage, UnsupportedMediaType

MAX_OPTION_CHARS = 200
IMAGE_FIELDS = ("image", "image_base64", "text")  # the last two are names older clients send; the first one sent wins
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+(=[\w.+-]+)?)*),", re.ASCII)
DATA_URL_HEAD = 256  # characters of a data URL before its comma, at most ("data:image/png;base64,")
WHITESPACE = b" \t\n\r\x0b\x0c"  # what \s matches in bytes; bytes.translate drops them 10x faster than re.sub
# Values a JSON body may hold: a batch of 64 images with its options needs a few hundred. Each value costs tens of
# bytes of Python objects for one or two bytes of JSON ('[],' is an empty list: 56 bytes), so a 16 MB body of
# millions of them took a worker past 500 MB; under this bound a body costs about its own size again.
MAX_JSON_VALUES = 10_000

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
MIN_CONFIDENCE_DOC = (
    "Refuse a reading less confident than this (0 to 1) with 422 low_confidence, the reading and its confidence in "
    "the error; the model's own default (GET /info, min_confidence) when left out; 0 returns every reading."
)
DETAILS_DOC = "1 or true: add each character's confidence and the runner-up reading to the answer."


# ------------------------------------------------------------------------------------------- refusals of fields


@dataclass(frozen=True)
class Refusal:
    """Field metadata: the error a request is answered with when this field is missing or empty (`missing`) or of
    the wrong kind (`invalid`), and the message for the latter ("{field}" is the field's name; pydantic's own
    message when None)."""

    invalid: type[CaptchaError]
    missing: type[CaptchaError] = MissingImage
    message: str | None = None

    def error(self, field: str, detail: dict) -> CaptchaError:
        if detail["type"] == "missing":
            return self.missing(f"the body has no '{field}' field")
        if detail["type"] in ("string_too_short", "too_short") and self.missing is not self.invalid:
            return self.missing(f"'{field}' is empty")
        message = self.message or "'{field}': " + detail["msg"].removeprefix("Value error, ")
        return self.invalid(message.format(field=field))


OPTION = Refusal(InvalidParameter, InvalidParameter)
IMAGE_STRING = Refusal(InvalidImage, message="'{field}' must be a base64 string or data URL")
IMAGE_FILE = Refusal(MissingImage, message="no file in the multipart field '{field}'")
IMAGE_FILES = Refusal(MissingImage, message="no files in the multipart field '{field}'")
IMAGE_LIST = Refusal(MissingImage)


def _no_default(schema: dict) -> None:
    # These fields may be left out but not sent as null; a "default": null in the schema would say otherwise.
    schema.pop("default", None)


def _optional(description: str, **extra) -> Any:
    """A field a request may leave out (None in the model then), which must have its type when present."""
    return Field(default=None, description=description, json_schema_extra=_no_default, **extra)


def _uploaded_file(value: Any) -> FileStorage:
    # spectree hands a field sent several times over as a list: the first file is the one read, as werkzeug's
    # request.files.get would. A multipart part without a filename is a plain form field (a string), not a file.
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, FileStorage)), None)
    if not isinstance(value, FileStorage):
        raise ValueError("not a file")
    return value


def _uploaded_files(value: Any) -> list:
    # A field sent once comes as its value, not as a list of one; the form's plain fields of that name are not
    # files and are passed over, as request.files.getlist would.
    values = value if isinstance(value, list) else [value]
    return [item for item in values if isinstance(item, FileStorage)]


def _not_a_boolean(value: Any) -> Any:
    # JSON true would be taken as 1: a threshold is a number
    if isinstance(value, bool):
        raise ValueError("must be a number from 0 to 1, not true or false")
    return value


OptionText = Annotated[str, Field(min_length=1, max_length=MAX_OPTION_CHARS), OPTION]
ImageText = Annotated[str, Field(min_length=1), IMAGE_STRING]
ImageFile = Annotated[
    FileStorage, PlainValidator(_uploaded_file), WithJsonSchema({"type": "string", "format": "binary"}), IMAGE_FILE
]


# ---------------------------------------------------------------------------------------------------- requests


class Options(BaseModel):
    """Decoding options in the query string; they win over the same options in the body."""

    model: OptionText = _optional(MODEL_DOC)
    charset: OptionText = _optional(CHARSET_DOC)
    length: OptionText = _optional(LENGTH_DOC)
    min_confidence: Annotated[
        float, BeforeValidator(_not_a_boolean), Field(ge=0, le=1, allow_inf_nan=False), OPTION
    ] = _optional(MIN_CONFIDENCE_DOC, examples=[0.9])
    details: Annotated[bool, OPTION] = _optional(DETAILS_DOC)

    def options(self) -> dict[str, str | int | float | bool]:
        """The options given, by name."""
        return {name: getattr(self, name) for name in OPTION_NAMES if getattr(self, name) is not None}


OPTION_NAMES = tuple(Options.model_fields)


class _JsonOptions(Options):
    length: Annotated[StrictInt | OptionText, OPTION] = _optional(LENGTH_DOC, examples=[5, "4-6"])


class PredictJson(_JsonOptions):
    """One image as a base64 string or data URL, in 'image' or one of its aliases."""

    # One of the three is required (the model validator below); the schema says so with anyOf.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [{"required": [name]} for name in IMAGE_FIELDS],
            "examples": [{"image": IMAGE_EXAMPLE}],
        },
    )
    # What a body that fails the model validator (no image field at all) is answered with.
    no_field: ClassVar[type[CaptchaError]] = MissingImage

    image: ImageText = _optional(IMAGE_DOC)
    image_base64: ImageText = _optional("Alias of 'image', for older clients.")
    text: ImageText = _optional("Alias of 'image', for older clients.")

    @model_validator(mode="after")
    def _has_an_image(self) -> PredictJson:
        if not self.model_fields_set.intersection(IMAGE_FIELDS):
            raise ValueError("the JSON body has no 'image' field")
        return self

    def image_bytes(self, max_bytes: int) -> bytes:
        value = next(getattr(self, name) for name in IMAGE_FIELDS if name in self.model_fields_set)
        return decode_base64(value, max_bytes)


class PredictForm(Options):
    """One image file in the multipart field 'image'."""

    image: ImageFile = Field(description="The image file: PNG, JPEG, BMP, GIF or WebP.")

    def image_bytes(self, max_bytes: int) -> bytes:
        return read_file(self.image, max_bytes)


class BatchJson(_JsonOptions):
    """Several images, each a base64 string or data URL."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"images": [IMAGE_EXAMPLE, "data:image/png;base64," + IMAGE_EXAMPLE]}]},
    )

    images: Annotated[list[Any], IMAGE_LIST] = Field(
        min_length=1,
        description="Base64 strings or data URLs. An entry that is not one (not a string, not base64, not an "
        "image) fails alone: its result carries the error, the other entries are read.",
    )

    def entries(self, max_bytes: int, max_batch: int) -> list[bytes | CaptchaError]:
        """Each image's bytes, or the error that entry alone fails with."""
        check_batch_length(len(self.images), max_batch)
        return [_attempt(_decode_entry, value, max_bytes) for value in self.images]


class BatchForm(Options):
    """Several image files, each in a multipart field 'images'."""

    images: Annotated[list[ImageFile], BeforeValidator(_uploaded_files), IMAGE_FILES] = Field(
        min_length=1, description="The image files, one field 'images' each."
    )

    def entries(self, max_bytes: int, max_batch: int) -> list[bytes | CaptchaError]:
        check_batch_length(len(self.images), max_batch)
        return [_attempt(read_file, storage, max_bytes) for storage in self.images]


class ReportJson(BaseModel):
    """A reading that was wrong, and the right text: the reading's request id (the X-Request-ID of its answer)
    and, for a batch, the index of its image."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"request_id": "0f3c9d2a", "text": "д25сг"}]})

    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$"), OPTION] = Field(
        description="The X-Request-ID of the answer that carried the wrong reading."
    )
    text: Annotated[str, Field(min_length=1, max_length=MAX_OPTION_CHARS), OPTION] = Field(
        description="What the image really says: characters of the model's alphabet, within its lengths."
    )
    index: Annotated[StrictInt, Field(ge=0, le=10_000), OPTION] = Field(
        default=0, description="The image's index in a /predict-batch request; 0 for /predict."
    )


BODIES = {model.__name__: model for model in (PredictJson, PredictForm, BatchJson, BatchForm, ReportJson, Options)}


def options(query: Options | None, body: Options) -> dict[str, str | int | float | bool]:
    """The decoding options of a validated request: the body's, overridden by the query string's."""
    return body.options() | (query.options() if query is not None else {})


def refusal(request: Request, model_name: str, errors: list[dict]) -> CaptchaError:
    """The project's error for a request that failed its model (pydantic's error list, `model_name` from the
    ValidationError's title): a body neither multipart nor JSON, or JSON that is not an object, first; then an
    option (checked first, as a client fixing one thing at a time would want); then the first error, answered as its
    field's Refusal says."""
    check_media_type(request)
    if request.is_json:
        json_object(request)
    model = BODIES.get(model_name, Options)
    chosen = next((e for e in errors if e["loc"] and e["loc"][0] in OPTION_NAMES), errors[0])
    field = str(chosen["loc"][0]) if chosen["loc"] else None
    if field is None:  # the model validator: a body without any image field
        return getattr(model, "no_field", CaptchaError)(chosen["msg"].removeprefix("Value error, "))
    info = model.model_fields.get(field)
    rule = next((m for m in info.metadata if isinstance(m, Refusal)), None) if info else None
    if rule is None:
        return CaptchaError(f"'{field}': {chosen['msg']}")
    return rule.error(field, chosen)


# ---------------------------------------------------------------------------------------------- the body itself


class JsonProvider(DefaultJSONProvider):
    ensure_ascii = False  # readings are Cyrillic: send them as text, not \u escapes
    sort_keys = False  # keep the documented field order

    def loads(self, s, **kwargs):
        # Every value but the first of a list or object follows a comma; every list or object opens with a bracket:
        # their count bounds the number of values before the parser builds any (commas inside strings only make
        # the bound stricter). Counting bytes takes about 1 ms a megabyte.
        separators = (b",", b"[", b"{") if isinstance(s, bytes | bytearray) else (",", "[", "{")
        if sum(s.count(sep) for sep in separators) > MAX_JSON_VALUES:
            raise ValueError(f"the JSON holds more than {MAX_JSON_VALUES} values")
        # The json module raises RecursionError, not ValueError, for a body nested past the interpreter's stack
        # ('[' * 100000); request.get_json takes only ValueError for bad JSON, so such a body was a 500.
        try:
            return super().loads(s, **kwargs)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


def is_multipart(request: Request) -> bool:
    return request.mimetype == "multipart/form-data"


def check_media_type(request: Request) -> None:
    """Only multipart/form-data and JSON bodies are read (a urlencoded form validates as a form, but has no files)."""
    if not (is_multipart(request) or request.is_json):
        raise UnsupportedMediaType(
            f"send multipart/form-data or application/json, not {request.mimetype or 'no content type'}"
        )


def json_object(request: Request) -> dict:
    body = request.get_json(silent=True)
    if body is None:
        raise InvalidJson(f"the body is not valid JSON, nests too deeply, or holds more than {MAX_JSON_VALUES} values")
    if not isinstance(body, dict):
        raise InvalidJson("the JSON body must be an object")
    return body


def batch_length(request: Request) -> int:
    """How many images a /predict-batch request holds, before any is decoded (0 when the body is not a batch): what
    the request costs against the rate limit, which is checked before validation."""
    if is_multipart(request):
        return len(request.files.getlist("images"))
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("images"), list):
            return len(body["images"])
    return 0


def check_batch_length(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise BatchTooLarge(f"the batch has {count} images; at most {max_batch} are accepted")


def decode_base64(value: str, max_bytes: int) -> bytes:
    """A base64 string or data URL -> bytes; refuses oversized payloads before decoding them."""
    text = value.strip()
    if len(text) * 3 // 4 > max_bytes + DATA_URL_HEAD:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    if text.startswith("data:"):
        # Only the head is matched, up to its comma: a 16 MB head of ';a' parameters took the regex 5.8 s and 3 GB.
        comma = text.find(",", 0, DATA_URL_HEAD)
        match = DATA_URL.match(text[: comma + 1]) if comma >= 0 else None
        if match is None or ";base64" not in (match.group("params") or ""):
            raise InvalidBase64("only base64 data URLs are accepted (data:image/png;base64,...)")
        text = text[match.end() :]
    try:
        raw = text.encode("ascii").translate(None, WHITESPACE)
    except UnicodeEncodeError:
        raise InvalidBase64("the image is not valid base64: it holds non-ASCII characters") from None
    if not raw:
        raise MissingImage("the image string is empty")
    if len(raw) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    raw += b"=" * (-len(raw) % 4)
    try:
        data = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"the image is not valid base64: {exc}") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    return data


def read_file(storage: FileStorage, max_bytes: int) -> bytes:
    data = storage.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    if not data:
        raise MissingImage(f"the uploaded file {storage.name!r} is empty")
    return data


def _decode_entry(value: Any, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise InvalidImage("each image must be a base64 string or data URL")
    return decode_base64(value, max_bytes)


def _attempt(function, *args):
    try:
        return function(*args)
    except CaptchaError as exc:
        return exc
