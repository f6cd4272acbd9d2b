"""Keras -> ONNX with tf2onnx, checked by running both on the same inputs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..core.artifact import ModelArtifact
from ..core.preprocess import INPUT_SHAPE

log = logging.getLogger(__name__)

OPSET = 17


def export_onnx(model_path: Path, out: Path | None = None) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf
    import tf2onnx

    artifact = ModelArtifact.at(model_path)
    keras_path, onnx_path = artifact.keras, artifact.onnx
    out = Path(out) if out else onnx_path
    model = keras.saving.load_model(keras_path, compile=False)
    spec = (tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name="image"),)

    @tf.function(input_signature=spec)
    def serve(image):
        return {"probabilities": model(image, training=False)}

    tf2onnx.convert.from_function(serve, input_signature=spec, opset=OPSET, output_path=str(out))
    check_export(model, out)
    log.info("wrote %s", out)
    return out


def check_export(model, onnx_path: Path, batch: int = 4, tolerance: float = 1e-4) -> float:
    """Run both models on the same random batch; raise if their probabilities differ."""
    import onnxruntime as ort

    sample = np.random.default_rng(0).random((batch, *INPUT_SHAPE), dtype=np.float32)
    expected = np.asarray(model(sample, training=False))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: sample})[0]
    diff = float(np.abs(expected - got).max())
    if diff > tolerance:
        raise RuntimeError(f"ONNX export differs from Keras by {diff:.2e}")
    return diff
