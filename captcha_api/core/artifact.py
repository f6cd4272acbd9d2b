"""The JSON metadata that makes an artifact self-describing: alphabet, blank index, input size, figures."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .alphabet import Alphabet
from .preprocess import IMAGE_HEIGHT, IMAGE_WIDTH


def _shipped_models() -> Path:
    """The folder of the shipped models: inside the package once installed (pyproject.toml maps model/ to
    captcha_api/shipped_model), else model/ beside the package in a checkout."""
    installed = Path(__file__).resolve().parents[1] / "shipped_model"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "model"


MODEL_DIR = _shipped_models()
DEFAULT_MODEL = MODEL_DIR / "fssp"


@dataclass
class ModelMetadata:
    name: str
    alphabet: str
    blank_index: int
    max_length: int
    min_length: int = 1
    input_width: int = IMAGE_WIDTH
    input_height: int = IMAGE_HEIGHT
    input_layout: str = "NWHC float32 [0,1], one grey channel"
    version: str = "1.0.0"
    architecture: str = ""
    training: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.blank_index != len(self.alphabet):
            raise ValueError(f"blank index {self.blank_index} must follow the {len(self.alphabet)} characters")

    @property
    def charset(self) -> Alphabet:
        return Alphabet(self.alphabet)

    @classmethod
    def load(cls, path: Path) -> ModelMetadata:
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
        try:
            return cls(**fields)
        except TypeError as exc:  # missing or unknown fields
            raise ValueError(f"{path} is not model metadata: {exc}") from None

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def artifact_paths(model: Path | str) -> tuple[Path, Path, Path]:
    """A model path with or without suffix -> (.keras, .onnx, .json)."""
    base = Path(model)
    if base.suffix in (".keras", ".onnx", ".json"):
        base = base.with_suffix("")
    return base.with_suffix(".keras"), base.with_suffix(".onnx"), base.with_suffix(".json")
