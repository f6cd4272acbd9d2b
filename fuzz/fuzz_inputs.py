"""Fuzz the input path: request bodies -> image bytes (multipart, JSON, base64, data URLs, options) -> model input.

Bodies go through the whole app (the request models, their refusals, the views, the tiny test model): any 500 is
a crash. Base64 strings and image bytes go to decoding and preprocessing directly, where any exception other than
the project's own invalid-input errors (CaptchaError and its subclasses, answered as 4xx) is a crash.
Run by tests/test_fuzz.py for a bounded time; by hand:

    python fuzz/fuzz_inputs.py -max_total_time=300 fuzz/corpus
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["captcha_api", "PIL", "werkzeug", "pydantic", "spectree"]):
    from captcha_api.core.errors import CaptchaError
    from captcha_api.core.preprocess import preprocess
    from captcha_api.service.app import create_app
    from captcha_api.service.request_models import decode_base64

MAX_BYTES = 200_000
MAX_PIXELS = 1_000_000
TINY_MODEL = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny"
APP = create_app(
    {
        "model": TINY_MODEL,
        "model_dir": "none",
        "runtime": "onnx",
        "rate_limit": "",
        "batch_rate_limit": "",
        "max_image_bytes": MAX_BYTES,
        "max_pixels": MAX_PIXELS,
        "max_batch": 8,
        "log_level": "CRITICAL",
    }
)
CLIENT = APP.test_client()
PATHS = ("/predict", "/predict-batch")
CONTENT_TYPES = (
    "application/json",
    "multipart/form-data; boundary=b",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
)


def request_body(fdp: atheris.FuzzedDataProvider) -> None:
    path = PATHS[fdp.ConsumeIntInRange(0, len(PATHS) - 1)]
    content_type = CONTENT_TYPES[fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    query = fdp.ConsumeUnicodeNoSurrogates(40)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    answer = CLIENT.post(f"{path}?{query}", data=body, content_type=content_type)
    if answer.status_code >= 500:
        raise AssertionError(f"{path}: {answer.status_code} {answer.get_data(as_text=True)[:500]}")


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
