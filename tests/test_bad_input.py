"""The bad-input catalogue: for each request a client can get wrong, the status and error code the service answers
with, and the proof that the worker that took it still answers (/health and a good /predict) afterwards.

Each case is one raw request (path, headers, body bytes), so the same case runs through the Flask test client and,
for the nastiest ones, over a socket to the real service under gunicorn, where the worker's pid must not change.
The odd but valid images (CMYK JPEG, 16-bit PNG, animated GIF: formats DESIGN.md serves) are expected to be read,
with a 200; a batch with bad entries is a 200 whose entries carry their own codes."""

from __future__ import annotations

import base64
import functools
import io
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from captcha_api.service import request_models, response_models
from scripts.process import GunicornProcess

from .conftest import KEY, encode

MAX_BODY = 1024 * 1024  # the catalogue's body limit, so that "far over" is 32 times over
MAX_BATCH = 8
SETTINGS = {"max_body_bytes": MAX_BODY, "max_batch": MAX_BATCH}  # max_image_bytes stays at its 500 KB default


@dataclass(frozen=True)
class Request:
    path: str
    headers: list[tuple[str, str]]  # values as a server hands them over: bytes decoded as latin-1
    body: bytes = b""


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], Request]
    status: int
    code: str | None  # None: a 200 with a reading
    entries: tuple[str | None, ...] = ()  # for a batch: each entry's error code, None for a reading
    live: bool = False  # also sent to the real service under gunicorn


# ------------------------------------------------------------------------------------------- images, in memory


@functools.cache
def captcha() -> Image.Image:
    from captcha_api.training.generator import sample

    image, _ = sample(seed=123, index=0)
    return image


@functools.cache
def png() -> bytes:
    return encode(captcha(), "PNG")


@functools.cache
def jpeg() -> bytes:
    return encode(captcha(), "JPEG")


@functools.cache
def bomb() -> bytes:
    """A real, complete 20000x20000 PNG (400 megapixels, one bit each): 48 KB that would inflate to 50 MB as bits
    and to 1.2 GB as the RGB the model path makes of it."""
    return encode(Image.new("1", (20000, 20000)), "PNG")


def sixteen_bit_png() -> bytes:
    grey = np.asarray(captcha().convert("L"), dtype=np.uint16) * 257
    image = Image.fromarray(grey)
    assert image.mode == "I;16"
    return encode(image, "PNG")


def animated_gif() -> bytes:
    first = captcha().convert("P")
    data = encode(first, "GIF", save_all=True, append_images=[Image.new("P", first.size, 0)], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    return data


def cmyk_jpeg() -> bytes:
    data = encode(captcha().convert("CMYK"), "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    return data


def plain(size: tuple[int, int]) -> bytes:
    return encode(Image.new("RGB", size, "white"), "PNG")


def too_big_png() -> bytes:
    data = encode(Image.effect_noise((600, 400), 80).convert("RGB"), "PNG")  # noise barely compresses
    assert 500 * 1024 < len(data) < MAX_BODY * 3 // 4
    return data


# ------------------------------------------------------------------------------------------------- requests


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def odd(text: str) -> str:
    """How a server hands over a header sent as UTF-8 bytes: each byte as one latin-1 character."""
    return text.encode("utf-8").decode("latin-1")


def raw(body: bytes, content_type: str | None = None, path: str = "/predict", key: str | None = KEY, extra=()):
    headers = [("Content-Type", content_type)] if content_type is not None else []
    if key is not None:
        headers.append(("X-API-Key", key))
    return Request(path, headers + list(extra), body)


def as_json(value, path: str = "/predict", **options) -> Request:
    return raw(json.dumps(value).encode(), "application/json", path, **options)


def multipart(fields: dict, path: str = "/predict", **options) -> Request:
    values = MultiDict()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, bytes):
                item = FileStorage(io.BytesIO(item), filename=f"{name}.png", content_type="image/png")
            values.add(name, item)
    boundary, body = encode_multipart(values)
    return raw(body, f"multipart/form-data; boundary={boundary}", path, **options)


CASES = [
    # the body and its content type
    Case("empty-body", lambda: raw(b""), 415, "unsupported_media_type"),
    Case("empty-body-said-to-be-json", lambda: raw(b"", "application/json"), 400, "invalid_json"),
    Case("wrong-content-type-text", lambda: raw(b"hello", "text/plain"), 415, "unsupported_media_type"),
    Case(
        "url-encoded-form",
        lambda: raw(b"image=abc", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    ),
    Case("raw-png-body", lambda: raw(png(), "image/png"), 415, "unsupported_media_type"),
    Case("non-json", lambda: raw(b"{not json", "application/json"), 400, "invalid_json"),
    Case("json-not-utf8", lambda: raw(b'{"image": "\xff\xfe"}', "application/json"), 400, "invalid_json", live=True),
    Case("json-list", lambda: as_json([b64(png())]), 400, "invalid_json"),
    Case("json-string", lambda: as_json(b64(png())), 400, "invalid_json"),
    Case("json-null", lambda: raw(b"null", "application/json"), 400, "invalid_json"),
    Case("json-nested-too-deep", lambda: raw(b"[" * 100_000, "application/json"), 400, "invalid_json", live=True),
    # the image field
    Case("missing-field", lambda: as_json({"length": 5}), 400, "missing_image"),
    Case("misspelled-field", lambda: as_json({"picture": b64(png())}), 400, "missing_image"),
    Case("multipart-other-file", lambda: multipart({"other": png()}), 400, "missing_image"),
    Case("multipart-no-boundary", lambda: raw(b"--x\r\n", "multipart/form-data"), 400, "missing_image", live=True),
    Case("image-number", lambda: as_json({"image": 12345}), 400, "invalid_image"),
    Case("image-null", lambda: as_json({"image": None}), 400, "invalid_image"),
    Case("image-object", lambda: as_json({"image": {"data": b64(png())}}), 400, "invalid_image"),
    Case("image-empty-string", lambda: as_json({"image": ""}), 400, "missing_image"),
    Case("invalid-base64", lambda: as_json({"image": "@@@@ not base64 !!"}), 400, "invalid_base64"),
    Case("base64-non-ascii", lambda: as_json({"image": "ключ" * 8}), 400, "invalid_base64"),
    Case("data-url-not-base64", lambda: as_json({"image": "data:image/png,rawbytes"}), 400, "invalid_base64"),
    Case("base64-of-text", lambda: as_json({"image": b64(b"hello, not an image")}), 400, "invalid_image"),
    # broken and hostile images
    Case("truncated-png", lambda: as_json({"image": b64(png()[: len(png()) // 2])}), 400, "invalid_image", live=True),
    Case(
        "truncated-png-multipart",
        lambda: multipart({"image": png()[: len(png()) // 2]}),
        400,
        "invalid_image",
        live=True,
    ),
    Case(
        "truncated-jpeg", lambda: as_json({"image": b64(jpeg()[: len(jpeg()) // 2])}), 400, "invalid_image", live=True
    ),
    Case("zero-byte-file", lambda: multipart({"image": b""}), 400, "missing_image", live=True),
    Case(
        "body-far-over-limit",
        lambda: raw(b'{"image": "' + b"A" * (32 * MAX_BODY) + b'"}', "application/json"),
        413,
        "payload_too_large",
        live=True,
    ),
    Case("image-over-size-limit", lambda: as_json({"image": b64(too_big_png())}), 413, "image_too_large", live=True),
    Case("bomb-20000x20000-png", lambda: as_json({"image": b64(bomb())}), 413, "image_too_large", live=True),
    Case("bomb-multipart", lambda: multipart({"image": bomb()}), 413, "image_too_large", live=True),
    Case("ppm-format", lambda: as_json({"image": b64(encode(captcha(), "PPM"))}), 415, "unsupported_format"),
    Case("animated-gif", lambda: multipart({"image": animated_gif()}), 200, None, live=True),
    Case("cmyk-jpeg", lambda: multipart({"image": cmyk_jpeg()}), 200, None, live=True),
    Case("16-bit-png", lambda: multipart({"image": sixteen_bit_png()}), 200, None, live=True),
    Case("1x1-image", lambda: as_json({"image": b64(plain((1, 1)))}), 422, "unreadable_image", live=True),
    Case("very-wide-image", lambda: as_json({"image": b64(plain((3000, 20)))}), 422, "unreadable_image"),
    # batches and options
    Case(
        "batch-over-length-limit",
        lambda: as_json({"images": [b64(png())] * (MAX_BATCH + 1)}, "/predict-batch"),
        413,
        "batch_too_large",
    ),
    Case(
        "batch-mixing-good-and-bad",
        lambda: as_json(
            {"images": [b64(png()), "%%%", 7, b64(b"text"), b64(plain((1, 1))), b64(bomb()), b64(jpeg())]},
            "/predict-batch",
        ),
        200,
        None,
        entries=(None, "invalid_base64", "invalid_image", "invalid_image", "unreadable_image", "image_too_large", None),
        live=True,
    ),
    Case(
        "batch-multipart-with-empty-file",
        lambda: multipart({"images": [png(), b""]}, "/predict-batch"),
        200,
        None,
        entries=(None, "missing_image"),
    ),
    Case("batch-empty", lambda: as_json({"images": []}, "/predict-batch"), 400, "missing_image"),
    Case("batch-not-a-list", lambda: as_json({"images": b64(png())}, "/predict-batch"), 400, "missing_image"),
    Case("option-wrong-type", lambda: as_json({"image": b64(png()), "length": True}), 400, "invalid_parameter"),
    Case("option-too-long", lambda: as_json({"image": b64(png()), "charset": "2" * 201}), 400, "invalid_parameter"),
    Case("unknown-model", lambda: as_json({"image": b64(png()), "model": "nope"}), 404, "unknown_model"),
    # odd bytes in headers (obs-text, 0x80-0xFF, which HTTP allows and gunicorn passes on)
    Case(
        "odd-bytes-in-key",
        lambda: as_json({"image": b64(png())}, key="\xff\xfe\x80\x81"),
        401,
        "invalid_api_key",
        live=True,
    ),
    Case(
        "odd-bytes-in-content-type",
        lambda: raw(json.dumps({"image": b64(png())}).encode(), "application/json\xff\xfe"),
        415,
        "unsupported_media_type",
        live=True,
    ),
    Case(
        "odd-bytes-in-request-id",
        lambda: as_json({"image": b64(png())}, extra=[("X-Request-ID", "\xff\xfe id \x80")]),
        200,
        None,
        live=True,
    ),
    # API keys of the wrong shape
    Case("key-missing", lambda: as_json({"image": b64(png())}, key=None), 401, "missing_api_key"),
    Case("key-empty", lambda: as_json({"image": b64(png())}, key=""), 401, "missing_api_key"),
    Case("key-too-short", lambda: as_json({"image": b64(png())}, key="abc"), 401, "invalid_api_key"),
    Case("key-8000-chars", lambda: as_json({"image": b64(png())}, key="k" * 8000), 401, "invalid_api_key", live=True),
    Case("key-utf8", lambda: as_json({"image": b64(png())}, key=odd("ключ-" + KEY)), 401, "invalid_api_key", live=True),
    Case("key-truncated", lambda: as_json({"image": b64(png())}, key=KEY[:-1]), 401, "invalid_api_key"),
    Case(
        "key-as-bearer-token",
        lambda: as_json({"image": b64(png())}, key=None, extra=[("Authorization", f"Bearer {KEY}")]),
        401,
        "missing_api_key",
    ),
    Case(
        "key-sent-twice",
        lambda: as_json({"image": b64(png())}, extra=[("X-API-Key", "wrong-key-0123456789abcdef")]),
        401,
        "invalid_api_key",
        live=True,
    ),
    # control bytes are refused by gunicorn's parser before the app: see test_gunicorn_refusals_leave_the_worker
    Case("control-bytes-in-key", lambda: as_json({"image": b64(png())}, key="\x01\x7f" + KEY), 401, "invalid_api_key"),
]


def check_answer(case: Case, status: int, body: dict) -> None:
    """The status and code the case expects, in the declared shape of that answer."""
    if case.code is not None:
        assert status == case.status, (case.id, status, body)
        assert body["success"] is False and body["error"]["code"] == case.code, (case.id, body)
        assert body["error"]["message"]
        return
    assert status == 200, (case.id, status, body)
    if case.entries:
        batch = response_models.BatchReading.model_validate(body)
        codes = tuple(None if entry.success else entry.error.code for entry in batch.results)
        assert codes == case.entries, (case.id, body)
    else:
        response_models.Reading.model_validate(body)


# ------------------------------------------------------------------------------------- Flask test client, all


@pytest.fixture
def catalogue_app(make_app):
    return make_app(**SETTINGS)


def send(client, request: Request):
    return client.open(request.path, method="POST", headers=request.headers, data=request.body)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(catalogue_app, case):
    client = catalogue_app.test_client()
    response = send(client, case.build())
    assert response.mimetype == "application/json", response.data[:200]
    assert "Traceback" not in response.get_data(as_text=True)
    check_answer(case, response.status_code, response.get_json())
    # the app still answers, a good request included
    assert client.get("/health").status_code == 200
    good = client.post("/predict", json={"image": b64(png())}, headers={"X-API-Key": KEY})
    response_models.Reading.model_validate_json(good.data)


def test_the_catalogue_covers_the_issue_list():
    """Every kind of bad input the issue names has at least one case (count in the closing note)."""
    ids = {case.id for case in CASES}
    named = [
        "empty-body",
        "wrong-content-type-text",
        "non-json",
        "json-list",
        "missing-field",
        "image-number",
        "invalid-base64",
        "base64-of-text",
        "truncated-png",
        "zero-byte-file",
        "body-far-over-limit",
        "bomb-20000x20000-png",
        "animated-gif",
        "cmyk-jpeg",
        "16-bit-png",
        "1x1-image",
        "very-wide-image",
        "batch-over-length-limit",
        "batch-mixing-good-and-bad",
        "odd-bytes-in-key",
        "key-too-short",
    ]
    assert set(named) <= ids
    assert len(ids) == len(CASES)  # no id twice


# ------------------------------------------------------------------------------ the real service, the nastiest


def http_raw(port: int, request: Request, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """One request over a plain socket, header bytes exactly as given. A server may answer a body over its limit
    without reading it and close: the send then breaks off (and the close may come as a reset), and the answer,
    already received, is read all the same."""
    head = [f"{method} {request.path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(request.body)}"]
    head += [f"{name}: {value}" for name, value in request.headers] + ["Connection: close", "", ""]
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall("\r\n".join(head).encode("latin-1") + request.body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    answer = b"".join(chunks)
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


LIVE = [case for case in CASES if case.live]
SERVER_ENV = {
    "CAPTCHA_API_KEYS": KEY,
    "CAPTCHA_WORKERS": "1",  # every request reaches the one worker whose pid is watched
    "CAPTCHA_MAX_BODY_BYTES": str(MAX_BODY),
    "CAPTCHA_MAX_BATCH": str(MAX_BATCH),
    "CAPTCHA_RATE_LIMIT": "100000/minute",
    "CAPTCHA_BATCH_RATE_LIMIT": "100000/minute",
}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    with GunicornProcess(SERVER_ENV, tmp_path_factory.mktemp("catalogue") / "server.log") as server:
        yield server


def alive(server: GunicornProcess) -> None:
    status, _, body = http_raw(server.port, Request("/health", []), method="GET")
    assert status == 200, body
    response_models.Health.model_validate_json(body)
    status, _, body = http_raw(server.port, as_json({"image": b64(png())}))
    assert status == 200, body
    response_models.Reading.model_validate_json(body)


@pytest.mark.integration
@pytest.mark.parametrize("case", LIVE, ids=[case.id for case in LIVE])
def test_nasty_input_leaves_the_gunicorn_worker_alive(live_server, case):
    workers = live_server.worker_pids()
    assert len(workers) == 1
    status, headers, body = http_raw(live_server.port, case.build())
    assert headers.get("Content-Type") == "application/json", (status, body[:300])
    check_answer(case, status, json.loads(body))
    alive(live_server)
    assert live_server.worker_pids() == workers  # the same process: not crashed and restarted by the master
    assert "unhandled error" not in live_server.log()


@pytest.mark.integration
def test_gunicorn_refusals_leave_the_worker_alive(live_server):
    """Requests gunicorn's own parser refuses never reach the app, so their answer is gunicorn's HTML page, not the
    JSON envelope (nginx in deploy/ answers most of them first). The worker survives each."""
    workers = live_server.worker_pids()
    good_body = json.dumps({"image": b64(png())}).encode()
    refused = {
        "control-bytes-in-header": (raw(good_body, "application/json", key="\x01\x7f" + KEY), 400),
        "nul-in-header": (raw(good_body, "application/json", extra=[("X-Request-ID", "a\x00b")]), 400),
        "header-over-8190-bytes": (raw(good_body, "application/json", key="k" * 9000), 431),
        "request-line-over-8190-bytes": (Request("/predict?model=" + "m" * 9000, []), 414),
    }
    for name, (request, expected) in refused.items():
        status, _, _ = http_raw(live_server.port, request)
        assert status == expected, name
        alive(live_server)
    assert live_server.worker_pids() == workers


@pytest.mark.integration
def test_the_longest_documented_query_reaches_the_app(live_server):
    """Three options of 200 four-byte characters: 7.2 KB of request line, within what /openapi.json allows. Found
    by schemathesis: gunicorn's default limit of 4094 answered it with its own HTML 414."""
    option = "\U0001f600" * request_models.MAX_OPTION_CHARS
    query = "&".join(f"{name}={quote(option)}" for name in ("model", "charset", "length"))
    status, headers, body = http_raw(live_server.port, as_json({"image": b64(png())}, path="/predict?" + query))
    assert headers.get("Content-Type") == "application/json", body[:300]
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_model"  # 'model' is checked first


def test_a_field_sent_several_times_reads_its_first_file(client, png):
    """/predict reads the first file of 'image', as request.files.get does; plain text fields are not files."""
    two = MultiDict([("image", (io.BytesIO(png), "a.png")), ("image", (io.BytesIO(b""), "b.png"))])
    assert client.post("/predict", data=two, headers={"X-API-Key": KEY}).status_code == 200
    empty_first = MultiDict([("image", (io.BytesIO(b""), "a.png")), ("image", (io.BytesIO(png), "b.png"))])
    answer = client.post("/predict", data=empty_first, headers={"X-API-Key": KEY})
    assert answer.status_code == 400 and answer.get_json()["error"] == {
        "code": "missing_image",
        "message": "the uploaded file 'image' is empty",
    }
    text_only = client.post(
        "/predict-batch", data={"images": "abc"}, content_type="multipart/form-data", headers={"X-API-Key": KEY}
    )
    assert text_only.status_code == 400 and text_only.get_json()["error"] == {
        "code": "missing_image",
        "message": "no files in the multipart field 'images'",
    }
