"""The tiny model the tests serve: the project's network trained for one epoch on 16 generated captchas, saved as
Keras, exported to ONNX, with its metadata. It reads nothing correctly; it is a real artifact of the real network.

    python -m scripts.make_test_model             # writes tests/fixtures/tiny.onnx and tiny.json (committed)

The tests serve the committed ONNX file without TensorFlow; the tests of the Keras runtime and of the export build
the same model again with `build` (tests/conftest.py), since they need the Keras file too.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def generated_batch(seed: int, count: int):
    """(x, y): `count` generated captchas as a model batch and padded CTC labels."""
    from captcha_api.core.alphabet import FSSP
    from captcha_api.core.preprocess import image_to_array
    from captcha_api.training.data import encode_labels
    from captcha_api.training.generator import sample

    pairs = [sample(seed=seed, index=i) for i in range(count)]
    x = np.stack([image_to_array(image) for image, _ in pairs])
    return x, encode_labels([text for _, text in pairs], FSSP, 7)


def compiled_model(learning_rate: float):
    import keras

    from captcha_api.core.alphabet import FSSP
    from captcha_api.training.network import build_training_model, make_ctc_loss

    model = build_training_model(FSSP.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=make_ctc_loss(FSSP.blank_index))
    return model


def build(base: Path) -> Path:
    """BASE.keras, BASE.onnx and BASE.json of the tiny model (seeded: the same weights on the same machine)."""
    import keras

    from captcha_api.core.alphabet import FSSP
    from captcha_api.core.artifact import ModelMetadata
    from captcha_api.training.export import export_onnx
    from captcha_api.training.network import inference_model

    keras.utils.set_random_seed(0)
    x, y = generated_batch(seed=7, count=16)
    model = compiled_model(1e-3)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    inference_model(model).save(base.with_suffix(".keras"))
    meta = ModelMetadata(name="tiny", alphabet=FSSP.chars, blank_index=FSSP.blank_index, max_length=7)
    meta.save(base.with_suffix(".json"))
    export_onnx(base.with_suffix(".keras"))
    return base


def main() -> int:
    from captcha_api.training.quiet import quiet_frameworks

    quiet_frameworks()
    with tempfile.TemporaryDirectory() as work:
        base = build(Path(work) / "tiny")
        FIXTURES.mkdir(parents=True, exist_ok=True)
        for suffix in (".onnx", ".json"):
            shutil.copy(base.with_suffix(suffix), FIXTURES / f"tiny{suffix}")
    print(f"wrote {FIXTURES / 'tiny.onnx'} and tiny.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
