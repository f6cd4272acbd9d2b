import io
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("CAPTCHA_DATASETS", ROOT.parent / "shared" / "datasets"))


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not (path / "labels.csv").is_file() and not path.is_dir():
        pytest.skip(f"{path} is absent: the real data sets live in ../shared/datasets beside the checkout")
    return path


@pytest.fixture(scope="session")
def fssp_real() -> Path:
    return dataset("fssp-real")


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def captcha_image() -> Image.Image:
    """A generated FSSP-style captcha (RGB, 200x60)."""
    from captcha_api.training.generator import sample

    image, _ = sample(seed=123, index=0)
    return image


def generated_batch(seed: int, count: int):
    """(x, y): `count` generated captchas as a model batch and padded CTC labels."""
    from captcha_api.ocr.alphabet import FSSP
    from captcha_api.ocr.preprocess import image_to_array
    from captcha_api.training.data import encode_labels
    from captcha_api.training.generator import sample

    pairs = [sample(seed=seed, index=i) for i in range(count)]
    x = np.stack([image_to_array(image) for image, _ in pairs])
    return x, encode_labels([text for _, text in pairs], FSSP, 7)


def compiled_model(learning_rate: float):
    import keras

    from captcha_api.ocr.alphabet import FSSP
    from captcha_api.ocr.model import build_training_model, make_ctc_loss

    model = build_training_model(FSSP.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=make_ctc_loss(FSSP.blank_index))
    return model


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """A small real model: the project's network trained for a few steps, saved with metadata and ONNX export."""
    import keras

    from captcha_api.ocr.alphabet import FSSP
    from captcha_api.ocr.metadata import ModelMetadata
    from captcha_api.ocr.model import inference_model
    from captcha_api.training.export import export_onnx

    keras.utils.set_random_seed(0)
    x, y = generated_batch(seed=7, count=16)
    model = compiled_model(1e-3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    base = tmp_path_factory.mktemp("tiny") / "tiny"
    inference_model(model).save(base.with_suffix(".keras"))
    meta = ModelMetadata(name="tiny", alphabet=FSSP.chars, blank_index=FSSP.blank_index, max_length=7)
    meta.save(base.with_suffix(".json"))
    export_onnx(base.with_suffix(".keras"))
    return base


KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"


@pytest.fixture
def make_app(tiny_artifact):
    """Build an app on the tiny model with settings overridden per test."""
    from captcha_api.app import create_app

    def build(**overrides):
        settings = {
            "model": tiny_artifact,
            "runtime": "onnx",
            "api_keys": [KEY],
            "rate_limit": "",
            "batch_rate_limit": "",
        }
        settings.update(overrides)
        return create_app(settings)

    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    client = app.test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    return client


@pytest.fixture(scope="session")
def png(captcha_image) -> bytes:
    return encode(captcha_image, "PNG")


def json_lines(text: str) -> list[dict]:
    """Every line of a log as the JSON object it must be (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def wait_for_workers(read_log, count: int, seconds: float = 60) -> set[int]:
    """The pids of the workers that loaded a model, once there are `count` of them: a gunicorn answers /health
    from its first worker while the others may still be loading."""
    deadline = time.monotonic() + seconds
    while True:
        records = json_lines(read_log())
        pids = {
            r["pid"] for r in records if r["logger"] == "captcha_api.ocr.runtime" and "loaded model" in r["message"]
        }
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.fixture
def log_output():
    """What the service's own stdout handler writes (its formatter, its request-id filter), as an operator reads
    it. The handler is made once per process and kept by every app built after (each sets its format on it)."""
    from captcha_api import logs

    logs.ensure_handler()
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_captcha", False))
    buffer = io.StringIO()
    stream = handler.setStream(buffer)
    yield buffer
    handler.setStream(stream)
