"""Self-training: label a folder of unlabelled real captchas with a model, keeping only confident readings.

The images kept are copied into OUT/images/ (keeping their paths inside the source folder) beside OUT/labels.csv:
a labels file names only images inside its own folder (training.data.read_labels).
"""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

from ..core.errors import CaptchaError
from ..core.preprocess import IMAGE_SUFFIXES
from ..core.runtime import Recognizer

log = logging.getLogger(__name__)


def pseudolabel(model: Path | str, source: Path, out: Path, min_confidence: float, lengths: range) -> tuple[int, int]:
    """Write out/labels.csv for the images of `source` read with at least `min_confidence`; (kept, seen)."""
    recognizer = Recognizer(model)
    source = Path(source)
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    kept = []
    for path in images:
        try:
            reading = recognizer.read(path.read_bytes())
        except CaptchaError as exc:
            log.warning("skipping %s: %s", path.name, exc.message)
            continue
        # an empty reading is no label, whatever the lengths asked for
        if reading.text and reading.confidence >= min_confidence and len(reading.text) in lengths:
            kept.append((path.relative_to(source).as_posix(), path, reading.text))
    out.mkdir(parents=True, exist_ok=True)
    for name, path, _ in kept:
        (out / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / "images" / name)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "text"])
        writer.writerows((name, text) for name, _, text in kept)
    log.info("kept %d of %d images at confidence >= %.2f", len(kept), len(images), min_confidence)
    return len(kept), len(images)
