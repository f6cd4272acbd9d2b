"""A model's life against the real gunicorn: files left in the served folder never take the service down, a default
model that is not there stops start-up with one line, and every reading names its model's version."""

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import pytest

from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact
from scripts.process import GunicornProcess, free_port, memory_mb

from .conftest import ROOT, json_lines, wait_for_workers

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

SAMPLE = ROOT / "examples" / "d25sg.png"  # reads д25сг
OPEN = {"CAPTCHA_API_KEYS": "", "CAPTCHA_RATE_LIMIT": "", "CAPTCHA_BATCH_RATE_LIMIT": "", "CAPTCHA_WORKERS": "2"}


def predict(url: str, image: bytes) -> tuple[int, dict, str]:
    boundary = "captcha-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "/predict", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.status, json.loads(answer.read()), answer.headers.get("X-Model-Version", "")


@pytest.fixture
def cluttered_folder(tmp_path):
    """The shipped FSSP model, with what a training run or an operator may leave beside it: a Keras-only model
    (a trained network never exported) and a corrupt ONNX file."""
    folder = tmp_path / "models"
    folder.mkdir()
    shipped = ModelArtifact(DEFAULT_MODEL)
    for path in (shipped.onnx, shipped.metadata_path):
        shutil.copy(path, folder / path.name)
    shutil.copy(shipped.keras, folder / "trained.keras")
    shutil.copy(shipped.metadata_path, folder / "trained.json")
    (folder / "broken.onnx").write_bytes(b"\x08\x07 half a file")
    shutil.copy(shipped.metadata_path, folder / "broken.json")
    return folder


def test_files_left_in_the_folder_never_take_the_service_down(cluttered_folder, tmp_path):
    env = {**OPEN, "CAPTCHA_MODEL": str(cluttered_folder / "fssp")}
    with GunicornProcess(env, tmp_path / "gunicorn.log") as server:
        workers = wait_for_workers(server.log, 2)
        assert len(workers) == 2
        with urllib.request.urlopen(server.url + "/info", timeout=10) as answer:
            info = json.loads(answer.read())
        assert [m["name"] for m in info["models"]] == ["fssp"]
        reasons = {m["name"]: m["reason"] for m in info["not_served"]}
        assert set(reasons) == {"trained", "broken"}
        assert reasons["trained"].startswith("no trained.onnx: CAPTCHA_RUNTIME=onnx serves ONNX models only")
        assert reasons["broken"].startswith("cannot load the ONNX model")
        version = ModelArtifact.version_of(cluttered_folder / "fssp.onnx")
        image = SAMPLE.read_bytes()
        for _ in range(200):
            status, body, served_by = predict(server.url, image)
            assert (status, body["prediction"], served_by) == (200, "д25сг", version)
        assert set(server.worker_pids()) == workers  # no worker recycled
        rss = [memory_mb(pid) for pid in workers]
        assert all(mb < 150 for mb in rss), rss  # no TensorFlow pulled in by the Keras file
        log = server.log()
    assert "recycling" not in log and "(keras runtime)" not in log
    records = json_lines(log)
    skipped = [r for r in records if r["logger"] == "captcha_api.service.model_set"]
    assert len(skipped) == 4 and all(r["level"] == "ERROR" for r in skipped)  # one line per model, per worker


def test_a_default_model_that_is_not_there_stops_start_up_with_one_line(tmp_path):
    missing = tmp_path / "nope"
    env = {**OPEN, "CAPTCHA_MODEL": str(missing), "CAPTCHA_HOST": "127.0.0.1", "CAPTCHA_PORT": str(free_port())}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip().splitlines()
    assert output == [
        f"error: CAPTCHA_MODEL={missing}: no model there ({missing}.json and {missing}.onnx not found; "
        "CAPTCHA_RUNTIME=onnx serves NAME.json with NAME.onnx)"
    ]
