"""Model runtimes: the Keras model itself, or its ONNX export run by ONNX Runtime (no TensorFlow imported).

A runtime maps a float32 batch (N, 200, 60, 3) to CTC probabilities (N, T, classes); a Recognizer adds the
metadata, preprocessing and decoding around it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .artifact import ModelArtifact
from .decoding import (
    Constraints,
    Reading,
    constrained_decode_batch,
    count_probabilities,
    greedy_decode_batch,
    runner_up,
)
from .errors import CaptchaError, InvalidParameter, LowConfidence, NoReading, Unreadable
from .preprocess import DEFAULT_MAX_PIXELS, INPUT_SHAPE, DecodeBudget, preprocess

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "keras")
# Images per model call. Activation memory grows with the batch (a 64-image call took a worker from 80 to over
# 200 MB), while the time per image barely falls past 16: larger batches run as several calls of this size.
MODEL_BATCH = 16
NO_CONSTRAINTS = Constraints()
# Decimal places of a confidence in an answer; a threshold is compared with the confidence as answered.
CONFIDENCE_DIGITS = 4


def check_input_shape(path: Path, shape) -> None:
    """Refuse at load, not at the first request, a model made for another input (say, colour images)."""
    if tuple(shape) != INPUT_SHAPE:
        raise ValueError(
            f"the model {path} takes images of shape {tuple(shape)}, but the service prepares {INPUT_SHAPE}; "
            "retrain it with this version"
        )


class KerasRuntime:
    name = "keras"

    def __init__(self, path: Path):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        import tensorflow as tf

        self.path = Path(path)
        try:
            self.model = keras.saving.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises a different type for each way a file can be wrong
            raise ValueError(f"cannot load the Keras model {self.path}: {exc}") from exc
        check_input_shape(self.path, self.model.input_shape[1:])
        spec = tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)
        # One traced graph for every batch size; eager calls would cost tens of ms each.
        self._run = tf.function(lambda batch: self.model(batch, training=False), input_signature=[spec])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self._run(batch).numpy()


class OnnxRuntime:
    name = "onnx"

    def __init__(self, path: Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        # Tuned for a small network in a process that shares few cores with other workers: a fixed number of
        # threads (one by default: workers, not threads, use the cores), nodes run in order, and idle pool threads
        # sleep instead of spinning on a core another worker needs.
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types share no useful base class
            raise ValueError(f"cannot load the ONNX model {self.path}: {exc}") from exc
        model_input = self.session.get_inputs()[0]
        check_input_shape(self.path, model_input.shape[1:])
        self.input_name = model_input.name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def choose_runtime(model: ModelArtifact | Path | str, runtime: str = "auto", threads: int = 1):
    artifact = model if isinstance(model, ModelArtifact) else ModelArtifact.at(model)
    keras_path, onnx_path = artifact.keras, artifact.onnx
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "auto":
        has_ort = importlib.util.find_spec("onnxruntime") is not None
        runtime = "onnx" if onnx_path.is_file() and has_ort else "keras"
    if runtime == "onnx":
        return OnnxRuntime(onnx_path, threads)
    return KerasRuntime(keras_path)


class Recognizer:
    """A loaded model with its metadata: bytes or arrays in, readings out.

    `on_model_call(seconds, images)`, when set, is called after each read with the time spent in the model itself
    (not preprocessing or decoding): how the service times inference without this package knowing about metrics.
    """

    on_model_call: Callable[[float, int], None] | None = None

    def __init__(
        self,
        model: ModelArtifact | Path | str,
        runtime: str = "auto",
        threads: int = 1,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.artifact = model if isinstance(model, ModelArtifact) else ModelArtifact.at(model)
        self.metadata = self.artifact.metadata()
        self.alphabet = self.metadata.charset
        self.runtime = choose_runtime(self.artifact, runtime, threads)
        # The version of the network file this runtime loaded (ModelArtifact.version_of).
        self.version = ModelArtifact.version_of(self.runtime.path)
        self.max_pixels = max_pixels
        self.path = self.runtime.path
        log.info("loaded model %s (%s runtime)", self.path, self.runtime.name)

    def warm_up(self) -> None:
        """Run the model once so the first real request does not pay for graph set-up."""
        self.read_arrays(np.full((1, *INPUT_SHAPE), 0.9, dtype=np.float32))

    def read_arrays(
        self, batch: np.ndarray, constraints: Constraints | None = None, details: bool = False
    ) -> list[Reading]:
        """Model inputs -> readings; `constraints` (charset, length) act inside decoding. A constraint no reading
        can meet (say, more characters than time steps) raises InvalidParameter. With `details`, each reading
        carries its runner-up (decoding.runner_up)."""
        if batch.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected a batch of {INPUT_SHAPE}, got {batch.shape}")
        if len(batch) == 0:
            return []
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        started = time.perf_counter()
        probs = np.concatenate([self.runtime(batch[i : i + MODEL_BATCH]) for i in range(0, len(batch), MODEL_BATCH)])
        if self.on_model_call is not None:
            self.on_model_call(time.perf_counter() - started, len(batch))
        if constraints is None or constraints == NO_CONSTRAINTS:
            readings = greedy_decode_batch(probs, self.alphabet)
        else:
            try:
                readings = constrained_decode_batch(probs, self.alphabet, constraints)
            except ValueError as exc:
                raise InvalidParameter(str(exc)) from None
        # What the model sees before any constraint: characters at all (a step where one is likelier than the
        # blank), and how settled their number is. The count matters only where a constraint chose the reading or
        # below one half: an unconstrained reading's count is at least as likely as the reading itself.
        blank = self.alphabet.blank_index
        seen = (probs.argmax(axis=2) != blank).any(axis=1)
        constrained = constraints is not None and constraints != NO_CONSTRAINTS
        counts = np.full(len(readings), np.nan)
        unsure = np.flatnonzero([constrained or reading.confidence < 0.5 for reading in readings])
        if len(unsure):
            counts[unsure] = count_probabilities(probs[unsure], self.alphabet, self.metadata.max_length).max(axis=1)
        return [
            replace(
                reading,
                seen=bool(sees),
                count_confidence=None if np.isnan(count) else float(count),
                runner_up=runner_up(p, self.alphabet, reading, constraints) if details else None,
            )
            for p, reading, count, sees in zip(probs, readings, counts, seen)
        ]

    def read(self, data: bytes, constraints: Constraints | None = None, details: bool = False) -> Reading:
        return self.read_arrays(preprocess(data, self.max_pixels)[None], constraints, details)[0]

    def verdict(
        self, reading: Reading, constraints: Constraints | None = None, min_confidence: float | None = None
    ) -> NoReading | None:
        """Whether a reading may be answered as read, as the service answers it (confidence to CONFIDENCE_DIGITS):
        Unreadable when the model sees no character in the image (whatever a length option forced out of it), when
        it cannot tell how many characters there are (no count likelier than all the others together: noise, say),
        or, with no length asked, when it read a length outside the model's trained lengths; LowConfidence below
        `min_confidence` (None: the model's own default, metadata min_confidence); else None."""
        meta = self.metadata
        length_asked = constraints is not None and (
            constraints.min_length is not None or constraints.max_length is not None
        )
        if not reading.text or reading.seen is False:
            return Unreadable("no characters were read in the image", reading)
        if reading.count_confidence is not None and reading.count_confidence < 0.5:
            return Unreadable(
                "the model cannot tell how many characters the image holds (the likeliest count has probability "
                f"{reading.count_confidence:.2f}): it does not look like a captcha this model reads",
                reading,
            )
        if not length_asked and not meta.min_length <= len(reading.text) <= meta.max_length:
            return Unreadable(
                f"{len(reading.text)} characters were read; the model reads {meta.min_length} to {meta.max_length}"
                " (set the length option to read another number)",
                reading,
            )
        threshold = meta.min_confidence if min_confidence is None else min_confidence
        confidence = round(reading.confidence, CONFIDENCE_DIGITS)
        if confidence < threshold:
            return LowConfidence(
                f"the reading's confidence {confidence:.{CONFIDENCE_DIGITS}f} is below min_confidence {threshold:g}",
                reading,
            )
        return None

    def read_each(
        self,
        items: Sequence[bytes | CaptchaError],
        constraints: Constraints | None = None,
        budget: DecodeBudget | None = None,
        details: bool = False,
    ) -> list[Reading | CaptchaError]:
        """Several images in one model call; an image that cannot be read (or came in as an error) stays its error.
        With a `budget`, the images are decoded in order while it lasts; those past it fail alone."""
        outcomes: list = list(items)
        arrays, positions = [], []
        for index, item in enumerate(outcomes):
            if isinstance(item, CaptchaError):
                continue
            try:
                arrays.append(preprocess(item, self.max_pixels, budget))
                positions.append(index)
            except CaptchaError as exc:
                outcomes[index] = exc
        if arrays:
            for index, reading in zip(positions, self.read_arrays(np.stack(arrays), constraints, details)):
                outcomes[index] = reading
        return outcomes
