"""The label audit (`captcha-ocr audit`) and `evaluate --errors-sheet`: a label slip planted in real captchas comes
first, the proposal fixes it, the folder is never rewritten, and the sheets draw one row per image."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image

from captcha_api.cli import main
from captcha_api.training.sheet import ROW

from .conftest import ROOT

MODEL = ROOT / "model" / "fssp"


@pytest.fixture
def slipped(fssp_real, tmp_path):
    """Twelve real FSSP captchas (the shipped model reads all of them right) with one label slipped: the sixth image
    carries the seventh's label."""
    with open(fssp_real / "labels.csv", encoding="utf-8") as handle:
        rows = sorted((row["filename"], row["text"]) for row in csv.DictReader(handle))
    rows = [row for row in rows if row[0] not in {"dg7g7.png", "l28vt.png", "zhmb8g.png", "l29vt.png"}][:12]
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    for name, _ in rows:
        shutil.copy(fssp_real / "images" / name, folder / "images" / name)
    labels = [(name, rows[6][1] if i == 5 else text) for i, (name, text) in enumerate(rows)]
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows([("filename", "text"), *labels])
    return folder, rows


def test_a_slipped_label_comes_first_and_the_proposal_mends_it(slipped, tmp_path, capsys):
    folder, rows = slipped
    before = (folder / "labels.csv").read_bytes()
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(folder), "--model", str(MODEL), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    first = summary["disagreements"][0]
    assert first["file"] == rows[5][0] and first["label"] == rows[6][1] and first["reading"] == rows[5][1]
    assert len(summary["disagreements"]) == 1 and summary["images"] == 12
    assert rows[5][0] in printed
    with open(out / "labels.fixed.csv", encoding="utf-8") as handle:
        proposal = [(row["filename"], row["text"]) for row in csv.DictReader(handle)]
    assert proposal == rows  # the true labels back
    assert (folder / "labels.csv").read_bytes() == before  # never rewritten
    with Image.open(out / "sheet.png") as sheet:
        assert sheet.height == ROW * 2 and sheet.width > 600


def test_the_audit_is_never_written_into_the_folder_it_audits(slipped):
    folder, _ = slipped
    with pytest.raises(ValueError, match="outside the folder"):
        main(["audit", "--data", str(folder), "--model", str(MODEL), "--out", str(folder / "audit")])


def test_evaluate_draws_its_misreadings(slipped, tmp_path):
    folder, _ = slipped
    sheet = tmp_path / "errors.png"
    arguments = ["evaluate", "--data", str(folder), "--model", str(MODEL), "--runtime", "onnx"]
    assert main([*arguments, "--errors-sheet", str(sheet)]) == 0
    with Image.open(sheet) as image:
        assert image.height == ROW * 2  # the one slipped label: one row under the title
