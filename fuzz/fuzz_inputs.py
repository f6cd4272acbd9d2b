"""Fuzz the input path: request bodies -> image bytes (multipart, JSON, base64, data URLs, options) -> model input.

Any exception other than the project's own invalid-input errors (CaptchaError and its subclasses, which the API
turns into 4xx answers) is a crash. Run by tests/test_fuzz.py for a bounded time; by hand:

    python fuzz/fuzz_inputs.py -max_total_time=300 fuzz/corpus
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["captcha_api", "PIL", "werkzeug"]):
    from flask import Flask

    from captcha_api.core.errors import CaptchaError
    from captcha_api.core.preprocess import preprocess
    from captcha_api.service.inputs import batch_images, decode_base64, request_options, single_image

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000
APP = Flask(__name__)
CONTENT_TYPES = (
    "application/json",
    "multipart/form-data; boundary=b",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
)


def request_body(fdp: atheris.FuzzedDataProvider) -> None:
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    query = fdp.ConsumeUnicodeNoSurrogates(40)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    with APP.test_request_context("/predict?" + query, method="POST", data=body, content_type=content_type):
        from flask import request

        for parse in (
            lambda: request_options(request),
            lambda: single_image(request, MAX_BYTES),
            lambda: batch_images(request, MAX_BYTES, 8),
        ):
            try:
                items = parse()
            except CaptchaError:
                continue
            if isinstance(items, bytes):
                try_preprocess(items)


def try_preprocess(data: bytes) -> None:
    try:
        array = preprocess(data, MAX_PIXELS)
    except CaptchaError:
        return
    assert array.shape == (200, 60, 1) and array.dtype.name == "float32"


def base64_text(fdp: atheris.FuzzedDataProvider) -> None:
    text = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        data = decode_base64(text, MAX_BYTES)
    except CaptchaError:
        return
    try_preprocess(data)


def image_bytes(fdp: atheris.FuzzedDataProvider) -> None:
    try_preprocess(fdp.ConsumeBytes(fdp.remaining_bytes()))


TARGETS = (image_bytes, image_bytes, base64_text, request_body)


def test_one_input(data: bytes) -> None:
    # The first byte picks the target and the rest is its input, byte for byte, so that seed images stay intact
    # (FuzzedDataProvider takes integers from the end of the data).
    if not data:
        return
    TARGETS[data[0] % len(TARGETS)](atheris.FuzzedDataProvider(data[1:]))


def write_corpus(folder: Path) -> None:
    """Seed inputs: small valid images of every accepted format (the fuzzer mutates from real structure)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (40, 16), (230, 230, 220))
    for x in range(5, 35, 3):
        image.putpixel((x, 8), (20, 30, 120))
    for fmt, mode in (
        ("PNG", "RGB"),
        ("PNG", "P"),
        ("PNG", "LA"),
        ("JPEG", "RGB"),
        ("GIF", "P"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("WEBP", "RGB"),
    ):
        buffer = io.BytesIO()
        image.convert(mode).save(buffer, fmt)
        # the first byte picks the target: 0 and 1 are raw image bytes
        (folder / f"{fmt.lower()}-{mode}").write_bytes(b"\x00" + buffer.getvalue())


if __name__ == "__main__":
    corpus = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
    for folder in corpus:
        if not any(folder.glob("*")):
            write_corpus(folder)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
