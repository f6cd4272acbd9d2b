"""The real service under gunicorn on a loopback port, exercised over HTTP, including the README's curl lines."""

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from captcha_api.training.data import read_labels
from scripts.process import GunicornProcess, free_port, memory_mb

from .conftest import ROOT, encode, json_lines, wait_for_workers

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml


def http(method, url, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def server_log(tmp_path_factory):
    return tmp_path_factory.mktemp("gunicorn") / "server.log"


@pytest.fixture(scope="module")
def server(server_log):
    env = {"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "2"}
    with GunicornProcess(env, server_log) as service:
        yield service.url


def test_health_and_info(server):
    assert http("GET", server + "/health") == (200, {"status": "ok", "model_loaded": True, "version": "1.0.0"})
    status, info = http("GET", server + "/info")
    assert status == 200 and info["model"]["name"] == "fssp" and info["model"]["runtime"] == "onnx"


def test_real_captchas_over_http(server, fssp_real):
    folder = read_labels(fssp_real)
    images = [base64.b64encode(p.read_bytes()).decode() for p in folder.files[:64]]
    correct = 0
    for image, text in zip(images[:32], folder.texts[:32]):
        status, body = http("POST", server + "/predict", {"image": image})
        assert status == 200
        correct += body["prediction"] == text
    assert correct >= 30
    status, body = http("POST", server + "/predict-batch", {"images": images})
    assert status == 200 and body["total"] == 64
    assert sum(r["prediction"] == t for r, t in zip(body["results"], folder.texts)) >= 60


def loaded_model_pids(log: str) -> set[int]:
    records = json_lines(log)
    return {r["pid"] for r in records if r["logger"] == "captcha_api.core.runtime" and "loaded model" in r["message"]}


def test_each_worker_loads_the_model_and_logs_requests_in_json(server, server_log):
    http("GET", server + "/health?probe=1", headers={"X-Request-ID": "trace-me-42"})
    workers = wait_for_workers(server_log.read_text, 2)
    records = json_lines(server_log.read_text())  # every line, gunicorn's own included, is one JSON object
    assert len(workers) == 2, records  # CAPTCHA_WORKERS=2, one model per worker process
    line = next(r for r in records if r.get("request_id") == "trace-me-42")
    assert line["logger"] == "captcha_api.access" and line["level"] == "INFO"
    assert (line["method"], line["path"], line["status"], line["remote_addr"]) == ("GET", "/health", 200, "127.0.0.1")
    assert line["pid"] in workers and 0 <= line["latency_ms"] < 60_000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert any(r["logger"] == "gunicorn.error" and "Booting worker" in r["message"] for r in records)


def test_the_request_id_is_returned_over_http(server):
    request = urllib.request.Request(server + "/health", headers={"X-Request-ID": "from-the-client.1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Request-ID"] == "from-the-client.1"
    with urllib.request.urlopen(server + "/health", timeout=30) as response:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_bad_input_over_http_leaves_workers_alive(server):
    for body in ({"image": "!!!"}, {"image": base64.b64encode(b"GIF89a trash").decode()}, {"nothing": 1}):
        status, answer = http("POST", server + "/predict", body)
        assert 400 <= status < 500 and answer["success"] is False
    assert http("GET", server + "/health")[0] == 200


# The pages whose curl lines a reader runs against the service: the README's example, and the API's every call.
CURL_PAGES = ("README.md", "docs/api.md")


def readme_curl_lines(page: str | None = None) -> list[str]:
    """The curl lines of the bash blocks of one page, or of every page of CURL_PAGES."""
    lines = []
    for name in (page,) if page else CURL_PAGES:
        text = (ROOT / name).read_text(encoding="utf-8")
        blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S)
        lines += [line.strip() for block in blocks for line in block.splitlines() if line.strip().startswith("curl ")]
    return lines


EXAMPLES = ROOT / "examples"


def example_labels() -> dict[str, str]:
    """The sample captchas of examples/ and their texts, from the table of examples/README.md."""
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([^`/]+\.png)` \| (\S+) \|$", text, flags=re.M))


def test_every_sample_captcha_is_labelled_and_licensed():
    labels = example_labels()
    assert len(labels) >= 3 and "d25sg.png" in labels, labels
    assert sorted(labels) == sorted(path.name for path in EXAMPLES.glob("*.png"))
    # The MIT licence of their origin travels with them: its text and the copyright line.
    licence = (EXAMPLES / "LICENSE").read_text(encoding="utf-8")
    assert "Copyright (c) 2020 Gleb Vazhenin" in licence and "Permission is hereby granted" in licence
    assert "github.com/punkerpunker/captcha_solver" in (EXAMPLES / "README.md").read_text(encoding="utf-8")


def test_readme_curl_lines_work_as_written(server):
    if not shutil.which("curl"):
        pytest.fail("curl is not installed (make install-system installs it)")
    assert readme_curl_lines("README.md"), "the README's curl example is gone"
    lines = readme_curl_lines()
    assert len(lines) >= 4
    labels = example_labels()
    port = server.rsplit(":", 1)[1]
    for line in lines:
        command = line.replace("localhost:5000", f"127.0.0.1:{port}")
        # As a reader runs them: from the project's root, on the sample captchas shipped in examples/.
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (line, result.stderr)
        body = json.loads(result.stdout)
        if "/predict" in line:
            images = set(re.findall(r"examples/([^\s\"\\)]+)", line))
            assert len(images) == 1 and images <= set(labels), (line, "not one sample of examples/", labels)
            text = labels[images.pop()]
        if "/predict-batch" in line:
            assert all(r["prediction"] == text for r in body["results"]), body
        elif "/predict" in line:
            assert body["prediction"] == text, body
            assert text in result.stdout  # readable Cyrillic in the raw answer, not \u escapes
        else:
            assert "success" in body or "status" in body or "name" in body


def test_gunicorn_refuses_to_run_open_on_a_public_address():
    env = {**os.environ, "CAPTCHA_HOST": "0.0.0.0", "CAPTCHA_PORT": str(free_port()), "CAPTCHA_API_KEYS": ""}
    env.pop("CAPTCHA_ALLOW_OPEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "CAPTCHA_ALLOW_OPEN" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def generated_png():
    from captcha_api.training.generator import sample

    from .conftest import encode

    return encode(sample(seed=31, index=0)[0], "PNG")


def _multipart_predict(url: str, image: bytes) -> int:
    boundary = "captchaboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="c.png"\r\n\r\n'.encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        url + "/predict",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:  # an answer all the same (a blank image is 422 unreadable)
        error.close()
        return error.code


def test_a_worker_over_the_memory_cap_is_recycled_without_dropping_requests(tmp_path, generated_png):
    """A cap a little above what a worker takes once loaded; a large image (3.3 megapixels, one colour: a small
    PNG that decodes to 10 MB) takes every worker past it, so each request lands on a fresh worker."""
    env = {"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "1", "CAPTCHA_LOG_FORMAT": "text"}
    with GunicornProcess(env, tmp_path / "measure.log") as service:
        loaded_mb = memory_mb(service.worker_pids()[0], "VmHWM")
    cap = int(loaded_mb) + 6
    large = encode(Image.new("RGB", (3300, 1000), (200, 190, 180)), "PNG")
    with GunicornProcess({**env, "CAPTCHA_MAX_WORKER_RSS_MB": str(cap)}, tmp_path / "server.log") as service:
        statuses = []
        for _ in range(3):
            # A worker marked for recycling finishes what it holds and stops accepting within a second, then the
            # master starts another: each request here lands on a fresh worker.
            before = service.worker_pids()
            statuses.append(_multipart_predict(service.url, large))
            wait_for_new_worker(service, before)
        assert statuses == [422, 422, 422]  # answered: one colour reads as no characters, unreadable
        assert _multipart_predict(service.url, generated_png) == 200
        log = service.log()
    assert len(re.findall(rf"over CAPTCHA_MAX_WORKER_RSS_MB={cap}: recycling it", log)) == 3, log
    assert len(re.findall(r"INFO \d+ captcha_api.access: POST /predict 422 \d+\.\dms id=[0-9a-f]{32}\n", log)) == 3, log
    assert len(re.findall(r"INFO \d+ captcha_api.access: POST /predict 200 \d+\.\dms id=[0-9a-f]{32}\n", log)) == 1, log


def test_a_worker_over_the_cap_once_loaded_says_so_once_and_is_not_recycled_in_a_loop(tmp_path, generated_png):
    env = {"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "1", "CAPTCHA_MAX_WORKER_RSS_MB": "1"}
    with GunicornProcess(env, tmp_path / "server.log") as service:
        worker = service.worker_pids()
        assert [_multipart_predict(service.url, generated_png) for _ in range(6)] == [200] * 6
        assert service.worker_pids() == worker
        log = service.log()
    assert log.count("once its models are loaded, over CAPTCHA_MAX_WORKER_RSS_MB=1") == 1, log
    assert "recycling it" not in log


def test_workers_are_recycled_after_max_requests(tmp_path, generated_png):
    env = {
        "CAPTCHA_API_KEYS": "",
        "CAPTCHA_WORKERS": "1",
        "CAPTCHA_MAX_REQUESTS": "4",
        "CAPTCHA_MAX_REQUESTS_JITTER": "0",
    }
    with GunicornProcess(env, tmp_path / "server.log") as service:
        statuses = []
        for _ in range(2):
            before = service.worker_pids()
            statuses += [_multipart_predict(service.url, generated_png) for _ in range(4)]
            wait_for_new_worker(service, before)
        statuses += [_multipart_predict(service.url, generated_png) for _ in range(2)]
        log = service.log()
    assert statuses == [200] * 10
    assert len(loaded_model_pids(log)) >= 3, log


def wait_for_new_worker(service, before: list[int], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and service.worker_pids() in ([], before):
        time.sleep(0.05)
    assert service.worker_pids() not in ([], before), service.log()


def test_the_default_cap_leaves_a_serving_worker_alone(tmp_path, generated_png):
    with GunicornProcess({"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "1"}, tmp_path / "server.log") as service:
        first = service.worker_pids()
        assert [_multipart_predict(service.url, generated_png) for _ in range(20)] == [200] * 20
        assert service.worker_pids() == first
