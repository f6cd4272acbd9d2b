"""Prometheus metrics at /metrics: what is counted (Flask test client, one process), who may read it, and the
totals under real gunicorn with several workers, whichever worker answers the scrape and across worker recycling."""

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from captcha_api.core.artifact import ModelArtifact
from scripts.process import GunicornProcess, free_port

from .conftest import KEY, OTHER_KEY, ROOT, json_lines, wait_for_workers


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def samples(text: str) -> dict:
    """{(sample name, frozenset of label pairs): value}, read with prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(scraped: dict, name: str, **labels) -> float:
    """The sum of the series of `name` that carry these labels (others, such as a model's version, may differ)."""
    wanted = set(labels.items())
    return sum(v for (sample, given), v in scraped.items() if sample == name and wanted <= given)


def series(scraped: dict, name: str) -> list[dict]:
    return [dict(labels) for sample_name, labels in scraped if sample_name == name]


def scrape(client, **headers) -> dict:
    response = client.get("/metrics", headers={"X-API-Key": KEY, **headers})
    assert response.status_code == 200, response.get_data(as_text=True)
    return samples(response.get_data(as_text=True))


def test_requests_are_counted_by_route_method_and_status(client, png):
    for _ in range(3):
        assert client.post("/predict", json={"image": b64(png)}).status_code == 200
    assert client.post("/predict", json={"image": "!!!"}).status_code == 400
    assert client.get("/info").status_code == 200
    assert client.get("/nope-1").status_code == 404
    assert client.get("/nope-2").status_code == 404
    assert client.get("/predict").status_code == 405
    scraped = scrape(client)
    requests = "captcha_requests_total"
    assert value(scraped, requests, route="/predict", method="POST", status="200") == 3
    assert value(scraped, requests, route="/predict", method="POST", status="400") == 1
    assert value(scraped, requests, route="/info", method="GET", status="200") == 1
    # Paths that match no route share one series, so a scan cannot create a series per path.
    assert value(scraped, requests, route="unmatched", method="GET", status="404") == 2
    assert value(scraped, requests, route="unmatched", method="GET", status="405") == 1
    assert value(scraped, "captcha_request_duration_seconds_count", route="/predict") == 4
    assert value(scraped, "captcha_request_duration_seconds_bucket", route="/predict", le="+Inf") == 4
    assert value(scraped, "captcha_request_duration_seconds_sum", route="/predict") > 0
    assert value(scraped, "captcha_errors_total", code="invalid_base64", scope="request") == 1
    assert value(scraped, "captcha_errors_total", code="not_found", scope="request") == 2
    # The model ran for the three readable images only; the warm-up at load is not counted.
    assert value(scraped, "captcha_inference_duration_seconds_count", model="tiny") == 3
    assert value(scraped, "captcha_inference_duration_seconds_sum", model="tiny") > 0
    assert value(scraped, "captcha_images_total", model="tiny") == 3
    # The scrape counts itself in the next one.
    assert value(scrape(client), requests, route="/metrics", method="GET", status="200") == 1


def test_an_unknown_method_is_counted_as_other(client):
    assert client.open("/health", method="BREW").status_code == 405
    assert value(scrape(client), "captcha_requests_total", route="unmatched", method="other", status="405") == 1


def test_batch_sizes_and_failed_images(client, png):
    body = {"images": [b64(png), b64(png), "%%%not base64", b64(b"not an image")]}
    assert client.post("/predict-batch", json=body).status_code == 200
    assert client.post("/predict-batch", json={"images": [b64(png)] * 9}).status_code == 200
    scraped = scrape(client)
    assert value(scraped, "captcha_batch_size_count") == 2
    assert value(scraped, "captcha_batch_size_sum") == 13
    assert value(scraped, "captcha_batch_size_bucket", le="4.0") == 1
    assert value(scraped, "captcha_batch_size_bucket", le="16.0") == 2
    assert value(scraped, "captcha_errors_total", code="invalid_base64", scope="image") == 1
    assert value(scraped, "captcha_errors_total", code="invalid_image", scope="image") == 1
    assert value(scraped, "captcha_images_total", model="tiny") == 11  # the two bad entries never reach the model
    assert value(scraped, "captcha_inference_duration_seconds_count", model="tiny") == 2  # one model read a request


@pytest.fixture
def two_models(tiny_artifact, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("tiny", "second"):
        for suffix in (".onnx", ".json"):
            shutil.copy(tiny_artifact.with_suffix(suffix), folder / f"{name}{suffix}")
    meta = json.loads((folder / "second.json").read_text())
    meta.update(name="second", version="2.1.0", alphabet=meta["alphabet"][::-1])
    (folder / "second.json").write_text(json.dumps(meta, ensure_ascii=False))
    return folder


def test_model_info_has_one_series_per_served_model(make_app, two_models, png):
    client = make_app(model=two_models / "tiny").test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    served = {m["name"] for m in client.get("/info").get_json()["models"]}
    assert served == {"tiny", "second"}
    assert client.post("/predict?model=second", json={"image": b64(png)}).status_code == 200
    scraped = scrape(client)
    info = sorted(series(scraped, "captcha_model_info"), key=lambda labels: labels["model"])
    version = ModelArtifact.version_of(two_models / "tiny.onnx")  # the same network file, copied: one version
    assert info == [
        {"model": "second", "version": version, "runtime": "onnx", "alphabet_size": "20", "default": "false"},
        {"model": "tiny", "version": version, "runtime": "onnx", "alphabet_size": "20", "default": "true"},
    ]
    assert value(scraped, "captcha_inference_duration_seconds_count", model="second", version=version) == 1
    assert value(scraped, "captcha_inference_duration_seconds_count", model="second") == 1
    assert value(scraped, "captcha_inference_duration_seconds_count", model="tiny") == 0
    assert value(scraped, "captcha_workers") == 1
    assert value(scraped, "captcha_service_info", version="1.0.0") == 1


def test_protected_by_default_needs_the_api_key(make_app):
    client = make_app().test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": "wrong-key-0123456789abcdef"}).status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 200


def test_open_needs_no_key_but_the_api_still_does(make_app):
    client = make_app(metrics="open").test_client()
    response = client.get("/metrics")
    assert response.status_code == 200 and "captcha_requests_total" in response.get_data(as_text=True)
    assert client.get("/info").status_code == 401


def test_off_serves_nothing_and_counts_nothing(make_app):
    app = make_app(metrics="off")
    client = app.test_client()
    assert client.get("/metrics", headers={"X-API-Key": KEY}).status_code == 404
    assert "metrics" not in app.extensions


def test_openmetrics_when_the_scraper_asks(client):
    response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")
    plain = client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain")


def test_metrics_never_show_keys_images_or_request_ids(make_app, png):
    client = make_app(api_keys=[KEY, OTHER_KEY], metrics="open").test_client()
    image = b64(png)
    headers = {"X-API-Key": OTHER_KEY, "X-Request-ID": "secret-request-id"}
    client.post("/predict?model=" + image[:30], json={"image": image}, headers=headers)
    client.post("/predict", json={"image": image}, headers=headers)
    client.post("/predict", json={"image": image}, headers={"X-API-Key": "wrong-" + KEY})
    client.get("/" + image[:30], headers={"X-API-Key": KEY})
    text = client.get("/metrics").get_data(as_text=True)
    for secret in (KEY, OTHER_KEY, "wrong-" + KEY, image[:30], "secret-request-id"):
        assert secret not in text
    label_names = {name for _, pairs in samples(text) for name, _ in pairs}
    known = {"route", "method", "status", "code", "scope", "model", "version", "runtime", "alphabet_size", "default"}
    assert label_names <= known | {"le"}


def test_a_separate_listener_serves_metrics_and_nothing_else(make_app, png):
    # Without gunicorn the listener is told by the port in the request (the test client's base_url).
    client = make_app(metrics="open", metrics_port=9100, trusted_proxies=1).test_client()
    on_api = {"X-API-Key": KEY}
    assert client.get("/metrics", headers=on_api).status_code == 404
    assert client.get("/metrics", base_url="http://localhost:9100").status_code == 200
    assert client.get("/health", base_url="http://localhost:9100").status_code == 404
    response = client.post("/predict", json={"image": b64(png)}, headers=on_api, base_url="http://localhost:9100")
    assert response.status_code == 404
    assert client.post("/predict", json={"image": b64(png)}, headers=on_api).status_code == 200
    # A client cannot reach the metrics listener's view through the API's port with a forwarded header.
    forged = {"X-Forwarded-Host": "localhost:9100", "X-Forwarded-Port": "9100"}
    assert client.get("/metrics", headers={**on_api, **forged}).status_code == 404


def test_the_recognition_core_times_its_model_calls_without_web_imports(tiny_artifact):
    code = (
        "import sys, numpy as np\n"
        "from captcha_api.core.runtime import Recognizer\n"
        "from captcha_api.core.preprocess import INPUT_SHAPE\n"
        f"r = Recognizer({str(tiny_artifact)!r}, 'onnx')\n"
        "calls = []\n"
        "r.on_model_call = lambda seconds, images: calls.append((seconds, images))\n"
        "r.read_arrays(np.zeros((20, *INPUT_SHAPE), np.float32))\n"
        "assert len(calls) == 1 and calls[0][0] > 0 and calls[0][1] == 20, calls\n"
        "web = sorted(m for m in ('flask', 'werkzeug', 'prometheus_client', 'pythonjsonlogger') if m in sys.modules)\n"
        "assert not web, web\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# Real gunicorn, several workers: every worker keeps its own values, and a scrape reaches one worker.


def get(url: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def predict(url: str, image: bytes, key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    body = json.dumps({"image": b64(image)}).encode()
    request = urllib.request.Request(url + "/predict", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status


@pytest.fixture(scope="module")
def generated_png():
    from captcha_api.training.generator import sample

    from .conftest import encode

    return encode(sample(seed=31, index=0)[0], "PNG")


def answered_by(log: str, request_id: str) -> int:
    return next(r["pid"] for r in json_lines(log) if r.get("request_id") == request_id)


@pytest.mark.integration
def test_totals_are_the_same_whichever_worker_answers_the_scrape(tmp_path, generated_png):
    metrics_port = free_port()
    env = {
        "CAPTCHA_API_KEYS": KEY,
        "CAPTCHA_WORKERS": "2",
        "CAPTCHA_METRICS": "open",
        "CAPTCHA_METRICS_PORT": str(metrics_port),
    }
    service = GunicornProcess(env, tmp_path / "server.log")
    service.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # gunicorn.conf.py makes a folder of its own
    with service:
        assert len(wait_for_workers(service.log, 2)) == 2
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        sent = 30
        assert [predict(service.url, generated_png, KEY) for _ in range(sent)] == [200] * sent
        answering, totals = set(), []
        # Each scrape goes to whichever worker accepts it; scrape until both have answered (a bounded number).
        for attempt in range(200):
            status, text = get(metrics_url, {"X-Request-ID": f"scrape-{attempt}"})
            assert status == 200
            scraped = samples(text)
            totals.append(value(scraped, "captcha_requests_total", route="/predict", method="POST", status="200"))
            assert value(scraped, "captcha_inference_duration_seconds_count", model="fssp") == sent
            assert value(scraped, "captcha_request_duration_seconds_count", route="/predict") == sent
            assert value(scraped, "captcha_workers") == 2
            # one series per served model (every model in model/): the workers' series fold into one each
            served = sorted(p.stem for p in (ROOT / "model").glob("*.json"))
            assert sorted(labels["model"] for labels in series(scraped, "captcha_model_info")) == served
            answering.add(answered_by(service.log(), f"scrape-{attempt}"))
            if len(answering) == 2 and attempt >= 4:
                break
        assert answering == set(service.worker_pids())
        assert set(totals) == {sent}
        # The separate listener serves /metrics only, and the API's port does not serve it.
        assert get(f"http://127.0.0.1:{metrics_port}/info", {"X-API-Key": KEY})[0] == 404
        assert get(service.url + "/metrics", {"X-API-Key": KEY})[0] == 404
        folder = next(
            r["message"].rsplit(" ", 1)[1] for r in json_lines(service.log()) if "values are kept in" in r["message"]
        )
        assert Path(folder).is_dir() and list(Path(folder).glob("counter_*.db"))
    assert not Path(folder).exists()  # the temporary folder goes with the service


@pytest.mark.integration
def test_counts_survive_worker_recycling_and_dead_workers_leave_the_live_gauges(tmp_path, generated_png):
    folder = tmp_path / "prometheus"
    folder.mkdir()
    (folder / "counter_4242.db").write_bytes(b"left by an earlier run")  # wiped at start: it would break a scrape
    env = {
        "CAPTCHA_API_KEYS": "",
        "CAPTCHA_WORKERS": "2",
        "CAPTCHA_MAX_REQUESTS": "5",
        "CAPTCHA_MAX_REQUESTS_JITTER": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    sent = 20
    with GunicornProcess(env, tmp_path / "server.log") as service:
        assert not (folder / "counter_4242.db").exists()
        statuses = []
        for _ in range(sent // 5):
            statuses += [predict(service.url, generated_png) for _ in range(5)]
            time.sleep(1.5)  # a worker past its count stops accepting within a second and is replaced
        assert statuses == [200] * sent
        records = json_lines(service.log())
        served_by = {r["pid"] for r in records if r.get("path") == "/predict"}
        assert len(served_by) >= 3, records  # 20 requests, 5 a worker: workers were replaced on the way
        for _ in range(3):
            status, text = get(service.url + "/metrics")
            assert status == 200
            scraped = samples(text)
            assert value(scraped, "captcha_requests_total", route="/predict", method="POST", status="200") == sent
            assert value(scraped, "captcha_inference_duration_seconds_count", model="fssp") == sent
            assert value(scraped, "captcha_images_total", model="fssp") == sent
        log = service.log()
    # Every worker that ever served keeps its counter file; gunicorn's child_exit removed every dead worker's live
    # gauges (all workers are dead once the service has stopped).
    counter_pids = {int(p.stem.split("_")[1]) for p in folder.glob("counter_*.db")}
    assert served_by <= counter_pids
    assert list(folder.glob("gauge_live*.db")) == [], log
    assert os.listdir(folder)  # a folder given by the operator stays, with its files, for a look after the run
