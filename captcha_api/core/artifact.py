"""A model on disk (ModelArtifact: its files, side by side) and the JSON metadata that makes it self-describing
(ModelMetadata: alphabet, blank index, input size, figures)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
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
    published: dict = field(default_factory=dict)  # version, figures and time, written by `publish`
    # Readings less confident than this (0 to 1) are refused where a request sets no threshold of its own.
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if self.blank_index != len(self.alphabet):
            raise ValueError(f"blank index {self.blank_index} must follow the {len(self.alphabet)} characters")
        number = isinstance(self.min_confidence, int | float) and not isinstance(self.min_confidence, bool)
        if not (number and 0 <= self.min_confidence <= 1):
            raise ValueError(f"min_confidence must be a number from 0 to 1, not {self.min_confidence!r}")

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2) + "\n"

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


SUFFIXES = (".onnx", ".keras", ".json")
# A model's name: it is a request option, a folder name for its reports and a file name, so a plain one.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
VERSION_CHARS = 12


@dataclass(frozen=True)
class ModelArtifact:
    """A model as files: FOLDER/NAME.onnx (served by ONNX Runtime), FOLDER/NAME.keras (trained, served by Keras) and
    FOLDER/NAME.json (its metadata), side by side. Every path of a model is derived here and nowhere else."""

    base: Path  # FOLDER/NAME, without suffix

    @classmethod
    def at(cls, path: Path | str) -> ModelArtifact:
        """A model path with or without one of its suffixes (model/fssp, model/fssp.onnx, ...). Only those suffixes
        are taken off: a name may hold dots of its own (model/fssp.v2)."""
        path = Path(path)
        return cls(path.with_suffix("") if path.suffix in SUFFIXES else path)

    @classmethod
    def find_all(cls, folder: Path | str) -> dict[str, ModelArtifact]:
        """name -> artifact, for every NAME.json in the folder with NAME.onnx or NAME.keras beside it."""
        found = {}
        for meta in sorted(Path(folder).glob("*.json")):
            artifact = cls(meta.with_suffix(""))
            if artifact.has_network and MODEL_NAME.fullmatch(artifact.name):
                found[artifact.name] = artifact
        return found

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def folder(self) -> Path:
        return self.base.parent

    @property
    def onnx(self) -> Path:
        return self.base.with_name(self.name + ".onnx")

    @property
    def keras(self) -> Path:
        return self.base.with_name(self.name + ".keras")

    @property
    def metadata_path(self) -> Path:
        return self.base.with_name(self.name + ".json")

    @property
    def has_network(self) -> bool:
        return self.onnx.is_file() or self.keras.is_file()

    def metadata(self) -> ModelMetadata:
        return ModelMetadata.load(self.metadata_path)

    @classmethod
    def of_run(cls, folder: Path | str) -> ModelArtifact:
        """The model a training run's folder holds: runs/NAME/NAME, else the one model in it."""
        folder = Path(folder)
        found = cls.find_all(folder)
        if folder.name in found:
            return found[folder.name]
        if len(found) > 1:
            raise ValueError(f"{folder} holds several models ({', '.join(sorted(found))}): name one, {folder}/NAME")
        return next(iter(found.values()), cls(folder / folder.name))

    @classmethod
    def starting_point(cls, given: Path | str) -> tuple[Path, ModelMetadata | None]:
        """Where the Keras weights of a model to fine-tune are: `given` is a .keras file, a run (runs/NAME), or a
        served model (model/NAME: its .keras beside it, else the one in the run it was published from, which
        `publish` records; the served folder holds only the ONNX network). Returns the file and the metadata."""
        given = Path(given)
        artifact = cls.of_run(given) if given.is_dir() else cls.at(given)
        meta = artifact.metadata() if artifact.metadata_path.is_file() else None
        candidates = [artifact.keras]
        if meta is not None and meta.published.get("from"):
            candidates.append(cls(Path(meta.published["from"]) / artifact.name).keras)
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            raise ValueError(
                f"--init-from {given}: no Keras weights to start from (looked for "
                f"{', '.join(map(str, candidates))}); a published model keeps them in the run it came from"
            )
        return found, meta

    @staticmethod
    def version_of(network: Path) -> str:
        """A model's version: the start of the SHA-256 of its network file, so the same weights always carry the
        same version, wherever they are copied, and any retraining a new one."""
        digest = hashlib.sha256()
        with open(network, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()[:VERSION_CHARS]

    def __str__(self) -> str:
        return str(self.base)


def write_atomically(path: Path, data: bytes) -> None:
    """Write aside in the same folder, flush to disk, rename over: readers see the old file or the new one, never
    half of one (published models, stored reports)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
