"""ModelArtifact: every path of a model derived in one place."""

from pathlib import Path

import pytest

from captcha_api.core.artifact import ModelArtifact


@pytest.mark.parametrize("given", ["m/fssp", "m/fssp.onnx", "m/fssp.keras", "m/fssp.json"])
def test_any_of_its_files_names_the_model(given):
    artifact = ModelArtifact.at(given)
    assert artifact.name == "fssp" and artifact.folder == Path("m")
    assert (artifact.onnx, artifact.keras, artifact.metadata_path) == (
        Path("m/fssp.onnx"),
        Path("m/fssp.keras"),
        Path("m/fssp.json"),
    )


def test_a_name_may_hold_dots_of_its_own():
    artifact = ModelArtifact.at("m/fssp.v2")
    assert artifact.name == "fssp.v2"
    assert artifact.onnx == Path("m/fssp.v2.onnx") and artifact.metadata_path == Path("m/fssp.v2.json")
    assert ModelArtifact.at("m/fssp.v2.onnx") == artifact


def test_find_all_takes_metadata_with_a_network_beside_it(tmp_path):
    for name in ("a.onnx", "a.json", "b.keras", "b.json", "c.json", "d.onnx", "e.v2.onnx", "e.v2.json"):
        (tmp_path / name).write_text("x")
    found = ModelArtifact.find_all(tmp_path)
    assert sorted(found) == ["a", "b", "e.v2"]
    assert found["e.v2"].onnx == tmp_path / "e.v2.onnx"


def test_metadata_is_read_from_its_json(tiny_artifact):
    artifact = ModelArtifact.at(tiny_artifact)
    assert artifact.has_network
    assert artifact.metadata().blank_index == len(artifact.metadata().alphabet)
