"""The benchmark runs end to end in smoke mode (no timing is asserted, only that every figure is there)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from scripts.bench import TARGETS, multipart, verdicts

from .conftest import ROOT

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml


def test_multipart_body_is_what_the_service_parses(client, png):
    body, content_type = multipart("image", [png])
    response = client.post("/predict", data=body, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    body, content_type = multipart("images", [png, png, png])
    response = client.post("/predict-batch", data=body, content_type=content_type)
    assert response.get_json()["total"] == 3


def test_verdicts_compare_in_the_right_direction():
    summary = {"http_c1_p50_ms": 2.0, "http_c16_rps": 500.0, "ready_s": 2.5}
    found = {label: verdict for label, _, _, _, verdict in verdicts(summary)}
    labels = {key: label for key, label, _, _ in TARGETS}
    assert found[labels["http_c1_p50_ms"]] == "met"
    assert found[labels["http_c16_rps"]] == "missed"
    assert found[labels["ready_s"]] == "missed"
    assert found[labels["worker_peak_rss_mb"]] == "not measured"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if shutil.which("wrk") is None:
        if os.environ.get("CI"):
            pytest.fail("wrk is not installed; CI installs it with apt (Makefile APT_PACKAGES)")
        pytest.skip("wrk is not installed (Debian: apt-get install wrk)")
    report = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.bench", "--smoke", "--out", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), report.read_text(encoding="utf-8"), done.stdout


def test_smoke_run_measures_every_part(smoke):
    result, _, _ = smoke
    assert result["smoke"] is True
    onnx = result["in_process"]["onnx"]
    for key in ("read_batch1_ms", "read_batch64_ms", "preprocess_ms", "model_batch1_ms", "model_batch64_ms"):
        assert onnx[key] > 0
    assert onnx["exact_match"] >= 0.9  # the shipped model on real (or generated) FSSP captchas
    http = result["http"]
    assert http["checks"]["batch_correct"] >= 28
    assert len(http["worker_peak_rss_mb"]) == 2 and min(http["worker_peak_rss_mb"].values()) > 10
    assert http["requests_served"] >= 200
    assert 0 < http["ready_s"] < 60
    for name, run in http["runs"].items():
        assert run["requests"] > 0, name
        assert run["errors"] == 0, name
        assert run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
    assert set(result["summary"]) >= {"http_c1_p50_ms", "http_c16_rps", "worker_peak_rss_mb", "ready_s"}


def test_smoke_run_compares_runtimes_and_ddddocr_when_installed(smoke):
    result, _, _ = smoke
    runtimes = result["in_process"]
    if "keras" in runtimes:
        same, total = map(int, result["onnx_keras_same_text"].split("/"))
        assert same == total
    if "ddddocr" in runtimes:
        assert runtimes["ddddocr"]["read_batch1_ms"] > 0
        assert result["summary"]["ratio_to_ddddocr"] > 0


def test_report_describes_the_machine_and_every_target(smoke):
    _, report, stdout = smoke
    assert "## Machine" in report and "cores" in report
    for _, label, _, _ in TARGETS:
        assert label in report
        assert label in stdout


def test_soak_smoke_run_measures_load_and_memory(smoke, tmp_path):
    """The soak command against a real gunicorn: no errors, RSS sampled per worker, the same workers throughout;
    it writes only its own section of the report, and a benchmark run keeps that section."""
    _, report_text, _ = smoke
    report = tmp_path / "benchmarks.md"
    report.write_text(report_text, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "scripts.soak", "--smoke", "--out", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["load"]["requests"] > 0 and result["load"]["errors"] == 0
    assert result["soak"]["requests"] > 0 and result["soak"]["errors"] == 0
    assert result["soak"]["same_workers_throughout"] is True
    assert len(result["soak"]["baseline_rss_mb"]) == 2 and len(result["soak"]["rss_mb_samples"]) == 2
    page = report.read_text(encoding="utf-8")
    assert page.startswith(report_text.rstrip("\n")) and page.count("## Load and soak") == 1
    from scripts.soak import write_section

    write_section(report, "<!-- soak:start -->\n## Load and soak\nagain\n<!-- soak:end -->\n")
    again = report.read_text(encoding="utf-8")
    assert again.count("## Load and soak") == 1 and "again" in again and again.startswith(report_text.rstrip("\n"))


def test_a_benchmark_run_keeps_the_soak_section():
    from scripts.bench import keep_soak_section

    old = "# Benchmarks\nold figures\n<!-- soak:start -->\n## Load and soak\nsoaked\n<!-- soak:end -->\n"
    page = keep_soak_section("# Benchmarks\nnew figures\n", old)
    assert "new figures" in page and "old figures" not in page and page.count("soaked") == 1
    assert keep_soak_section("# Benchmarks\nnew\n", "# Benchmarks\nno soak yet\n") == "# Benchmarks\nnew\n"
