"""The shipped FSSP model: self-describing artifacts, real accuracy, every length, Keras and ONNX agreeing."""

import numpy as np
import pytest

from captcha_api.core.artifact import DEFAULT_MODEL, ModelArtifact, ModelMetadata
from captcha_api.core.preprocess import image_to_array
from captcha_api.core.runtime import Recognizer
from captcha_api.training.data import load_images, read_labels
from captcha_api.training.generator import GeneratorConfig, sample

SHIPPED = ModelArtifact(DEFAULT_MODEL)
KERAS, ONNX, META = SHIPPED.keras, SHIPPED.onnx, SHIPPED.metadata_path


@pytest.fixture(scope="module")
def onnx_model():
    return Recognizer(DEFAULT_MODEL, "onnx")


@pytest.fixture(scope="module")
def keras_model():
    pytest.importorskip("keras", reason="training dependencies (requirements-train.txt) are not installed")
    return Recognizer(DEFAULT_MODEL, "keras")


def test_artifacts_and_metadata():
    assert KERAS.is_file() and ONNX.is_file() and META.is_file()
    meta = ModelMetadata.load(META)
    assert meta.alphabet == "2456789бвгджклмнпрст"
    assert meta.blank_index == 20
    assert (meta.input_width, meta.input_height, meta.max_length) == (200, 60, 7)
    assert meta.version
    assert meta.training["holdout_files"] and meta.training["real_images"] > 0
    validation = meta.accuracy["validation"]
    assert validation["holdout_only"] and validation["n"] == len(meta.training["holdout_files"])
    assert validation["exact_match"] >= 0.98


def test_holdout_was_never_trained_on():
    meta = ModelMetadata.load(META)
    assert meta.training["real_images"] + len(meta.training["holdout_files"]) == 290


def test_reads_real_fssp_captchas(onnx_model, fssp_real):
    folder = read_labels(fssp_real)
    readings = onnx_model.read_arrays(load_images(folder.files).astype(np.float32) / 255.0)
    exact = np.mean([r.text == t for r, t in zip(readings, folder.texts)])
    assert exact >= 0.95, f"read {exact:.1%} of {len(folder)} real FSSP captchas"


def test_keras_and_onnx_give_the_same_text_on_every_real_image(onnx_model, keras_model, fssp_real):
    folder = read_labels(fssp_real)
    batch = load_images(folder.files).astype(np.float32) / 255.0
    assert [r.text for r in onnx_model.read_arrays(batch)] == [r.text for r in keras_model.read_arrays(batch)]


@pytest.mark.parametrize("length", [4, 5, 6, 7])
def test_reads_every_length(onnx_model, length):
    config = GeneratorConfig(lengths=((length, 1.0),))
    pairs = [sample(seed=90_000 + length, index=i, config=config) for i in range(40)]
    readings = onnx_model.read_arrays(np.stack([image_to_array(image) for image, _ in pairs]))
    exact = np.mean([r.text == text for r, (_, text) in zip(readings, pairs)])
    assert all(len(text) == length for _, text in pairs)
    assert exact >= 0.9, f"read {exact:.0%} of generated {length}-character captchas"


def test_constraints_on_real_captchas(onnx_model, fssp_real):
    """On real images: the model's own alphabet and length range change nothing; a charset without a character the
    captcha holds gives another character in that slot, not a shorter reading (what a filter after the fact
    would give); a length forces a reading of that length."""
    from captcha_api.core.decoding import Constraints

    folder = read_labels(fssp_real)
    x = load_images(folder.files[:64]).astype(np.float32) / 255
    free = [r.text for r in onnx_model.read_arrays(x)]
    same = onnx_model.read_arrays(x, Constraints.parse("2456789бвгджклмнпрст", "4-7"))
    assert [r.text for r in same] == free
    lengths_kept = 0
    for i, text in enumerate(free):
        banned = text[0]
        charset = "".join(c for c in onnx_model.alphabet.chars if c != banned)
        reading = onnx_model.read_arrays(x[i : i + 1], Constraints.parse(charset, None))[0].text
        assert banned not in reading
        # filtering the reading afterwards would have lost the slot; here it holds another character
        lengths_kept += len(reading) == len(text)
    assert lengths_kept == len(free)
    forced = onnx_model.read_arrays(x[:16], Constraints.parse(None, 6))
    assert all(len(r.text) == 6 for r in forced)


def test_the_shipped_captcha_v2_model():
    """The user-trained example: self-describing, measured on its held-out part, and reading it again here."""
    from .conftest import DATASETS

    base = DEFAULT_MODEL.parent / "captcha-v2"
    meta = ModelMetadata.load(base.with_suffix(".json"))
    assert meta.alphabet == "2345678bcdefgmnpwxy" and (meta.min_length, meta.max_length) == (5, 5)
    validation = meta.accuracy["validation"]
    assert validation["holdout_only"] and validation["n"] == len(meta.training["holdout_files"]) == 160
    assert validation["exact_match"] >= 0.98
    assert validation["ddddocr"]["n"] == 160  # the peer, on the same images in the same run
    folder = DATASETS / "captcha-v2"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent: the real data sets live in ../shared/datasets beside the checkout")
    held_out = set(meta.training["holdout_files"])
    labelled = read_labels(folder)
    pairs = [(f, t) for f, t in zip(labelled.files, labelled.texts) if f.name in held_out]
    readings = Recognizer(base, "onnx").read_arrays(load_images([f for f, _ in pairs]).astype(np.float32) / 255)
    correct = sum(r.text == t for r, (_, t) in zip(readings, pairs))
    assert len(pairs) == 160 and correct >= 0.98 * 160
