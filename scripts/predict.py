#!/usr/bin/env python3
"""Read captchas on this machine, no server: python scripts/predict.py IMAGE_OR_DIR... [-o predictions.txt]

Writes one line per image: filename<TAB>prediction<TAB>confidence.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from captcha_api.ocr.errors import CaptchaError
from captcha_api.ocr.metadata import DEFAULT_MODEL
from captcha_api.ocr.runtime import Recognizer
from captcha_api.training.data import IMAGE_SUFFIXES


def collect(targets: list[str]) -> list[Path]:
    paths: list[Path] = []
    for target in map(Path, targets):
        if target.is_dir():
            paths.extend(sorted(p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif target.is_file():
            paths.append(target)
        else:
            raise SystemExit(f"no such file or folder: {target}")
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files or folders of images")
    parser.add_argument("-o", "--output", default="predictions.txt", help="where to write the lines ('-': stdout)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--runtime", default="auto", choices=["auto", "onnx", "keras"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    recognizer = Recognizer(args.model, args.runtime)
    lines, failures = [], 0
    for path in collect(args.inputs):
        try:
            reading = recognizer.read(path.read_bytes())
        except CaptchaError as exc:
            failures += 1
            print(f"{path}: {exc.message}", file=sys.stderr)
            continue
        lines.append(f"{path.name}\t{reading.text}\t{reading.confidence:.4f}")
    text = "\n".join(lines) + ("\n" if lines else "")
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"{len(lines)} predictions written to {args.output}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
