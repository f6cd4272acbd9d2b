"""The requests of the solver-compatible APIs, one pydantic model each: they document the endpoints in
/openapi.json and parse what clients send, so what is documented and what is read are one thing.

The official clients send parameters every way HTTP allows: 2captcha's in the query string, a urlencoded form, a
multipart form or JSON; the task API's in JSON, with names in more than one case (CapMonster's `Case` and
`CapMonsterModule`, anti-captcha's `case`). So names are matched without regard to case, and values are taken
leniently (1, "1" and true are all yes). Parameters of the solving services that change nothing here (their soft
ids, callbacks, language pools, instructions for human workers) are accepted and ignored."""

from __future__ import annotations

import binascii
from typing import Annotated, Any

from flask import current_app, g, request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema
from werkzeug.datastructures import FileStorage

from ...core.errors import CaptchaError
from ..request_models import IMAGE_EXAMPLE, decode_base64, read_file
from ..security import key_is_valid
from . import errors as e
from .solve import MODEL_SEPARATOR, Order

# What base64 of an image starts with: a body that decodes to one of these was encoded twice (CapMonster's Python
# client encodes whatever it is given, a base64 string too).
ENCODED_IMAGE_HEADS = (b"iVBORw0KGgo", b"/9j/", b"R0lGOD", b"Qk", b"UklGR", b"data:image/")
# CapMonster's own recognition modules: a client that names one gets the default model.
CAPMONSTER_MODULES = frozenset(
    "amazon botdetect facebook gmx google hotmail mailru ok oknew ramblerrus solvemedia steam vk yandex yandexnew "
    "yandexwave universal".split()
)
MAX_NAME_CHARS = 200
MAX_IDS = 100  # task ids one res.php?action=get&ids=... may ask for


def _flag(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in ("", "0", "false", "no", "off"):
        return False
    return value


def _number(value: Any) -> Any:
    return 0 if value in ("", None) else value


def _digits(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
# Parameters read for nothing (hints for human solvers, the clients' own ids): any value, never refused.
Ignored = Annotated[Any, WithJsonSchema({"type": "string"})]
TaskIdText = Annotated[str, BeforeValidator(_digits), Field(max_length=40)]
Number = Annotated[int, BeforeValidator(_number)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]


class _Lenient(BaseModel):
    # Unknown parameters pass; names are matched by their lower case (see `lowered`), documented in the services'.
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


# ------------------------------------------------------------------------------------------ 2captcha classic API


class InParams(_Lenient):
    """POST or GET /in.php: an image to read, as 2captcha's classic API takes it."""

    key: Name | None = Field(None, description="An API key of this service (CAPTCHA_API_KEYS); any when it has none.")
    method: Name = Field("post", description="'post' (a multipart file in 'file') or 'base64' (the image in 'body').")
    body: str | None = Field(None, description="method=base64: the image as base64, raw or as a data URL.")
    json_: Flag = Field(False, alias="json", description="1: answer in JSON ({status, request}); else in text.")
    numeric: Number = Field(0, ge=0, le=4, description="0 any; 1 digits; 2 letters; 3 either only; 4 both.")
    min_len: Number = Field(0, ge=0, le=100, description="The reading's least length (0: the model's).")
    max_len: Number = Field(0, ge=0, le=100, description="The reading's greatest length (0: the model's).")
    calc: Flag = Field(False, description="1: the image is a sum to work out; answered by its value.")
    regsense: Flag = Field(False, description="1: case-sensitive. Accepted: the model reads as it was trained.")
    phrase: Flag = Field(False, description="1: several words. Accepted: the model reads as it was trained.")
    lang: Ignored = Field(None, description="The language, for human solvers. Accepted and ignored.")
    textinstructions: Ignored = Field(None, description="Instructions for human solvers. Accepted and ignored.")
    header_acao: Ignored = Field(None, description="Accepted; CORS follows CAPTCHA_CORS_ORIGINS.")
    soft_id: Ignored = Field(None, description="A client's software id. Accepted and ignored.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"key": "KEY", "method": "base64", "body": IMAGE_EXAMPLE}]}
    )


class InForm(InParams):
    """/in.php as a multipart form: the image file in 'file' (method=post)."""

    file: Annotated[Any, WithJsonSchema({"type": "string", "format": "binary"})] = Field(
        None, description="method=post: the image file."
    )


class ResParams(_Lenient):
    """GET or POST /res.php: a task's result, the balance, or a report."""

    key: Name | None = Field(None, description="The API key that created the task.")
    action: Name = Field("", description="get, get2, getbalance, reportbad or reportgood.")
    id: TaskIdText | None = Field(None, description="The task id in.php answered (get, get2, reportbad, reportgood).")
    ids: Annotated[str, Field(max_length=MAX_IDS * 21)] | None = Field(
        None, description=f"action=get: up to {MAX_IDS} task ids, comma-separated (answers '|'-joined)."
    )
    json_: Flag = Field(False, alias="json", description="1: answer in JSON ({status, request}); else in text.")
    header_acao: Ignored = Field(None, description="Accepted; CORS follows CAPTCHA_CORS_ORIGINS.")


# ------------------------------------------------------------------------------------------------ the task API


class ImageToTextTask(_Lenient):
    """An image captcha, as anti-captcha, CapMonster Cloud and 2captcha's JSON API take it."""

    type: Name = Field(description="ImageToTextTask (the only type read here).", examples=["ImageToTextTask"])
    body: str = Field(description="The image as base64, raw or as a data URL.")
    phrase: Flag = Field(False, description="Several words. Accepted: the model reads as it was trained.")
    case: Flag = Field(False, description="Case-sensitive ('Case' too). Accepted: the model reads as trained.")
    numeric: Number = Field(0, ge=0, le=4, description="0 any; 1 digits; 2 letters; 3 either only; 4 both.")
    math: Flag = Field(False, description="The image is a sum to work out; answered by its value.")
    minlength: Number = Field(0, alias="minLength", ge=0, le=100, description="Least length (0: the model's).")
    maxlength: Number = Field(0, alias="maxLength", ge=0, le=100, description="Greatest length (0: the model's).")
    recognizingthreshold: Number | None = Field(
        None,
        alias="recognizingThreshold",
        ge=0,
        le=100,
        description="Least confidence, 0-100: below it, ERROR_CAPTCHA_UNSOLVABLE (default: the model's own).",
    )
    capmonstermodule: Name | None = Field(
        None,
        alias="CapMonsterModule",
        description="A served model's name (GET /info); CapMonster's own module names read with the default model.",
    )
    comment: Ignored = Field(None, description="Instructions for human solvers. Accepted and ignored.")


class CreateTask(_Lenient):
    """POST /createTask."""

    clientkey: Name | None = Field(None, alias="clientKey", description="An API key; '<key>__<model>' picks a model.")
    task: ImageToTextTask | None = Field(None, description="The task.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"clientKey": "KEY", "task": {"type": "ImageToTextTask", "body": IMAGE_EXAMPLE}}]
        }
    )


class TaskRef(_Lenient):
    """POST /getTaskResult and the reports: a task of this key's."""

    clientkey: Name | None = Field(None, alias="clientKey", description="The API key that created the task.")
    taskid: Any = Field(None, alias="taskId", description="The id /createTask answered.", examples=[2122988149])


class KeyOnly(_Lenient):
    """POST /getBalance."""

    clientkey: Name | None = Field(None, alias="clientKey", description="An API key.")


# ------------------------------------------------------------------------------------------------- reading them


def lowered(mapping) -> dict[str, Any]:
    """Names in lower case (the first of two that differ only in case wins), keeping the values."""
    out: dict[str, Any] = {}
    for name, value in mapping.items():
        if isinstance(name, str):
            out.setdefault(name.lower(), value)
    return out


def json_body() -> dict | None:
    """The request's JSON object, whatever its Content-Type says (None when the body is not one, or the request is
    not a POST: a GET's body is never read for parameters)."""
    if request.method != "POST":
        return None
    data = request.get_data(cache=True)
    if not data.strip():
        return None
    try:
        body = current_app.json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def merged() -> dict[str, Any]:
    """Every parameter of a classic-API request: the query string's, then the form's, then a JSON body's (the
    first given of a name wins), by lower-case name."""
    if "compat_params" not in g:
        params = lowered(request.args.to_dict())
        if request.method != "POST":
            pass  # a GET's parameters are its query string's
        elif request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            for name, value in lowered(request.form.to_dict()).items():
                params.setdefault(name, value)
        else:
            for name, value in lowered(json_body() or {}).items():
                params.setdefault(name, value)
        g.compat_params = params
    return g.compat_params


def task_body() -> dict[str, Any]:
    """The JSON object of a task-API request, names in lower case (a body that is not one reads as empty)."""
    if "compat_params" not in g:
        body = lowered(json_body() or {})
        if isinstance(body.get("task"), dict):
            body["task"] = lowered(body["task"])
        g.compat_params = body
    return g.compat_params


def parse(model: type[BaseModel], values: dict) -> Any:
    """`values` as `model`, or ERROR_BAD_PARAMETERS naming the first field it refuses."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False)[0]
        # Each field by the name clients send it under (minLength, not the lower-case name it is matched by).
        names, where = model.model_fields, []
        for part in first["loc"]:
            field = names.get(part) if isinstance(part, str) else None
            where.append(field.alias or str(part) if field is not None else str(part))
            annotation = getattr(field, "annotation", None)
            names = (
                annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else {}
            )
        where = ".".join(where) or "the request"
        raise e.BAD_PARAMETERS(f"{where}: {first['msg']}") from None


def given_key(params: dict) -> str:
    """The key a compatible request carries (`key` or `clientKey`), as sent; "" when none."""
    value = params.get("clientkey", params.get("key"))
    return value if isinstance(value, str) else ""


def credentials(params: dict) -> tuple[str, str | None]:
    """The API key of a compatible request and the model its key form names ("<key>__<model>"), once per request:
    security.py checks the key like an X-API-Key header's."""
    if "compat_credentials" not in g:
        given = given_key(params)
        settings = current_app.config["SETTINGS"]
        served = current_app.extensions["models"].recognizers
        key, model = given, None
        if MODEL_SEPARATOR in given and not (settings.api_keys and key_is_valid(given, settings.api_keys)):
            head, _, tail = given.rpartition(MODEL_SEPARATOR)
            known = key_is_valid(head, settings.api_keys) if settings.api_keys else tail in served
            if known and tail:
                key, model = head, tail
        g.compat_credentials = (key, model)
    return g.compat_credentials


def image(value: str | None, file: FileStorage | None = None) -> bytes:
    """The image of a request: an uploaded file, else base64 (raw or a data URL; encoded twice is taken too)."""
    max_bytes = current_app.config["SETTINGS"].max_image_bytes
    try:
        if file is not None:
            return read_file(file, max_bytes)
        if not isinstance(value, str) or not value.strip():
            raise e.ZERO_CAPTCHA_FILESIZE("no image: send it in 'body' (base64) or as a file")
        data = decode_base64(value, max_bytes)
        if data.startswith(ENCODED_IMAGE_HEADS):
            try:
                data = decode_base64(data.decode("ascii"), max_bytes)
            except (CaptchaError, UnicodeDecodeError, binascii.Error):
                pass  # not base64 after all: read the bytes as they are
        return data
    except CaptchaError as error:
        raise e.from_native(error.code, error.message) from None


def order(
    data: bytes, *, numeric=0, min_length=0, max_length=0, math=False, threshold=None, module=None, key_model=None
):
    """An Order from a request's parsed values; the model a key form names wins over a module field."""
    model = key_model
    if model is None and module is not None and module not in CAPMONSTER_MODULES:
        model = module
    return Order(
        image=data,
        numeric=numeric,
        min_length=min_length,
        max_length=max_length,
        math=math,
        threshold=None if threshold is None else threshold / 100,
        model=model,
    )
