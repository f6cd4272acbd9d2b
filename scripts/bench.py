"""Speed and footprint benchmark, one run on one machine.

1. In process, on the same images: time per image through the whole read (bytes -> text) at batch 1 and 64 for the
   ONNX and Keras runtimes, split into preprocessing and model time, and ddddocr's ``classification`` when ddddocr
   is installed.
2. Over HTTP, against gunicorn started here on a loopback port with the given number of workers: time from process
   start to the first 200 from /health; /predict latency percentiles and requests per second at concurrency 1 and
   16 (load from wrk); /predict-batch images per second at batch 32; peak RSS of each worker after at least
   10,000 requests.

Prints a table and ends with one JSON line; writes a Markdown report (docs/benchmarks.md by default).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captcha_api.cli import MODEL_HELP, HelpFormatter
from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact
from captcha_api.core.preprocess import preprocess
from captcha_api.core.runtime import Recognizer
from scripts.process import ROOT, GunicornProcess, memory_mb

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "fssp-real"
BATCH = 64
# The soak command (scripts.soak) owns this part of the report; a benchmark run keeps it.
SOAK_START = "<!-- soak:start -->"
SOAK_END = "<!-- soak:end -->"
HTTP_BATCH = 32

# (key in the results, label, direction, threshold): the targets for 2 workers on 2 cores.
TARGETS = (
    ("http_c1_p50_ms", "/predict p50 at concurrency 1 (ms)", "<=", 3.0),
    ("http_c16_rps", "/predict requests/s at concurrency 16", ">=", 600.0),
    ("http_batch_images_per_s", f"/predict-batch images/s (batch {HTTP_BATCH})", ">=", 1000.0),
    ("worker_peak_rss_mb", "peak RSS per worker (MB)", "<=", 150.0),
    ("ready_s", "process start to first 200 from /health (s)", "<=", 2.0),
    ("ratio_to_ddddocr", "in-process time per image / ddddocr's", "<=", 0.25),
)


@dataclass(frozen=True)
class Plan:
    images: int  # how many images to time in process
    seconds: float  # minimum in-process timing per measurement
    load_seconds: int  # each wrk run
    rss_requests: int  # requests served before reading peak RSS
    repeats: int  # wrk runs of /predict at concurrency 1 and 16; the median run is reported

    @classmethod
    def full(cls) -> Plan:
        return cls(images=256, seconds=3.0, load_seconds=10, rss_requests=10_000, repeats=3)

    @classmethod
    def smoke(cls) -> Plan:
        return cls(images=16, seconds=0.2, load_seconds=1, rss_requests=200, repeats=1)


# ---------------------------------------------------------------- images


def labelled_images(data: Path | None, count: int) -> tuple[list[bytes], list[str], str]:
    """(image bytes, texts, where from): a labelled folder if there is one, else generated FSSP-style captchas."""
    if data is not None and data.is_dir():
        from captcha_api.training.data import read_labels

        folder = read_labels(data)
        files, texts = folder.files[:count], folder.texts[:count]
        return [f.read_bytes() for f in files], texts, f"{len(files)} images of {data.name}"
    from captcha_api.training.generator import sample

    blobs, texts = [], []
    for index in range(count):
        image, text = sample(2024, index)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        blobs.append(buffer.getvalue())
        texts.append(text)
    return blobs, texts, f"{count} generated FSSP-style captchas (seed 2024)"


# ---------------------------------------------------------------- in process


def _per_image_ms(work, items: int, seconds: float) -> float:
    """Repeat `work` (which handles `items` images) for at least `seconds`; the median pass, per image, in ms."""
    work()  # warm caches and allocators
    passes, spent = [], 0.0
    while spent < seconds or len(passes) < 3:
        started = time.perf_counter()
        work()
        elapsed = time.perf_counter() - started
        passes.append(elapsed)
        spent += elapsed
    return statistics.median(passes) / items * 1000


def time_recognizer(recognizer: Recognizer, blobs: list[bytes], seconds: float) -> dict:
    arrays = np.stack([preprocess(b) for b in blobs])
    batches = [blobs[i : i + BATCH] for i in range(0, len(blobs), BATCH)]
    one = arrays[:1]
    first = arrays[:BATCH]
    return {
        "read_batch1_ms": _per_image_ms(lambda: [recognizer.read(b) for b in blobs], len(blobs), seconds),
        "read_batch64_ms": _per_image_ms(lambda: [recognizer.read_each(b) for b in batches], len(blobs), seconds),
        "preprocess_ms": _per_image_ms(lambda: [preprocess(b) for b in blobs], len(blobs), seconds),
        "model_batch1_ms": _per_image_ms(lambda: recognizer.runtime(one), 1, seconds),
        "model_batch64_ms": _per_image_ms(lambda: recognizer.runtime(first), len(first), seconds),
        "texts": [r.text for r in recognizer.read_arrays(arrays)],
    }


def time_ddddocr(blobs: list[bytes], seconds: float) -> dict | None:
    if importlib.util.find_spec("ddddocr") is None:
        return None
    import ddddocr

    ocr = ddddocr.DdddOcr(show_ad=False)
    return {
        "read_batch1_ms": _per_image_ms(lambda: [ocr.classification(b) for b in blobs], len(blobs), seconds),
        "texts": [ocr.classification(b) for b in blobs],
        "version": importlib.metadata.version("ddddocr"),
    }


def exact(texts: list[str], truths: list[str]) -> float:
    return sum(t == g for t, g in zip(truths, texts)) / len(truths)


# ---------------------------------------------------------------- HTTP


class Service(GunicornProcess):
    """The service with an API key and limits set beyond what a benchmark sends (the limiter still runs)."""

    def __init__(self, model: Path, runtime: str, workers: int, log_path: Path):
        self.key = secrets.token_hex(16)
        env = {
            "CAPTCHA_API_KEYS": self.key,
            "CAPTCHA_MODEL": str(model),
            "CAPTCHA_RUNTIME": runtime,
            "CAPTCHA_WORKERS": str(workers),
            "CAPTCHA_RATE_LIMIT": "10000000/minute",
            "CAPTCHA_BATCH_RATE_LIMIT": "10000000/minute",
        }
        super().__init__(env, log_path)

    def post(self, path: str, body: bytes, content_type: str) -> dict:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"Content-Type": content_type, "X-API-Key": self.key}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def multipart(field: str, files: list[bytes]) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    parts = []
    for index, data in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{index}.png"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


WRK_SCRIPT = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "{content_type}"
wrk.headers["X-API-Key"] = "{key}"
local file = io.open("{body}", "rb")
wrk.body = file:read("*a")
file:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(
    server: Service,
    path: str,
    body: bytes,
    content_type: str,
    connections: int,
    seconds: int,
    work: Path,
    method: str = "POST",
) -> dict:
    """One wrk run: the same request (POST with `body`, or GET without) for `seconds` over `connections`
    connections; latency in ms."""
    body_file = work / f"body-{secrets.token_hex(4)}"
    body_file.write_bytes(body)
    script = work / f"{body_file.name}.lua"
    script.write_text(WRK_SCRIPT.format(method=method, content_type=content_type, key=server.key, body=body_file))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    command.append(server.url + path)
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
    raw = json.loads(line)
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "connections": connections,
        "requests": raw["requests"],
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p95_ms": raw["p95_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
    }


def median_run(runs: list[dict], key: str) -> dict:
    """The run with the median `key`, keeping every run's figure: on a shared machine one run can be off by 15%."""
    ordered = sorted(runs, key=lambda run: run[key])
    return {**ordered[len(ordered) // 2], "repeats": [round(run[key], 3) for run in runs]}


def run_http(model: Path, runtime: str, workers: int, blobs: list[bytes], texts: list[str], plan: Plan, work: Path):
    server = Service(model, runtime, workers, work / "gunicorn.log").start()
    try:
        ready = server.wait_ready()
        image, text = blobs[0], texts[0]
        single, single_type = multipart("image", [image])
        as_json = json.dumps({"image": base64.b64encode(image).decode()}).encode()
        batch_images = [blobs[i % len(blobs)] for i in range(HTTP_BATCH)]
        batch = json.dumps({"images": [base64.b64encode(b).decode() for b in batch_images]}).encode()
        # The same answers over HTTP as in process, before any load.
        reading = server.post("/predict", single, single_type)
        answers = server.post("/predict-batch", batch, "application/json")["results"]
        checks = {
            "predict_text": reading["prediction"],
            "expected_text": text,
            "batch_correct": sum(r.get("prediction") == texts[i % len(texts)] for i, r in enumerate(answers)),
        }
        runs = {
            "predict_c1": median_run(
                [wrk(server, "/predict", single, single_type, 1, plan.load_seconds, work) for _ in range(plan.repeats)],
                "p50_ms",
            ),
            "predict_c16": median_run(
                [
                    wrk(server, "/predict", single, single_type, 16, plan.load_seconds, work)
                    for _ in range(plan.repeats)
                ],
                "rps",
            ),
            "predict_json_c16": wrk(server, "/predict", as_json, "application/json", 16, plan.load_seconds, work),
            "batch32_c4": wrk(server, "/predict-batch", batch, "application/json", 4, plan.load_seconds, work),
        }
        served = sum(r["requests"] for r in runs.values())
        while served < plan.rss_requests:
            extra = wrk(server, "/predict", single, single_type, 16, plan.load_seconds, work)
            served += extra["requests"]
        pids = server.worker_pids()
        rss = {pid: memory_mb(pid, "VmHWM") for pid in pids}
    finally:
        server.stop()
    return {"ready_s": ready, "checks": checks, "runs": runs, "requests_served": served, "worker_peak_rss_mb": rss}


# ---------------------------------------------------------------- report


def machine() -> dict:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kb = int(meminfo.read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GB"
    versions = {}
    for package in ("onnxruntime", "numpy", "pillow", "flask", "gunicorn", "tensorflow-cpu", "keras", "ddddocr"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    wrk_path = shutil.which("wrk")
    wrk_version = ""
    if wrk_path:
        found = subprocess.run([wrk_path, "-v"], capture_output=True, text=True)
        wrk_version = (found.stdout or found.stderr).split()[1] if (found.stdout or found.stderr).split() else ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "packages": versions,
        "wrk": wrk_version,
    }


def summarise(results: dict) -> dict:
    """The headline figures the targets refer to."""
    onnx = results["in_process"].get("onnx", {})
    out = {}
    http = results.get("http")
    if http:
        runs = http["runs"]
        out["http_c1_p50_ms"] = runs["predict_c1"]["p50_ms"]
        out["http_c16_rps"] = runs["predict_c16"]["rps"]
        out["http_batch_images_per_s"] = runs["batch32_c4"]["rps"] * HTTP_BATCH
        out["worker_peak_rss_mb"] = max(http["worker_peak_rss_mb"].values())
        out["ready_s"] = http["ready_s"]
        out["http_errors"] = sum(r["errors"] for r in runs.values())
    dddd = results["in_process"].get("ddddocr")
    if dddd and onnx:
        out["ratio_to_ddddocr"] = onnx["read_batch1_ms"] / dddd["read_batch1_ms"]
    return out


def verdicts(summary: dict) -> list[tuple[str, float | None, str, float, str]]:
    rows = []
    for key, label, direction, threshold in TARGETS:
        value = summary.get(key)
        if value is None:
            verdict = "not measured"
        elif direction == "<=":
            verdict = "met" if value <= threshold else "missed"
        else:
            verdict = "met" if value >= threshold else "missed"
        rows.append((label, value, direction, threshold, verdict))
    return rows


def _f(value, digits=2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(results: dict) -> list[str]:
    lines = ["### In process, per image (ms)", ""]
    lines.append(
        "| runtime | read, batch 1 | read, batch 64 | preprocessing | model, batch 1 | model, batch 64 | exact match |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for name, figures in results["in_process"].items():
        lines.append(
            f"| {name} | {_f(figures.get('read_batch1_ms'), 3)} | {_f(figures.get('read_batch64_ms'), 3)} "
            f"| {_f(figures.get('preprocess_ms'), 3)} | {_f(figures.get('model_batch1_ms'), 3)} "
            f"| {_f(figures.get('model_batch64_ms'), 3)} | {figures['exact_match']:.1%} |"
        )
    http = results.get("http")
    if http:
        lines += ["", f"### HTTP, gunicorn with {results['workers']} workers ({results['runtime']} runtime)", ""]
        lines.append("| load | connections | requests | requests/s | images/s | p50 ms | p95 ms | p99 ms | errors |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        names = {
            "predict_c1": "/predict, multipart",
            "predict_c16": "/predict, multipart",
            "predict_json_c16": "/predict, JSON base64",
            "batch32_c4": f"/predict-batch, JSON, {HTTP_BATCH} images",
        }
        for key, run in http["runs"].items():
            images = run["rps"] * (HTTP_BATCH if key.startswith("batch") else 1)
            lines.append(
                f"| {names[key]} | {run['connections']} | {run['requests']:,} | {_f(run['rps'], 0)} | {_f(images, 0)} "
                f"| {_f(run['p50_ms'])} | {_f(run['p95_ms'])} | {_f(run['p99_ms'])} | {run['errors']} |"
            )
        rss = ", ".join(f"{v:.1f}" for v in http["worker_peak_rss_mb"].values())
        lines += [
            "",
            f"- ready: {http['ready_s']:.2f} s from process start to the first 200 from /health",
            f"- peak RSS per worker after {http['requests_served']:,} requests: {rss} MB",
        ]
    lines += ["", "### Targets", "", "| target | measured | goal | |", "|---|---:|---:|---|"]
    for label, value, direction, threshold, verdict in verdicts(results["summary"]):
        lines.append(f"| {label} | {_f(value)} | {direction} {threshold:g} | {verdict} |")
    return lines


def markdown(results: dict, command: str) -> str:
    m = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {results['date']}. Rerun it to replace this page; every figure below comes"
        " from that one run.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores visible; memory {m['memory']}; no GPU",
        f"- {m['system']}, Python {m['python']}",
        f"- {packages}; wrk {m['wrk'] or 'not installed'}",
        "",
        "## Method",
        "",
        f"- Images: {results['images']}. The model: `{results['model']}`.",
        "- In process: the median of repeated passes over the same images. *read* is bytes to text (decode,"
        " resize, model, CTC decoding); *preprocessing* and *model* are its parts. ONNX Runtime runs with one"
        " thread, as each worker does by default; Keras with TensorFlow's defaults; ddddocr (`DdddOcr(show_ad=False)"
        ".classification(bytes)`, its ONNX Runtime session at its own defaults) reads one image per call and"
        " cannot batch.",
        f"- HTTP: `gunicorn -c gunicorn.conf.py` with {results['workers']} workers on 127.0.0.1, an API key and the"
        " rate limiter active (limits set high), metrics and JSON logs on, every shipped model loaded. Load from"
        f" `wrk -t1`, on the same cores as the server, runs of {results['load_seconds']} s; /predict at concurrency 1"
        " and 16 is run three times and the median run reported (all three figures in the JSON line: on this shared"
        " virtual machine one run can be 15% off the next); every request sends the same image (or batch). Peak RSS"
        " is each worker's VmHWM.",
        "",
        "## Results",
        "",
        *tables(results),
        "",
    ]
    return "\n".join(lines)


def run(args) -> dict:
    plan = Plan.smoke() if args.smoke else Plan.full()
    model = Path(args.model)
    data = Path(args.data) if args.data else (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
    blobs, texts, source = labelled_images(data, plan.images)
    results: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "images": source,
        "model": str(model),
        "workers": args.workers,
        "runtime": "onnx",
        "load_seconds": plan.load_seconds,
        "smoke": args.smoke,
        "in_process": {},
    }
    artifact = ModelArtifact.at(model)
    keras_path, onnx_path = artifact.keras, artifact.onnx
    runtimes = ["onnx"]
    if not args.no_keras and keras_path.is_file() and importlib.util.find_spec("tensorflow") is not None:
        runtimes.append("keras")
    for name in runtimes:
        recognizer = Recognizer(model, name, threads=1)
        recognizer.warm_up()
        figures = time_recognizer(recognizer, blobs, plan.seconds)
        figures["exact_match"] = exact(figures["texts"], texts)
        results["in_process"][name] = figures
        print(f"in process, {name}: {figures['read_batch1_ms']:.3f} ms an image at batch 1", file=sys.stderr)
    if not args.no_ddddocr:
        dddd = time_ddddocr(blobs, plan.seconds)
        if dddd is not None:
            dddd["exact_match"] = exact(dddd["texts"], texts)
            results["in_process"]["ddddocr"] = dddd
    if "keras" in results["in_process"]:
        onnx, keras = results["in_process"]["onnx"]["texts"], results["in_process"]["keras"]["texts"]
        same = sum(a == b for a, b in zip(onnx, keras))
        results["onnx_keras_same_text"] = f"{same}/{len(blobs)}"
    if args.no_http:
        results["http"] = None
    elif shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); --no-http skips the HTTP part")
    else:
        with tempfile.TemporaryDirectory(prefix="captcha-bench-") as work:
            results["http"] = run_http(onnx_path, "onnx", args.workers, blobs, texts, plan, Path(work))
    results["summary"] = summarise(results)
    return results


def keep_soak_section(page: str, old: str) -> str:
    """The new report, with the soak section of the old one (written by another command) carried over."""
    if SOAK_START in old and SOAK_END in old:
        page += "\n" + SOAK_START + old.split(SOAK_START, 1)[1].split(SOAK_END, 1)[0] + SOAK_END + "\n"
    return page


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description="Time the model in process and the service over HTTP; write a report.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    parser.add_argument(
        "--data", help="labelled folder of images to time (default: ../shared/datasets/fssp-real if there)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the HTTP figures")
    parser.add_argument("--smoke", action="store_true", help="a short run that checks everything works")
    parser.add_argument("--out", help="Markdown report (default: docs/benchmarks.md; none with --smoke)")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras runtime")
    parser.add_argument("--no-ddddocr", action="store_true", help="skip ddddocr even when it is installed")
    parser.add_argument("--no-http", action="store_true", help="in-process figures only")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = run(args)
    print("\n".join(tables(results)))
    out = args.out or (None if args.smoke else str(ROOT / "docs" / "benchmarks.md"))
    if out:
        command = "python -m scripts.bench" + (" --smoke" if args.smoke else "")
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        old = Path(out).read_text(encoding="utf-8") if Path(out).is_file() else ""
        Path(out).write_text(keep_soak_section(markdown(results, command), old), encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    for figures in results["in_process"].values():
        figures.pop("texts", None)
    print(json.dumps(results, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
