"""The models a worker serves: every model in a folder, one of them the default, each loaded once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..core.artifact import ModelArtifact
from ..core.errors import ModelNotReady
from ..core.runtime import Recognizer
from .errors import UnknownModel

log = logging.getLogger(__name__)


@dataclass
class ModelSet:
    default_name: str
    recognizers: dict[str, Recognizer] = field(default_factory=dict)

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


def load_models(settings) -> ModelSet:
    """CAPTCHA_MODEL is the default model; every model in CAPTCHA_MODEL_DIR (default: the default model's folder)
    is served beside it. A model that fails to load is logged and left out; without the default the service
    answers 503 until it is fixed."""
    default = ModelArtifact.at(settings.model)
    artifacts = ModelArtifact.find_all(settings.models_folder) if settings.models_folder else {}
    artifacts[default.name] = default  # the configured file wins over a namesake in the folder
    models = ModelSet(default.name)
    for name, artifact in sorted(artifacts.items()):
        try:
            recognizer = Recognizer(artifact, settings.runtime, settings.threads, settings.max_pixels)
            # Inside the same guard: metadata that does not fit its network fails here, at its first run.
            recognizer.warm_up()
        except Exception as exc:  # noqa: BLE001 - a file left in the folder must never stop the service
            log.error("could not load the model %s: %s", artifact, exc)
            continue
        models.recognizers[name] = recognizer
    return models
