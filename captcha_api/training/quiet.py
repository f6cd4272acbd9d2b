"""The training commands print their own progress and figures; TensorFlow, absl, Keras and tf2onnx are muted around
them: CPU-instruction and oneDNN notices, CUDA probes on a machine without a GPU, graph-freezing notes from an export
that is then checked against the Keras model anyway (export.check_export). Their errors still show, as exceptions."""

from __future__ import annotations

import logging
import os
import warnings

# Python loggers of the frameworks: what they say at INFO and WARNING is about their own internals.
FRAMEWORK_LOGGERS = ("tensorflow", "absl", "tf2onnx")
# Warnings raised from inside the frameworks themselves, the same list as pyproject.toml's for the tests. A warning
# they attribute to our code (stacklevel) is not matched, and still shows.
FRAMEWORK_MODULES = r"(keras|tensorflow|tf2onnx|google\.protobuf)(\.|$)"


def quiet_frameworks() -> None:
    """Call before TensorFlow is imported: its C++ logging reads TF_CPP_MIN_LOG_LEVEL once, when it loads."""
    # 3 hides ERROR lines too: on a machine without a GPU, TensorFlow's CUDA probe reports itself at that level. A
    # level already in the environment (someone debugging TensorFlow) is kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in FRAMEWORK_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=FRAMEWORK_MODULES)
