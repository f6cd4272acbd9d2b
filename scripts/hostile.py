"""Hostile clients against the service as deployed (gunicorn -c gunicorn.conf.py on a loopback port), with figures.

    python -m scripts.hostile                        # from the project's root; one JSON line per attack
    python -m scripts.hostile --out docs/hostile.md  # and a Markdown report of the same run

1. slow clients: connections that send nothing, that drip a header line a second, and that send part of a body and
   stall, held open while a normal client probes /health and /predict: the probe's latency percentiles;
2. a progressive JPEG of thousands of cheap scans (a "scan bomb"), alone and four to a batch: status and time;
3. refused JSON bodies of 1 MB (no image field): each worker's resident memory before and after 200 of them, and
   a body of a million empty arrays: status and the worker's peak memory.

Every load goes to 127.0.0.1 only, bounded in count and time. The tests (tests/test_hostile.py) run the same
functions with smaller counts.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import http.client
import io
import json
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from scripts.process import GunicornProcess, memory_mb


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's segments in order, each with its bytes (a scan with its entropy-coded data)."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            break
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xDA:  # the scan's data runs to the next marker that is not a stuffed 0xFF or a restart
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, data[i:end]))
        i = end
    return out


def scan_bomb(scans: int, side: int = 2000) -> bytes:
    """A progressive JPEG of `side` x `side` grey pixels whose smallest scan (14 bytes) is repeated `scans` times:
    small to send, and each scan makes the decoder walk the whole image again."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 128).save(buffer, "JPEG", progressive=True, quality=90)
    segments = _segments(buffer.getvalue())
    head = b"".join(seg for marker, seg in segments if marker != 0xDA)
    scan_list = [seg for marker, seg in segments if marker == 0xDA]
    return b"\xff\xd8" + head + b"".join(scan_list) + min(scan_list[1:], key=len) * scans + b"\xff\xd9"


def request(url: str, method: str, path: str, body: bytes | None = None, headers=None, timeout: float = 60):
    """(status, parsed JSON or None, seconds) of one request on a fresh connection."""
    host, port = url.removeprefix("http://").split(":")
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    return response.status, parsed, time.perf_counter() - started


def post_json(url: str, path: str, payload, headers=None, timeout: float = 60):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request(url, "POST", path, body, {"Content-Type": "application/json", **(headers or {})}, timeout)


def slow_clients(url: str, image: bytes, idle: int = 20, dripping: int = 20, stalled: int = 10, seconds: float = 12):
    """Hold `idle` + `dripping` + `stalled` connections open (reopening any the server closes) while probing
    /health and /predict one at a time; returns the probes' latency figures in ms and how many failed."""
    host, port = url.removeprefix("http://").split(":")
    stop = time.monotonic() + seconds
    kinds = ["idle"] * idle + ["drip"] * dripping + ["stall"] * stalled

    def open_one(kind: str) -> socket.socket:
        sock = socket.create_connection((host, int(port)))
        if kind == "drip":
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        elif kind == "stall":
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n"
                b'\r\n{"image": "'
            )
        return sock

    held = [open_one(kind) for kind in kinds]
    reopened = 0

    def keep_dripping():
        nonlocal reopened
        while time.monotonic() < stop:
            for index, kind in enumerate(kinds):
                if kind == "idle":
                    continue
                try:
                    held[index].sendall(b"X-Slow: 1\r\n" if kind == "drip" else b"A")
                except OSError:  # closed by the server's deadline: the attacker comes back
                    held[index].close()
                    held[index] = open_one(kind)
                    reopened += 1
            time.sleep(1)

    dripper = threading.Thread(target=keep_dripping, daemon=True)
    dripper.start()
    body = json.dumps({"image": base64.b64encode(image).decode()}).encode()
    latencies, failures = [], 0
    while time.monotonic() < stop:
        for method, path, payload in (("GET", "/health", None), ("POST", "/predict", body)):
            try:
                status, _, took = request(url, method, path, payload, {"Content-Type": "application/json"}, timeout=5)
                failures += status != 200
                latencies.append(took * 1000)
            except OSError:
                failures += 1
        time.sleep(0.02)
    dripper.join()
    for sock in held:
        sock.close()
    latencies.sort()
    return {
        "connections": len(kinds),
        "probes": len(latencies) + failures,
        "failed": failures,
        "p50_ms": round(statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)], 2) if latencies else None,
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "reconnects": reopened,
    }


def _outcome(url: str, path: str, payload) -> dict:
    """Status, error codes and time of one request; a connection the server dropped is reported, not raised."""
    started = time.perf_counter()
    try:
        status, body, took = post_json(url, path, payload)
    except (OSError, http.client.HTTPException) as error:
        return {"status": None, "error": repr(error), "s": round(time.perf_counter() - started, 3)}
    body = body or {}
    codes = [r.get("error", {}).get("code") for r in body.get("results", [])] or [body.get("error", {}).get("code")]
    return {"status": status, "codes": codes, "s": round(took, 3)}


def scan_bombs(url: str, scans: int = 30000) -> dict:
    bomb = base64.b64encode(scan_bomb(scans)).decode()
    return {
        "bytes": len(bomb) * 3 // 4,
        "scans": scans,
        "predict": _outcome(url, "/predict", {"image": bomb}),
        "batch_of_4": _outcome(url, "/predict-batch", {"images": [bomb] * 4}),
        "health_after": request(url, "GET", "/health", timeout=60)[0],
    }


def refused_bodies(service: GunicornProcess, count: int = 200, size: int = 1_000_000) -> dict:
    """`count` JSON bodies of `size` bytes without an image field: the workers' resident memory before and after."""
    body = json.dumps({"padding": "a" * size}).encode()
    for _ in range(10):  # warm both workers up first: their first requests allocate for good
        post_json(service.url, "/predict", body)
    pids = service.worker_pids()
    before = {pid: round(memory_mb(pid), 1) for pid in pids}
    statuses = set()
    for _ in range(count):
        statuses.add(post_json(service.url, "/predict", body)[0])
    after = {pid: round(memory_mb(pid), 1) for pid in pids}
    return {
        "bodies": count,
        "body_bytes": len(body),
        "statuses": sorted(statuses),
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": round(sum(after.values()) - sum(before.values()), 1),
    }


def many_values(service: GunicornProcess) -> dict:
    """A 15 MB body of empty JSON arrays (about five million): refused before they are built."""
    body = b'{"images": [' + b"[]," * 5_000_000 + b"[]]}"
    pids = service.worker_pids()
    status, payload, took = post_json(service.url, "/predict", body)
    return {
        "body_bytes": len(body),
        "status": status,
        "code": (payload or {}).get("error", {}).get("code"),
        "s": round(took, 3),
        "worker_peak_mb": {pid: round(memory_mb(pid, "VmHWM"), 1) for pid in pids},
    }


def sample_image() -> bytes:
    from captcha_api.training.generator import sample

    buffer = io.BytesIO()
    sample(seed=1, index=0)[0].save(buffer, "PNG")
    return buffer.getvalue()


def report(results: dict) -> str:
    from scripts.bench import machine

    host = machine()
    slow, bomb = results["slow_clients"], results["scan_bomb"]
    bodies, values = results["refused_bodies"], results["many_values"]
    return "\n".join(
        [
            "# Hostile clients",
            "",
            f"Written by `python -m scripts.hostile --out docs/hostile.md` on {datetime.date.today()}: gunicorn with "
            "`gunicorn.conf.py` (2 gevent workers, no API key, limits off) on 127.0.0.1, the attacks from the same "
            f"machine ({host['cpu']}, {host['cores']} cores, {host['memory']}, {host['system']}, Python "
            f"{host['python']}). Rerun it to replace this page. What each defence is: docs/security.md.",
            "",
            "| attack | figure |",
            "|---|---|",
            f"| {slow['connections']} connections held open for 12 s (20 silent, 20 dripping a header line a second, "
            f"10 stalled in their body), a normal client probing `/health` and `/predict` one request at a time | "
            f"{slow['probes']} probes, {slow['failed']} failed; p50 {slow['p50_ms']} ms, p99 {slow['p99_ms']} ms, "
            f"max {slow['max_ms']} ms; the server closed the dripping and stalled connections "
            f"{slow['reconnects']} times (they came back) |",
            f"| a progressive JPEG scan bomb ({bomb['bytes']:,} bytes, 2000x2000, {bomb['scans']:,} extra scans) to "
            f"`/predict` | {bomb['predict']['status']} {bomb['predict'].get('codes')} in {bomb['predict']['s']} s |",
            f"| four of them in one `/predict-batch` | {bomb['batch_of_4']['status']} "
            f"{bomb['batch_of_4'].get('codes')} in {bomb['batch_of_4']['s']} s; `/health` then "
            f"{bomb['health_after']} |",
            f"| {bodies['bodies']} JSON bodies of {bodies['body_bytes']:,} bytes without an image | statuses "
            f"{bodies['statuses']}; workers' RSS {bodies['rss_before_mb']} MB before, {bodies['rss_after_mb']} MB "
            f"after ({bodies['growth_mb']:+} MB) |",
            f"| a {values['body_bytes']:,}-byte body of five million empty JSON arrays | {values['status']} "
            f"{values['code']} in {values['s']} s; workers' peak RSS {values['worker_peak_mb']} MB |",
            "",
        ]
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.hostile", description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write a Markdown report here (e.g. docs/hostile.md)")
    args = parser.parse_args(argv)
    image = sample_image()
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        env = {"CAPTCHA_API_KEYS": "", "CAPTCHA_RATE_LIMIT": "", "CAPTCHA_BATCH_RATE_LIMIT": ""}
        with GunicornProcess(env, Path(folder) / "server.log") as service:
            for name, run in (
                ("slow_clients", lambda: slow_clients(service.url, image, idle=20, dripping=20, stalled=10)),
                ("scan_bomb", lambda: scan_bombs(service.url)),
                ("refused_bodies", lambda: refused_bodies(service)),
                ("many_values", lambda: many_values(service)),
            ):
                results[name] = run()
                print(json.dumps({name: results[name]}), flush=True)
    if args.out:
        Path(args.out).write_text(report(results), encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
