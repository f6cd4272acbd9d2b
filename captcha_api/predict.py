"""Read captchas on this machine, no server: the `predict` command. One line per image:
filename<TAB>prediction<TAB>confidence."""

from __future__ import annotations

import sys
from pathlib import Path

from .core.errors import CaptchaError
from .core.preprocess import IMAGE_SUFFIXES
from .core.runtime import Recognizer


def collect(targets: list[str]) -> list[Path]:
    """Files as given; folders -> their images, sorted by name."""
    paths: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            paths.extend(sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif target.is_file():
            paths.append(target)
        else:
            raise SystemExit(f"no such file or folder: {target}")
    return paths


def predict(inputs: list[str], output: str, model: str, runtime: str) -> int:
    """Write the readings to `output` ('-': stdout); 1 when any image could not be read (each named on stderr)."""
    recognizer = Recognizer(model, runtime)
    lines, failures = [], 0
    for path in collect(inputs):
        try:
            reading = recognizer.read(path.read_bytes())
        except CaptchaError as exc:
            failures += 1
            print(f"{path}: {exc.message}", file=sys.stderr)
            continue
        lines.append(f"{path.name}\t{reading.text}\t{reading.confidence:.4f}")
    text = "\n".join(lines) + ("\n" if lines else "")
    if output == "-":
        sys.stdout.write(text)
    else:
        Path(output).write_text(text, encoding="utf-8")
        print(f"{len(lines)} predictions written to {output}", file=sys.stderr)
    return 1 if failures else 0
