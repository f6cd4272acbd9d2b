"""Label audit: the images of a labelled folder whose reading, by a model that did not train on them, disagrees
with their label, most confident first: where a label slip is likelier than a misreading. Written beside, never
over, the folder: a list (audit.json), a contact sheet to check by eye (sheet.png), and a proposal
(labels.fixed.csv: every label, the confident disagreements replaced by the reading).

The model must not have trained on the images (a model trained on a slip learns it): `--model` names one that did
not, such as one trained on another folder."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.preprocess import preprocess_batch
from ..core.runtime import Recognizer
from .data import read_labels
from .sheet import SheetRow, draw

log = logging.getLogger(__name__)

BATCH = 64


@dataclass(frozen=True)
class Finding:
    file: str  # as labels.csv names it: relative to the folder's images
    label: str
    reading: str
    confidence: float


def read_all(data: Path, model: Path | str, runtime: str = "onnx") -> list[Finding]:
    """Every image of the folder read by `model`, with its label."""
    folder = read_labels(data)
    recognizer = Recognizer(model, runtime)
    findings = []
    for start in range(0, len(folder.files), BATCH):
        paths = folder.files[start : start + BATCH]
        readings = recognizer.read_arrays(preprocess_batch([p.read_bytes() for p in paths]))
        for path, label, reading in zip(paths, folder.texts[start : start + BATCH], readings):
            findings.append(Finding(path.name, label, reading.text, round(float(reading.confidence), 4)))
    return findings


def disagreements(findings: list[Finding]) -> list[Finding]:
    """The readings that differ from their labels, the most confident first."""
    return sorted((f for f in findings if f.reading != f.label), key=lambda f: (-f.confidence, f.file))


def write(findings: list[Finding], data: Path, out: Path, min_confidence: float, top: int) -> dict:
    """audit.json, sheet.png and labels.fixed.csv in `out` (which must not be the folder audited)."""
    data, out = Path(data).resolve(), Path(out).resolve()
    if out == data or data in out.parents:
        raise ValueError(f"write the audit outside the folder it audits ({data}), e.g. runs/audit")
    out.mkdir(parents=True, exist_ok=True)
    found = disagreements(findings)
    proposed = {f.file: f.reading for f in found if f.confidence >= min_confidence and f.reading}
    images = read_labels(data).files[0].parent
    with open(out / "labels.fixed.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["filename", "text"])
        for finding in findings:
            writer.writerow([finding.file, proposed.get(finding.file, finding.label)])
    rows = [SheetRow(images / f.file, f.label, f.reading, f.confidence) for f in found[:top]]
    draw(rows, out / "sheet.png", f"label audit of {data.name}: readings that disagree with their labels")
    summary = {
        "data": str(data),
        "images": len(findings),
        "disagreements": [asdict(f) for f in found],
        "proposed": len(proposed),
        "min_confidence": min_confidence,
    }
    (out / "audit.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return summary


def from_kfold(work_dir: Path) -> list[Finding]:
    """Every image of a k-fold plan's folder, read by the fold model that did not train on it (kfold.py)."""
    from .kfold import pooled

    return [Finding(r.file, r.label, r.reading, round(r.confidence, 4)) for r in pooled(work_dir)]


def main(args) -> int:
    if args.kfold:
        findings = from_kfold(Path(args.kfold))
    else:
        findings = read_all(Path(args.data), args.model, args.runtime)
    summary = write(findings, Path(args.data), Path(args.out), args.min_confidence, args.top)
    found = summary["disagreements"]
    print(f"images        {summary['images']}")
    print(f"disagreements {len(found)} (readings that differ from their labels), the most confident first:")
    for entry in found[: args.top]:
        print(f"  {entry['file']}  label {entry['label']}  read {entry['reading']}  ({entry['confidence']:.3f})")
    print(f"proposed      {summary['proposed']} label changes (confidence >= {args.min_confidence}):")
    print(f"written       {Path(args.out) / 'labels.fixed.csv'}, sheet.png, audit.json; {args.data} is untouched")
    return 0
