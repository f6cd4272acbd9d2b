import io
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact
from scripts.make_test_model import FIXTURES, compiled_model, generated_batch  # noqa: F401 - used by the tests
from scripts.make_test_model import build as build_tiny_model

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


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """The model the app tests serve, named 'tiny': the shipped FSSP network (it reads the generated captchas of
    these tests, so their answers are readings, not the 422 unreadable an untrained network's empty reading gets)
    with the small metadata of tests/fixtures/tiny.json, copied to a folder of its own. No TensorFlow needed."""
    base = tmp_path_factory.mktemp("tiny") / "tiny"
    shutil.copy(ModelArtifact(DEFAULT_MODEL).onnx, base.with_suffix(".onnx"))
    shutil.copy(FIXTURES / "tiny.json", base.with_suffix(".json"))
    return base


@pytest.fixture(scope="session")
def untrained_artifact(tmp_path_factory) -> Path:
    """The network barely trained (tests/fixtures/tiny.onnx, made by `python -m scripts.make_test_model`): a model
    of another version than the shipped one that reads nothing right (no characters: unreadable, unless a request
    sets a length), for the tests that replace one model with another."""
    base = tmp_path_factory.mktemp("untrained") / "tiny"
    for suffix in (".onnx", ".json"):
        shutil.copy(FIXTURES / f"tiny{suffix}", base.with_suffix(suffix))
    return base


def _varint(number: int) -> bytes:
    out = b""
    while True:
        low, number = number & 0x7F, number >> 7
        out += bytes([low | (0x80 if number else 0)])
        if not number:
            return out


@pytest.fixture(scope="session")
def reexported_artifact(tmp_path_factory) -> Path:
    """The shipped FSSP network as another file, as a re-export would give: a doc_string (ModelProto field 6, the
    last one given wins) appended to the ONNX protobuf. The same readings, another version (its file's SHA-256),
    for the tests that replace one readable model with another."""
    base = tmp_path_factory.mktemp("reexported") / "tiny"
    note = b"re-exported for the tests"
    field = _varint((6 << 3) | 2) + _varint(len(note)) + note
    base.with_suffix(".onnx").write_bytes(ModelArtifact(DEFAULT_MODEL).onnx.read_bytes() + field)
    shutil.copy(FIXTURES / "tiny.json", base.with_suffix(".json"))
    return base


@pytest.fixture(scope="session")
def tiny_keras_artifact(tmp_path_factory) -> Path:
    """The same network trained here, with its Keras file, for the tests of the Keras runtime and of the export."""
    pytest.importorskip("keras", reason="training dependencies (pip install '.[train]') are not installed")
    return build_tiny_model(tmp_path_factory.mktemp("tiny-keras") / "tiny")


KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"


@pytest.fixture
def make_app(tiny_artifact, tmp_path):
    """Build an app on the tiny model with settings overridden per test (reports go to the test's own folder)."""
    from captcha_api.service.app import create_app

    built = []

    def build(**overrides):
        settings = {
            "model": tiny_artifact,
            "feedback_dir": str(tmp_path / "feedback"),
            "task_store": str(tmp_path / "tasks.sqlite3"),
            "runtime": "onnx",
            "api_keys": [KEY],
            "rate_limit": "",
            "batch_rate_limit": "",
        }
        settings.update(overrides)
        app = create_app(settings)
        built.append(app)
        return app

    yield build
    for app in built:  # the recent readings' folder may be in /dev/shm, outside the test's own folder
        feedback = app.extensions.get("feedback")
        if feedback is not None:
            shutil.rmtree(feedback.recent, ignore_errors=True)


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
            r["pid"] for r in records if r["logger"] == "captcha_api.core.runtime" and "loaded model" in r["message"]
        }
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.fixture
def log_output():
    """What the service's own stdout handler writes (its formatter, its request-id filter), as an operator reads
    it. The handler is made once per process and kept by every app built after (each sets its format on it)."""
    from captcha_api.service.observability import logs

    logs.ensure_handler()
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_captcha", False))
    buffer = io.StringIO()
    stream = handler.setStream(buffer)
    yield buffer
    handler.setStream(stream)


@pytest.fixture(scope="session")
def own_style(tmp_path_factory):
    """A folder of another captcha style, labelled by file name: Latin letters and digits, mixed case, 3-6
    characters, drawn with Pillow's own font."""
    import random

    from PIL import Image, ImageDraw, ImageFont

    folder = tmp_path_factory.mktemp("own")
    rng = random.Random(5)
    font = ImageFont.load_default(size=28)
    for i in range(30):
        text = "".join(rng.choice("AbCdeFx39") for _ in range(rng.randint(3, 6)))
        image = Image.new("RGB", (160, 50), (240, 236, 220))
        ImageDraw.Draw(image).text((10 + rng.randint(0, 20), 8), text, font=font, fill=(20, 40, 120))
        image.save(folder / f"{text}_{i}.png")
    return folder
