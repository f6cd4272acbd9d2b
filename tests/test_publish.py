"""publish: a run's ONNX model and metadata into the served folder, atomically, behind the gate (no worse than the
published one on the new one's held-out images). Runs are made from real artifacts: the shipped FSSP model (reads
generated FSSP captchas well) and the tiny test model (same alphabet, reads nothing)."""

import json
import shutil

import pytest

from captcha_api.cli import main
from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact
from captcha_api.training.generator import generate
from captcha_api.training.publish import PublishRefused, publish

from .conftest import KEY


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("held-out"), 24, seed=11, workers=1)


def make_run(runs, source: ModelArtifact, name: str, held_out) -> object:
    """runs/NAME as `train` leaves it: NAME.onnx and NAME.json, the metadata naming its held-out images."""
    run = runs / name
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.onnx, run / "cap.onnx")
    meta = json.loads(source.metadata_path.read_text(encoding="utf-8"))
    files = sorted(p.name for p in held_out.glob("*.jpg"))
    meta["name"] = "cap"
    meta["training"] = {"real_folders": [str(held_out)], "holdout_files": files}
    (run / "cap.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    return run / "cap"


@pytest.fixture
def runs(tmp_path, held_out, untrained_artifact):
    good = make_run(tmp_path / "runs", ModelArtifact(DEFAULT_MODEL), "good", held_out)
    worse = make_run(tmp_path / "runs", ModelArtifact.at(untrained_artifact), "worse", held_out)
    return good, worse


def test_publish_copies_the_network_and_metadata_with_version_and_figures(runs, tmp_path):
    good, _ = runs
    served = tmp_path / "served"
    published = publish(good.parent, served)
    target = ModelArtifact(served / "cap")
    assert sorted(p.name for p in served.iterdir()) == ["cap.json", "cap.onnx"]  # no .keras, no leftover temporaries
    assert target.onnx.read_bytes() == good.with_suffix(".onnx").read_bytes()
    meta = target.metadata()
    assert meta.published["version"] == published.version == ModelArtifact.version_of(target.onnx)
    assert meta.published["held_out"]["n"] == 24 and meta.published["held_out"]["exact_match"] >= 0.75
    assert meta.published["replaced"] is None and meta.published["forced"] is False
    with pytest.raises(PublishRefused, match="already"):
        publish(good.parent, served)


def test_a_worse_model_is_refused_with_both_figures_and_force_publishes_it(runs, tmp_path, capsys):
    good, worse = runs
    served = tmp_path / "served"
    publish(good.parent, served)
    before = {p.name: p.read_bytes() for p in served.iterdir()}
    assert main(["publish", str(worse.parent), "--to", str(served)]) == 1
    refusal = capsys.readouterr().err
    assert refusal.startswith("refused: the new cap reads worse than the published one on the same held-out images")
    assert "new 0.00% exact" in refusal and "published " in refusal and "on 24 images" in refusal
    assert {p.name: p.read_bytes() for p in served.iterdir()} == before  # nothing touched
    assert main(["publish", str(worse.parent), "--to", str(served), "--force"]) == 0
    assert "(forced past the gate)" in capsys.readouterr().out
    target = ModelArtifact(served / "cap")
    assert target.onnx.read_bytes() == worse.with_suffix(".onnx").read_bytes()
    assert target.metadata().published["forced"] is True
    assert target.metadata().published["replaced"] == ModelArtifact.version_of(good.with_suffix(".onnx"))


def test_a_model_that_cannot_be_measured_needs_force_to_replace_another(runs, tmp_path):
    good, worse = runs
    served = tmp_path / "served"
    publish(good.parent, served)
    meta = json.loads(worse.with_suffix(".json").read_text(encoding="utf-8"))
    meta["training"] = {}  # trained on generated images only: no held-out real images recorded
    worse.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PublishRefused, match="no held-out set"):
        publish(worse.parent, served)
    assert publish(worse.parent, served, force=True).forced


def test_a_run_without_a_finished_model_is_refused(tmp_path):
    (tmp_path / "runs" / "half").mkdir(parents=True)
    (tmp_path / "runs" / "half" / "last.keras").write_bytes(b"a checkpoint")
    with pytest.raises(PublishRefused, match="holds no finished model"):
        publish(tmp_path / "runs" / "half", tmp_path / "served")
    assert not (tmp_path / "served").exists()


def test_fine_tuning_starts_from_the_weights_a_published_model_came_from(runs, tmp_path):
    good, _ = runs
    shutil.copy(ModelArtifact(DEFAULT_MODEL).keras, good.with_suffix(".keras"))  # the run keeps its Keras file
    served = tmp_path / "served"
    publish(good.parent, served)
    assert not (served / "cap.keras").exists()
    weights, meta = ModelArtifact.starting_point(served / "cap")
    assert weights == good.with_suffix(".keras") and meta.alphabet == ModelArtifact(good).metadata().alphabet
    assert ModelArtifact.starting_point(good.parent)[0] == weights  # the run itself
    assert ModelArtifact.starting_point(DEFAULT_MODEL)[0] == ModelArtifact(DEFAULT_MODEL).keras  # shipped beside
    good.with_suffix(".keras").unlink()
    with pytest.raises(ValueError, match="no Keras weights to start from"):
        ModelArtifact.starting_point(served / "cap")


def test_a_model_that_cannot_serve_is_never_published_not_even_forced(runs, tmp_path):
    good, worse = runs
    served = tmp_path / "served"
    publish(good.parent, served)
    before = {p.name: p.read_bytes() for p in served.iterdir()}
    worse.with_suffix(".onnx").write_bytes(b"\x08\x07 half a network")
    with pytest.raises(PublishRefused, match="cannot be served"):
        publish(worse.parent, served, force=True)
    assert {p.name: p.read_bytes() for p in served.iterdir()} == before


def test_a_held_out_set_too_small_to_judge_needs_force(runs, tmp_path):
    good, worse = runs
    served = tmp_path / "served"
    publish(good.parent, served)
    meta = json.loads(worse.with_suffix(".json").read_text(encoding="utf-8"))
    meta["training"]["holdout_files"] = meta["training"]["holdout_files"][:1]  # one image: a tie proves nothing
    worse.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PublishRefused, match="at least 20 images"):
        publish(worse.parent, served)


def test_the_published_metadata_records_where_it_came_from_but_info_does_not_show_it(runs, tmp_path, make_app):
    good, _ = runs
    served = tmp_path / "served"
    publish(good.parent, served)
    assert ModelArtifact(served / "cap").metadata().published["from"] == str(good.parent.resolve())
    client = make_app(model=served / "cap").test_client()
    info = client.get("/info", headers={"X-API-Key": KEY}).get_json()
    published = info["model"]["published"]
    assert published["version"] == ModelArtifact.version_of(served / "cap.onnx") and "from" not in published
    assert str(tmp_path) not in json.dumps(info)


def test_a_model_whose_name_is_not_plain_is_neither_served_nor_published(tmp_path, tiny_artifact):
    for name in ("..", ".hidden", "-x"):
        for suffix in (".onnx", ".json"):
            shutil.copy(tiny_artifact.with_suffix(suffix), tmp_path / f"{name}{suffix}")
    shutil.copy(tiny_artifact.with_suffix(".onnx"), tmp_path / "plain.onnx")
    shutil.copy(tiny_artifact.with_suffix(".json"), tmp_path / "plain.json")
    assert list(ModelArtifact.find_all(tmp_path)) == ["plain"]
    with pytest.raises(PublishRefused, match="not a model name"):
        publish(tmp_path / "-x.onnx", tmp_path / "served")
