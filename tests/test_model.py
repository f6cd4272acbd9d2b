"""The network itself: it learns, the serving model is cut out by name, and its ONNX export agrees with it."""

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="training dependencies (requirements-train.txt) are not installed")

from captcha_api.core.alphabet import FSSP  # noqa: E402
from captcha_api.core.preprocess import image_to_array  # noqa: E402
from captcha_api.core.runtime import MODEL_BATCH, KerasRuntime, OnnxRuntime, Recognizer  # noqa: E402
from captcha_api.training.generator import sample  # noqa: E402
from captcha_api.training.network import build_training_model, inference_model, make_ctc_loss  # noqa: E402

from .conftest import compiled_model, generated_batch  # noqa: E402


def test_tiny_model_loss_falls():
    keras.utils.set_random_seed(1)
    x, y = generated_batch(seed=11, count=8)
    model = compiled_model(2e-3)
    before = float(model.evaluate(x, y, verbose=0))
    model.fit(x, y, batch_size=8, epochs=12, verbose=0)
    after = float(model.evaluate(x, y, verbose=0))
    assert after < 0.7 * before


def test_output_has_one_step_per_eight_columns_and_softmax_rows():
    serving = inference_model(build_training_model(FSSP.num_classes))
    probs = np.asarray(serving(np.zeros((2, 200, 60, 1), np.float32)))
    assert probs.shape == (2, 25, FSSP.num_classes)
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert serving.get_layer("logits") is not None


def test_ctc_loss_ignores_padding():
    loss = make_ctc_loss(FSSP.blank_index)
    logits = np.random.default_rng(0).normal(size=(1, 25, FSSP.num_classes)).astype(np.float32)
    short = np.array([[0, 1, 2, 3, -1, -1, -1]])
    padded_other = np.array([[0, 1, 2, 3, -1, -1, -1, -1, -1, -1]])  # wider padding, same label
    assert float(loss(short, logits)[0]) == pytest.approx(float(loss(padded_other, logits)[0]))
    longer = np.array([[0, 1, 2, 3, 4, -1, -1]])
    assert float(loss(short, logits)[0]) != pytest.approx(float(loss(longer, logits)[0]))


def test_keras_and_onnx_agree_on_tiny_model(tiny_keras_artifact):
    batch = np.stack([image_to_array(sample(seed=21, index=i)[0]) for i in range(6)])
    keras_probs = KerasRuntime(tiny_keras_artifact.with_suffix(".keras"))(batch)
    onnx_probs = OnnxRuntime(tiny_keras_artifact.with_suffix(".onnx"))(batch)
    assert np.abs(keras_probs - onnx_probs).max() < 1e-4


def test_recognizer_reads_bytes_with_either_runtime(tiny_keras_artifact):
    from .conftest import encode

    data = encode(sample(seed=22, index=0)[0], "PNG")
    readings = [Recognizer(tiny_keras_artifact, runtime).read(data) for runtime in ("keras", "onnx")]
    assert readings[0].text == readings[1].text
    assert 0.0 <= readings[0].confidence <= 1.0


def test_onnx_threads_do_not_change_the_output(tiny_artifact):
    batch = np.stack([image_to_array(sample(seed=23, index=i)[0]) for i in range(5)])
    one = OnnxRuntime(tiny_artifact.with_suffix(".onnx"), threads=1)(batch)
    two = OnnxRuntime(tiny_artifact.with_suffix(".onnx"), threads=2)(batch)
    assert np.abs(one - two).max() < 1e-5


@pytest.mark.parametrize("runtime", ["onnx", "keras"])
def test_a_batch_larger_than_one_model_call_reads_as_each_image_alone(tiny_keras_artifact, runtime):
    count = 2 * MODEL_BATCH + 3
    batch = np.stack([image_to_array(sample(seed=24, index=i)[0]) for i in range(count)])
    recognizer = Recognizer(tiny_keras_artifact, runtime)
    together = recognizer.read_arrays(batch)
    alone = [recognizer.read_arrays(array[None])[0] for array in batch]
    assert len(together) == count
    assert [r.text for r in together] == [r.text for r in alone]
    assert np.allclose([r.confidence for r in together], [r.confidence for r in alone], atol=1e-5)


@pytest.mark.parametrize("runtime", ["keras", "onnx"])
def test_a_model_for_another_input_shape_is_refused_at_load(tmp_path, runtime):
    import keras
    import tensorflow as tf
    import tf2onnx

    image = keras.Input(shape=(200, 60, 3), name="image")
    colour = keras.Model(image, keras.layers.Dense(FSSP.num_classes)(keras.layers.Reshape((200, 180))(image)))
    if runtime == "keras":
        path = tmp_path / "colour.keras"
        colour.save(path)
        load = KerasRuntime
    else:
        path = tmp_path / "colour.onnx"
        spec = (tf.TensorSpec((None, 200, 60, 3), tf.float32, name="image"),)
        tf2onnx.convert.from_keras(colour, input_signature=spec, opset=17, output_path=str(path))
        load = OnnxRuntime
    with pytest.raises(ValueError, match=r"takes images of shape \(200, 60, 3\).*retrain"):
        load(path)
