"""The CNN + BiLSTM + CTC network. Imports Keras, so serving with ONNX Runtime never imports this module."""

from __future__ import annotations

import keras
from keras import layers, ops

from ..core.alphabet import PAD
from ..core.preprocess import INPUT_SHAPE

ARCHITECTURE = (
    "grey input | Conv16-ReLU-pool2x2 | Conv32-ReLU-pool2x2 | Conv48-BN-ReLU-pool2x3 | "
    "Dense128 + dropout | BiLSTM128 | Dense(alphabet+blank) softmax; 25 time steps along the width"
)


def _conv_block(x, filters: int, pool: tuple[int, int], name: str, batch_norm: bool = False):
    # Batch norm pays on the small late feature maps; at full resolution it would double a CPU training step.
    x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    x = layers.ReLU(name=f"{name}_relu")(x)
    return layers.MaxPooling2D(pool, name=f"{name}_pool")(x)


def build_training_model(num_classes: int) -> keras.Model:
    """image (N, 200, 60, 1) -> per-time-step logits (N, 25, num_classes); the blank is the last class.

    Sized for serving on a CPU: narrow early convolutions keep the full-resolution work small, the last block halves
    the width too, so the LSTM runs 25 steps (still over three per character at the longest captchas, 7), and one
    bidirectional LSTM reads the sequence.
    """
    image = keras.Input(shape=INPUT_SHAPE, name="image", dtype="float32")
    x = _conv_block(image, 16, (2, 2), "block1")
    x = _conv_block(x, 32, (2, 2), "block2")
    x = _conv_block(x, 48, (2, 3), "block3", batch_norm=True)
    steps, height, channels = x.shape[1], x.shape[2], x.shape[3]
    x = layers.Reshape((steps, height * channels), name="to_sequence")(x)
    x = layers.Dense(128, activation="relu", name="project")(x)
    x = layers.Dropout(0.25, name="project_dropout")(x)
    x = layers.Bidirectional(layers.LSTM(128, return_sequences=True, dropout=0.2), name="bilstm1")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(image, logits, name="captcha_ctc_train")


def inference_model(training_model: keras.Model) -> keras.Model:
    """Cut the serving model out of the training model by layer name: image -> softmax probabilities."""
    logits = training_model.get_layer("logits").output
    probs = layers.Softmax(name="probabilities")(logits)
    return keras.Model(training_model.get_layer("image").output, probs, name="captcha_ctc")


def make_ctc_loss(blank_index: int):
    """CTC loss on logits; labels are padded with PAD to a fixed width."""

    def ctc_loss(y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        label_length = ops.sum(ops.cast(ops.not_equal(y_true, PAD), "int32"), axis=-1)
        labels = ops.where(ops.equal(y_true, PAD), ops.zeros_like(y_true), y_true)
        batch, steps = ops.shape(y_pred)[0], ops.shape(y_pred)[1]
        logit_length = ops.full((batch,), steps, dtype="int32")
        return ops.ctc_loss(labels, y_pred, label_length, logit_length, mask_index=blank_index)

    return ctc_loss
