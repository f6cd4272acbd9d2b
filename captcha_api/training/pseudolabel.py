"""Self-training: label a folder of unlabelled real captchas with a model, keeping only confident readings.

The labels.csv written points at the images where they are (absolute paths); nothing is copied.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from ..ocr.errors import CaptchaError
from ..ocr.runtime import Recognizer
from .data import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def pseudolabel(model: Path | str, source: Path, out: Path, min_confidence: float, lengths: range) -> tuple[int, int]:
    """Write out/labels.csv for the images of `source` read with at least `min_confidence`; (kept, seen)."""
    recognizer = Recognizer(model)
    images = sorted(p for p in Path(source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    rows = []
    for path in images:
        try:
            reading = recognizer.read(path.read_bytes())
        except CaptchaError as exc:
            log.warning("skipping %s: %s", path.name, exc.message)
            continue
        # an empty reading is no label, whatever the lengths asked for
        if reading.text and reading.confidence >= min_confidence and len(reading.text) in lengths:
            rows.append((str(path.resolve()), reading.text))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "text"])
        writer.writerows(rows)
    log.info("kept %d of %d images at confidence >= %.2f", len(rows), len(images), min_confidence)
    return len(rows), len(images)
