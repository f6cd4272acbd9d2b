"""The confidence figures of several pools of readings together (each written by `evaluate --readings FILE.jsonl`):
AUROC of confidence for right against wrong readings, and the share of the wrong ones among the 5% least confident.

    python -m scripts.confidence_pool runs/fssp-pool.jsonl runs/captcha-v2-pool.jsonl

Prints one JSON line per pool and one for all of them together."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from captcha_api.training.evaluate import pool_figures
from captcha_api.training.kfold import Row


def load(path: Path) -> list[Row]:
    return [Row(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    everything = []
    for path in map(Path, paths):
        rows = load(path)
        everything.extend(rows)
        print(json.dumps({"pool": str(path), **pool_figures(rows)}, ensure_ascii=False))
    print(json.dumps({"pool": "all", **pool_figures(everything)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
