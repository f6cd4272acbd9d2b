"""K-fold readings (`captcha-ocr kfold`, `evaluate --kfold`, `audit --kfold`) and the confidence figures of
`evaluate`: folds are disjoint and cover the folder, no fold model trains on its own fold, the figures are what
their definitions say on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from captcha_api.cli import main
from captcha_api.core.artifact import ModelArtifact
from captcha_api.training.evaluate import confidence_figures, risk_coverage
from captcha_api.training.kfold import deal

from .conftest import ROOT
from .test_audit import slipped  # noqa: F401 - the fixture

MODEL = ROOT / "model" / "fssp"


def test_folds_are_disjoint_cover_every_image_and_do_not_depend_on_order():
    names = [f"{i:03d}.png" for i in range(23)]
    folds = deal(names, 5, seed=3)
    assert sorted(n for fold in folds for n in fold) == names
    assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
    assert deal(list(reversed(names)), 5, seed=3) == folds
    assert deal(names, 5, seed=4) != folds
    with pytest.raises(ValueError, match="folds"):
        deal(names, 1, seed=0)


def test_confidence_figures_on_hand_made_cases():
    right = [True, True, True, False]
    perfect = confidence_figures(right, [0.9, 0.8, 0.7, 0.1], rejection=0.25)
    assert (perfect["auroc"], perfect["errors_caught"], perfect["errors"]) == (1.0, 1.0, 1)
    backwards = confidence_figures(right, [0.1, 0.2, 0.3, 0.9], rejection=0.25)
    assert (backwards["auroc"], backwards["errors_caught"]) == (0.0, 0.0)
    # all tied: AUROC a coin toss; refusing a quarter catches a quarter of the errors, in expectation
    tied = confidence_figures([True] * 6 + [False] * 2, [0.5] * 8, rejection=0.25)
    assert (tied["auroc"], tied["errors_caught"]) == (0.5, 0.25)
    # one wrong reading among the surest half: AUROC counts the pairs it wins
    mixed = confidence_figures([True, False, True, True, False], [0.9, 0.8, 0.7, 0.6, 0.1], rejection=0.2)
    assert mixed["auroc"] == pytest.approx(4 / 6, abs=1e-4)  # rounded to four places
    assert mixed["errors_caught"] == 0.5
    assert confidence_figures([True, True], [0.2, 0.3])["auroc"] is None  # nothing wrong to catch


def test_risk_coverage_goes_from_the_surest_reading_to_all():
    coverage, risk = risk_coverage([True, False, True, True], [0.9, 0.1, 0.8, 0.7])
    assert list(coverage) == [0.25, 0.5, 0.75, 1.0]
    assert list(risk) == [0.0, 0.0, 0.0, 0.25]


def test_kfold_reads_every_image_with_a_model_that_never_saw_it(slipped, tmp_path, capsys):  # noqa: F811
    pytest.importorskip("keras", reason="training dependencies (pip install '.[train]') are not installed")
    folder, rows = slipped
    work = tmp_path / "kfold"
    # two folds of six, each model the shipped one barely moved (a tiny learning rate): the mechanics, quickly
    args = ["kfold", "--data", str(folder), "--folds", "2", "--work-dir", str(work), "--init-from", str(MODEL)]
    args += ["--epochs", "1", "--real-repeat", "1", "--synthetic-per-epoch", "0", "--learning-rate", "1e-7"]
    assert main(args) == 0
    plan = json.loads((work / "folds.json").read_text(encoding="utf-8"))
    assert sorted(plan["folds"][0] + plan["folds"][1]) == sorted(name for name, _ in rows)
    for index, held_out in enumerate(plan["folds"]):
        meta = ModelArtifact(work / f"fold-{index}" / f"fold-{index}").metadata()
        assert meta.training["real_images"] == 12 - len(held_out) and meta.training["holdout_files"] == []
    trained_at = {i: (work / f"fold-{i}" / "done").stat().st_mtime for i in range(2)}
    assert main(args) == 0  # finished folds are kept, not trained again
    assert {i: (work / f"fold-{i}" / "done").stat().st_mtime for i in range(2)} == trained_at
    capsys.readouterr()

    readings = tmp_path / "readings.jsonl"
    evaluate = ["evaluate", "--data", str(folder), "--kfold", str(work), "--degrade", "--json"]
    assert main([*evaluate, "--readings", str(readings)]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["n"] == 12 and figures["exact_match"] == pytest.approx(11 / 12)  # the slip
    pool = figures["confidence"]
    assert pool["readings"] == 12 * 6 and set(pool["exact_by_kind"]) >= {"clean", "jpeg", "noise", "blur"}
    lines = [json.loads(line) for line in readings.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 72 and {line["fold"] for line in lines} == {0, 1}
    for line in lines:  # each image read by the model of its own fold
        assert line["file"] in plan["folds"][line["fold"]]

    # the slip checked by eye and relabelled gives the honest figure, from the same fold readings
    fixes = tmp_path / "fixes.csv"
    fixes.write_text(f"filename,text\n{rows[5][0]},{rows[5][1]}\n", encoding="utf-8")
    assert main(["evaluate", "--data", str(folder), "--kfold", str(work), "--relabel", str(fixes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["exact_match"] == 1.0

    out = tmp_path / "audit"
    assert main(["audit", "--data", str(folder), "--kfold", str(work), "--out", str(out)]) == 0
    summary = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert summary["disagreements"][0]["file"] == rows[5][0]
    assert np.isclose(summary["disagreements"][0]["confidence"], 1.0, atol=0.05)


def test_pools_are_measured_alone_and_together(tmp_path, capsys):
    from scripts.confidence_pool import main as pool_main

    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path)

    def row(label, reading, confidence, refused=None):
        return dict(
            file=f"{label}.png",
            kind="clean",
            label=label,
            reading=reading,
            confidence=confidence,
            refused=refused,
            fold=0,
        )

    first = write("a.jsonl", [row("ab", "ab", 0.9), row("cd", "c", 0.3), row("ef", "ef", 0.8)])
    second = write("b.jsonl", [row("gh", "gh", 0.7), row("ij", "", 1.0, refused="unreadable")])
    assert pool_main([first, second]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["readings"] for line in lines] == [3, 2, 5]
    assert [line["errors"] for line in lines] == [1, 1, 2]
    assert lines[2]["auroc"] == 1.0  # the unreadable one ranks first whatever its confidence
    assert lines[2]["refused_unreadable"] == 1


def test_a_pool_too_small_for_one_refusal_still_counts_a_share_of_the_least_confident():
    # 5% of ten readings is half a reading: half the chance of catching the one wrong reading, the least sure
    figures = confidence_figures([True] * 9 + [False], [0.9] * 9 + [0.1])
    assert figures["errors_caught"] == 0.5


def test_degrading_a_transparent_captcha_keeps_it_on_white():
    import io

    from PIL import Image

    from captcha_api.training.degrade import DEGRADATIONS, degrade

    clear = Image.new("RGBA", (200, 60), (0, 0, 0, 0))
    clear.paste((20, 20, 90, 255), (40, 20, 60, 40))  # one dark glyph-like box on a transparent ground
    out = io.BytesIO()
    clear.save(out, "PNG")
    for kind in DEGRADATIONS:
        with Image.open(io.BytesIO(degrade(out.getvalue(), kind, "x.png"))) as image:
            grey = np.asarray(image.convert("L"), dtype=np.float64)
        assert grey.mean() > 150, kind  # white paper, as the service composites it, not black
