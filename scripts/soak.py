"""Load and soak, against gunicorn started here on a loopback port (never anything else).

1. Warm-up, then each worker's resident memory (VmRSS) as the baseline.
2. Load: /predict for `load_seconds` at `connections` concurrent connections (wrk): throughput, p50/p99, errors.
3. Soak: /predict at 16 connections for `soak_minutes`, each worker's VmRSS sampled every minute; growth is the
   last sample against the baseline. Worker recycling is off for the run (CAPTCHA_MAX_REQUESTS=0,
   CAPTCHA_MAX_WORKER_RSS_MB=0), so a leak cannot hide behind a restart, and the same workers must serve throughout.

Prints a table, ends with one JSON line, and writes its section of docs/benchmarks.md (the rest of the page is the
benchmark's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from captcha_api.cli import MODEL_HELP, HelpFormatter
from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact
from scripts.bench import DEFAULT_DATA, SOAK_END, SOAK_START, Service, labelled_images, machine, multipart, wrk
from scripts.process import ROOT, memory_mb

MAX_RSS_GROWTH_PERCENT = 10.0


@dataclass(frozen=True)
class SoakPlan:
    warmup_seconds: int
    load_seconds: int
    connections: int
    soak_chunks: int  # samples of RSS, one after each chunk
    chunk_seconds: int

    @classmethod
    def full(cls, load_seconds: int = 60, connections: int = 32, soak_minutes: int = 10) -> SoakPlan:
        return cls(30, load_seconds, connections, soak_minutes, 60)

    @classmethod
    def smoke(cls) -> SoakPlan:
        return cls(1, 2, 8, 2, 1)


def run(model: Path, workers: int, plan: SoakPlan, data: Path | None) -> dict:
    blobs, _, source = labelled_images(data, 1)
    body, content_type = multipart("image", [blobs[0]])
    with tempfile.TemporaryDirectory(prefix="captcha-soak-") as work:
        work = Path(work)
        server = Service(ModelArtifact.at(model).onnx, "onnx", workers, work / "gunicorn.log")
        server.env.update(CAPTCHA_MAX_REQUESTS="0", CAPTCHA_MAX_WORKER_RSS_MB="0")
        server.start()
        try:
            server.wait_ready()
            wrk(server, "/predict", body, content_type, 16, plan.warmup_seconds, work)
            pids = sorted(server.worker_pids())
            baseline = {pid: memory_mb(pid) for pid in pids}
            load = wrk(server, "/predict", body, content_type, plan.connections, plan.load_seconds, work)
            samples: list[dict[int, float]] = []
            soak_requests = soak_errors = 0
            for _ in range(plan.soak_chunks):
                chunk = wrk(server, "/predict", body, content_type, 16, plan.chunk_seconds, work)
                soak_requests += chunk["requests"]
                soak_errors += chunk["errors"]
                samples.append({pid: memory_mb(pid) for pid in pids})
            same_workers = sorted(server.worker_pids()) == pids
        finally:
            server.stop()
    growth = {pid: (samples[-1][pid] - baseline[pid]) / baseline[pid] * 100 for pid in pids}
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "image": source,
        "model": str(model),
        "workers": workers,
        "load": load,
        "soak": {
            "minutes": plan.soak_chunks * plan.chunk_seconds / 60,
            "requests": soak_requests,
            "errors": soak_errors,
            "baseline_rss_mb": {str(pid): round(v, 1) for pid, v in baseline.items()},
            "rss_mb_samples": [{str(pid): round(v, 1) for pid, v in sample.items()} for sample in samples],
            "rss_growth_percent": {str(pid): round(v, 2) for pid, v in growth.items()},
            "same_workers_throughout": same_workers,
        },
        "summary": {
            "load_errors": load["errors"],
            "max_rss_growth_percent": round(max(growth.values()), 2),
            "soak_errors": soak_errors,
        },
    }


def verdicts(results: dict) -> list[tuple[str, str, str, str]]:
    summary = results["summary"]
    growth = summary["max_rss_growth_percent"]
    return [
        (
            f"errors in {results['load']['requests']:,} requests of load",
            str(summary["load_errors"]),
            "0",
            "met" if summary["load_errors"] == 0 else "missed",
        ),
        (
            "largest worker RSS growth over the soak",
            f"{growth:+.2f}%",
            f"<= {MAX_RSS_GROWTH_PERCENT:.0f}%",
            "met" if growth <= MAX_RSS_GROWTH_PERCENT else "missed",
        ),
        (
            f"errors in {results['soak']['requests']:,} requests of soak",
            str(summary["soak_errors"]),
            "0",
            "met" if summary["soak_errors"] == 0 else "missed",
        ),
    ]


def tables(results: dict) -> list[str]:
    load, soak = results["load"], results["soak"]
    pids = list(soak["baseline_rss_mb"])
    lines = [
        f"### Load: /predict at concurrency {load['connections']}, gunicorn with {results['workers']} workers",
        "",
        "| requests | requests/s | p50 ms | p95 ms | p99 ms | max ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {load['requests']:,} | {load['rps']:,.0f} | {load['p50_ms']:.2f} | {load['p95_ms']:.2f} "
        f"| {load['p99_ms']:.2f} | {load['max_ms']:.2f} | {load['errors']} |",
        "",
        f"### Soak: {soak['minutes']:.3g} minutes at concurrency 16, {soak['requests']:,} requests,"
        f" {soak['errors']} errors",
        "",
        "| worker | RSS after warm-up (MB) | "
        + " | ".join(f"{i + 1}" for i in range(len(soak["rss_mb_samples"])))
        + " | growth |",
        "|---|---:|" + "---:|" * len(soak["rss_mb_samples"]) + "---:|",
    ]
    for index, pid in enumerate(pids):
        row = " | ".join(f"{sample[pid]:.1f}" for sample in soak["rss_mb_samples"])
        lines.append(
            f"| {index + 1} | {soak['baseline_rss_mb'][pid]:.1f} | {row} | {soak['rss_growth_percent'][pid]:+.2f}% |"
        )
    lines += [
        "",
        f"Same workers from start to end: {'yes' if soak['same_workers_throughout'] else 'NO'}.",
        "",
        "| target | measured | goal | |",
        "|---|---:|---:|---|",
        *[f"| {label} | {measured} | {goal} | {verdict} |" for label, measured, goal, verdict in verdicts(results)],
    ]
    return lines


def markdown(results: dict, command: str) -> str:
    return "\n".join(
        [
            SOAK_START,
            "## Load and soak",
            "",
            f"Written by `{command}` on {results['date']} (same machine as above; load from `wrk -t1` on the same"
            " cores as the server; every request sends the same real captcha as multipart). Columns 1, 2, ... are"
            " each worker's VmRSS after each minute of soak.",
            "",
            *tables(results),
            SOAK_END,
            "",
        ]
    )


def write_section(path: Path, section: str) -> None:
    """Replace the soak section of the page, or add it at the end."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n\n"
    if SOAK_START in text and SOAK_END in text:
        before, rest = text.split(SOAK_START, 1)
        after = rest.split(SOAK_END, 1)[1].lstrip("\n")
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description="Load and soak the service on loopback: errors, latency, memory growth.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    parser.add_argument("--data", help="labelled folder; its first image is sent (default: fssp-real if there)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers serving")
    parser.add_argument("--load-seconds", type=int, default=60, help="length of the load phase, in seconds")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections in the load phase")
    parser.add_argument("--soak-minutes", type=int, default=10, help="length of the soak phase, in minutes")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, to check that everything works")
    parser.add_argument("--out", help="Markdown report to update (default: docs/benchmarks.md; none with --smoke)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    plan = SoakPlan.smoke() if args.smoke else SoakPlan.full(args.load_seconds, args.connections, args.soak_minutes)
    data = Path(args.data) if args.data else (DEFAULT_DATA if DEFAULT_DATA.is_dir() else None)
    results = run(Path(args.model), args.workers, plan, data)
    print("\n".join(tables(results)))
    out = args.out or (None if args.smoke else str(ROOT / "docs" / "benchmarks.md"))
    if out:
        command = "python -m scripts.soak"
        if not args.smoke and (args.load_seconds, args.connections, args.soak_minutes) != (60, 32, 10):
            command += f" --load-seconds {args.load_seconds} --connections {args.connections}"
            command += f" --soak-minutes {args.soak_minutes}"
        write_section(Path(out), markdown(results, command + (" --smoke" if args.smoke else "")))
        print(f"wrote its section of {out}", file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
