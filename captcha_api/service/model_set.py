"""The models a worker serves: every model in a folder, one of them the default, each loaded once. A model that
cannot be served (no file for the runtime, a load or warm-up failure) is left out with its reason, which /info
lists; the others serve. The default model failing stops start-up."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..core.artifact import ModelArtifact
from ..core.errors import ModelNotReady
from ..core.runtime import Recognizer
from .config import PREFIX, ConfigError
from .errors import UnknownModel

log = logging.getLogger(__name__)


@dataclass
class ModelSet:
    default_name: str
    recognizers: dict[str, Recognizer] = field(default_factory=dict)
    not_served: dict[str, str] = field(default_factory=dict)  # name -> why it is not served

    @property
    def default(self) -> Recognizer | None:
        return self.recognizers.get(self.default_name)

    def get(self, name: str | None = None) -> Recognizer:
        """The named model, or the default one; 404 for a name not served, 503 when the default is not loaded."""
        if name is None:
            if self.default is None:
                raise ModelNotReady("no model is loaded")
            return self.default
        recognizer = self.recognizers.get(name)
        if recognizer is None:
            served = ", ".join(sorted(self.recognizers)) or "none"
            raise UnknownModel(f"no model named {name!r} is served; models: {served}")
        return recognizer


def _unservable(artifact: ModelArtifact, runtime: str) -> str | None:
    """Why this runtime cannot serve the artifact at all, without loading it; None when it may."""
    if runtime == "onnx" and not artifact.onnx.is_file():
        return (
            f"no {artifact.onnx.name}: {PREFIX}RUNTIME=onnx serves ONNX models only (export it: captcha-ocr export "
            f"--model {artifact.keras}; or serve Keras models, with TensorFlow in every worker: {PREFIX}RUNTIME=keras)"
        )
    if runtime == "keras" and not artifact.keras.is_file():
        return f"no {artifact.keras.name}: {PREFIX}RUNTIME=keras serves Keras models only"
    return None


def load(artifact: ModelArtifact, settings) -> Recognizer:
    """Load and warm up one model; any failure raises, with its reason."""
    reason = _unservable(artifact, settings.runtime)
    if reason:
        raise ValueError(reason)
    recognizer = Recognizer(artifact, settings.runtime, settings.threads, settings.max_pixels)
    # Inside the caller's guard: metadata that does not fit its network fails here, at its first run.
    recognizer.warm_up()
    return recognizer


def load_models(settings) -> ModelSet:
    """CAPTCHA_MODEL is the default model; every model in CAPTCHA_MODEL_DIR (default: the default model's folder)
    is served beside it. A model of the folder that fails is logged and left out (ModelSet.not_served); the
    default failing raises ConfigError, one line naming CAPTCHA_MODEL."""
    default = ModelArtifact.at(settings.model)
    artifacts = ModelArtifact.find_all(settings.models_folder) if settings.models_folder else {}
    artifacts[default.name] = default  # the configured file wins over a namesake in the folder
    models = ModelSet(default.name)
    for name, artifact in sorted(artifacts.items()):
        try:
            models.recognizers[name] = load(artifact, settings)
        except Exception as exc:  # noqa: BLE001 - a file left in the folder must never stop the service
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            reason = reason.replace(f"{artifact.folder}{os.sep}", "")  # /info shows it: file names, not paths
            if name == default.name:
                raise ConfigError(
                    f"{PREFIX}MODEL={settings.model}: the default model cannot be served: {reason}"
                ) from None
            log.error("model %s is not served: %s", artifact, reason)
            models.not_served[name] = reason
    return models
