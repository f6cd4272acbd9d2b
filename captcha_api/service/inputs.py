"""Request bodies -> image bytes: multipart files, JSON base64 strings and data URLs, with size limits."""

from __future__ import annotations

import binascii
import re

from flask import Request
from flask.json.provider import DefaultJSONProvider

from ..core.errors import CaptchaError, ImageTooLarge
from .errors import ApiError
from .schemas import IMAGE_FIELDS, MAX_OPTION_CHARS, OPTION_NAMES

DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+(=[\w.+-]+)?)*),", re.ASCII)
DATA_URL_HEAD = 256  # characters of a data URL before its comma, at most ("data:image/png;base64,")
WHITESPACE = b" \t\n\r\x0b\x0c"  # what \s matches in bytes; bytes.translate drops them 10x faster than re.sub
# Values a JSON body may hold: a batch of 64 images with its options needs a few hundred. Each value costs tens of
# bytes of Python objects for one or two bytes of JSON ('[],' is an empty list: 56 bytes), so a 16 MB body of
# millions of them took a worker past 500 MB; under this bound a body costs about its own size again.
MAX_JSON_VALUES = 10_000


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
            raise ApiError(400, "invalid_base64", "only base64 data URLs are accepted (data:image/png;base64,...)")
        text = text[match.end() :]
    try:
        raw = text.encode("ascii").translate(None, WHITESPACE)
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_base64", "the image is not valid base64: it holds non-ASCII characters") from None
    if not raw:
        raise ApiError(400, "missing_image", "the image string is empty")
    if len(raw) * 3 // 4 > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    raw += b"=" * (-len(raw) % 4)
    try:
        data = binascii.a2b_base64(raw, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "invalid_base64", f"the image is not valid base64: {exc}") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    return data


def _read_file(storage, max_bytes: int) -> bytes:
    data = storage.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image is larger than {max_bytes} bytes")
    if not data:
        raise ApiError(400, "missing_image", f"the uploaded file {storage.name!r} is empty")
    return data


def _json_object(request: Request) -> dict:
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(
            400,
            "invalid_json",
            f"the body is not valid JSON, nests too deeply, or holds more than {MAX_JSON_VALUES} values",
        )
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the JSON body must be an object")
    return body


def _is_multipart(request: Request) -> bool:
    return request.mimetype == "multipart/form-data"


def _unsupported(request: Request) -> ApiError:
    return ApiError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data or application/json, not {request.mimetype or 'no content type'}",
    )


def single_image(request: Request, max_bytes: int) -> bytes:
    """The image of a /predict request."""
    if _is_multipart(request):
        storage = request.files.get("image")
        if storage is None:
            raise ApiError(400, "missing_image", "no file in the multipart field 'image'")
        return _read_file(storage, max_bytes)
    if request.is_json:
        body = _json_object(request)
        for name in IMAGE_FIELDS:
            if name in body:
                value = body[name]
                if not isinstance(value, str):
                    raise ApiError(400, "invalid_image", f"'{name}' must be a base64 string or data URL")
                return decode_base64(value, max_bytes)
        raise ApiError(400, "missing_image", "the JSON body has no 'image' field")
    raise _unsupported(request)


def batch_images(request: Request, max_bytes: int, max_batch: int) -> list[bytes | CaptchaError]:
    """The images of a /predict-batch request; an entry that cannot be decoded is its error, not a failed batch."""
    if _is_multipart(request):
        items = request.files.getlist("images")
        if not items:
            raise ApiError(400, "missing_image", "no files in the multipart field 'images'")
        _check_length(len(items), max_batch)
        return [_attempt(_read_file, storage, max_bytes) for storage in items]
    if request.is_json:
        body = _json_object(request)
        images = body.get("images")
        if not isinstance(images, list):
            raise ApiError(400, "missing_image", "the JSON body needs 'images': a list of base64 strings")
        if not images:
            raise ApiError(400, "missing_image", "'images' is empty")
        _check_length(len(images), max_batch)
        return [_attempt(_decode_item, value, max_bytes) for value in images]
    raise _unsupported(request)


def batch_length(request: Request) -> int:
    """How many images a /predict-batch request holds, before any is decoded (0 when the body is not a batch)."""
    if _is_multipart(request):
        return len(request.files.getlist("images"))
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("images"), list):
            return len(body["images"])
    return 0


def _decode_item(value, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise ApiError(400, "invalid_image", "each image must be a base64 string or data URL")
    return decode_base64(value, max_bytes)


def _check_length(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise ApiError(413, "batch_too_large", f"the batch has {count} images; at most {max_batch} are accepted")


def _attempt(function, *args):
    try:
        return function(*args)
    except CaptchaError as exc:
        return exc


def request_options(request: Request) -> dict[str, str | int]:
    """`model`, `charset` and `length`, from the query string, or from the JSON body or the multipart form fields
    (the query string wins when both are given)."""
    sources: list = [request.args]
    if _is_multipart(request):
        sources.append(request.form)
    elif request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            sources.append(body)
    options = {}
    for name in OPTION_NAMES:
        for source in sources:
            if name in source:
                value = source[name]
                if name == "length" and isinstance(value, int) and not isinstance(value, bool):
                    options[name] = value
                elif isinstance(value, str) and 0 < len(value) <= MAX_OPTION_CHARS:
                    options[name] = value
                else:
                    raise ApiError(
                        400,
                        "invalid_parameter",
                        f"'{name}' must be a non-empty string"
                        + (" or a whole number" if name == "length" else "")
                        + f" of at most {MAX_OPTION_CHARS} characters",
                    )
                break
    return options


def rejection(request: Request, errors: list[dict]) -> ApiError:
    """The project's error for a request that failed the declared models (schemas.py), with the code the hand
    checks above would give it: 415 for a body neither multipart nor JSON, invalid_json for JSON that is not an
    object, invalid_parameter for an option (checked first, as the views do), missing_image or invalid_image."""
    if not (_is_multipart(request) or request.is_json):
        return _unsupported(request)
    if request.is_json:
        _json_object(request)  # raises for a body that is not a JSON object
    options = [error for error in errors if error["loc"] and error["loc"][0] in OPTION_NAMES]
    error = (options or errors)[0]
    field = error["loc"][0] if error["loc"] else None
    if error["type"] == "missing":
        message = f"the body has no '{field}' field"
    else:
        message = (f"'{field}': " if field else "") + error["msg"].removeprefix("Value error, ")
    if field in OPTION_NAMES:
        return ApiError(400, "invalid_parameter", message)
    if field in IMAGE_FIELDS and error["type"] == "string_too_short":
        return ApiError(400, "missing_image", "the image string is empty")
    if field in IMAGE_FIELDS and error["type"] != "missing":
        return ApiError(400, "invalid_image", f"'{field}' must be a base64 string or data URL")
    if field in IMAGE_FIELDS or field == "images" or field is None:
        return ApiError(400, "missing_image", message)
    return ApiError(400, "bad_request", message)
