"""Before and after a change to the request path, on a noisy machine: gunicorn from two checkouts, run in turns.

    git worktree add /tmp/before <commit>
    python -m scripts.compare_serving /tmp/before .          # from the project's root; wrk and ../shared needed

Each round starts each checkout's service (`gunicorn -c gunicorn.conf.py`, 2 workers, an API key, limits set high,
as the benchmark does) on a loopback port and loads /predict with one real captcha (multipart) from wrk: a warm-up,
then 10 s at concurrency 1 and 10 s at 16, and GET /health for 10 s at concurrency 1 (the cost of the
request path without a model). Runs alternate between the checkouts, so a slower minute of a shared
machine hurts both; the medians over the rounds are printed last, with every run's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scripts.bench import DEFAULT_DATA, labelled_images, multipart, wrk
from scripts.process import free_port

KEY = "compare-key-0123456789abcdef"


class _Target:
    """What bench.wrk needs of a service."""

    def __init__(self, url: str):
        self.url, self.key = url, KEY


def measure(tree: Path, body: bytes, content_type: str, seconds: int) -> dict:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "CAPTCHA_API_KEYS": KEY,
        "CAPTCHA_RATE_LIMIT": "1000000/minute",
        "CAPTCHA_BATCH_RATE_LIMIT": "1000000/minute",
        "CAPTCHA_WORKERS": "2",
        "CAPTCHA_HOST": "127.0.0.1",
        "CAPTCHA_PORT": str(port),
    }
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as work, open(Path(work) / "server.log", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=tree, env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(url + "/health", timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError(f"{tree}: the service did not start") from None
                    time.sleep(0.05)
            time.sleep(1)  # both workers up
            wrk(_Target(url), "/predict", body, content_type, 1, 3, Path(work))
            c1 = wrk(_Target(url), "/predict", body, content_type, 1, seconds, Path(work))
            c16 = wrk(_Target(url), "/predict", body, content_type, 16, seconds, Path(work))
            health = wrk(_Target(url), "/health", b"", "text/plain", 1, seconds, Path(work), method="GET")
        finally:
            server.terminate()
            server.wait(60)
    return {
        "c1_p50_ms": c1["p50_ms"],
        "c16_rps": round(c16["rps"], 1),
        "health_c1_p50_ms": health["p50_ms"],
        "errors": c1["errors"] + c16["errors"] + health["errors"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.compare_serving", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path, help="checkout of the code before the change")
    parser.add_argument("after", type=Path, help="checkout of the code after it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    args = parser.parse_args(argv)
    blobs, _, _ = labelled_images(DEFAULT_DATA, 1)
    body, content_type = multipart("image", blobs[:1])
    runs = {"before": [], "after": []}
    for round_ in range(args.rounds):
        for name in runs:
            figures = measure(getattr(args, name).resolve(), body, content_type, args.seconds)
            runs[name].append(figures)
            print(json.dumps({"round": round_, name: figures}), flush=True)
    summary = {
        name: {
            "c1_p50_ms": statistics.median(r["c1_p50_ms"] for r in results),
            "c16_rps": statistics.median(r["c16_rps"] for r in results),
            "health_c1_p50_ms": statistics.median(r["health_c1_p50_ms"] for r in results),
            "errors": sum(r["errors"] for r in results),
        }
        for name, results in runs.items()
    }
    print(json.dumps({"median": summary, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
