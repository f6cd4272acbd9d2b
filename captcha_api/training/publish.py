"""Publishing: a finished training run's model into the served folder, atomically and behind a gate.

Only the ONNX network and its metadata are copied (the service serves ONNX; the .keras stays in the run, for
fine-tuning). Each file is written under a hidden temporary name in the target folder and renamed over the old one,
the network first: a service (re)loading meanwhile sees the old model or the new one, never half a file, and a new
name appears only once both of its files are there.

The gate: when a model of that name is published already, both are measured on the held-out images recorded in the
new model's metadata (the same images, now), and the new one must read at least as many exactly; `force` overrides.
The metadata of the published copy records its version (the start of the SHA-256 of the network file, as the
service reports it) and the figures it was published with."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from ..core.artifact import MODEL_NAME, ModelArtifact, write_atomically
from .evaluate import evaluate

log = logging.getLogger(__name__)


class PublishRefused(Exception):
    """The model was not published; the message says why and what would publish it."""


@dataclass
class Published:
    artifact: ModelArtifact
    version: str
    figures: dict | None
    replaced: str | None  # the version it replaced, if any
    forced: bool

    def summary(self) -> str:
        where = f"published {self.artifact.name} version {self.version} to {self.artifact.folder}"
        figures = f"; held out: {_describe(self.figures)}" if self.figures else "; not measured (no held-out set)"
        replaced = f"; replaces version {self.replaced}" if self.replaced else ""
        forced = " (forced past the gate)" if self.forced else ""
        reload = "; running services take it on their next reload (kill -HUP <gunicorn master>)"
        return where + figures + replaced + forced + reload


def default_folder() -> Path:
    """The folder the service serves from, as its settings say (CAPTCHA_MODEL_DIR, else CAPTCHA_MODEL's folder)."""
    from ..service.config import load_settings

    settings = load_settings()
    return settings.models_folder or ModelArtifact.at(settings.model).folder


def run_artifact(run: Path) -> ModelArtifact:
    """runs/NAME -> its model: runs/NAME/NAME, else the one model in the folder; or the model a path names."""
    try:
        artifact = ModelArtifact.of_run(run) if run.is_dir() else ModelArtifact.at(run)
    except ValueError as several:
        raise PublishRefused(str(several)) from None
    missing = [str(p) for p in (artifact.onnx, artifact.metadata_path) if not p.is_file()]
    if missing:
        raise PublishRefused(f"{run} holds no finished model: {' and '.join(missing)} not found")
    return artifact


MIN_HELD_OUT = 20  # images: fewer measure too little to stand between a model and the service


def held_out(artifact: ModelArtifact) -> tuple[list[Path], set[str]] | None:
    """The labelled folders and held-out file names recorded at training, if they are still there and enough."""
    training = artifact.metadata().training
    folders = [Path(p) for p in training.get("real_folders", [])]
    files = set(training.get("holdout_files", []))
    if len(files) < MIN_HELD_OUT or not folders or not all(folder.is_dir() for folder in folders):
        return None
    return folders, files


def check_serves(artifact: ModelArtifact) -> None:
    """Load and run the model as the service would: a model that cannot serve is never published (after a reload,
    a default model that fails stops the workers that load it)."""
    from ..core.runtime import Recognizer

    try:
        Recognizer(artifact, "onnx").warm_up()
    except Exception as exc:  # noqa: BLE001 - whatever the runtime raises, the answer is the same: refuse
        raise PublishRefused(f"{artifact} cannot be served: {exc}") from None


def measure(artifact: ModelArtifact, holdout: tuple[list[Path], set[str]]) -> dict:
    folders, files = holdout
    try:
        return evaluate(artifact.onnx, folders, runtime="onnx", files=files)[0]
    except Exception as exc:  # noqa: BLE001 - a held-out set that cannot be read is a refusal, not a traceback
        raise PublishRefused(f"could not measure {artifact} on its held-out images: {exc}") from None


def _describe(figures: dict) -> str:
    return f"{figures['exact_match']:.2%} exact, {figures['char_accuracy']:.2%} of characters, on {figures['n']} images"


def publish(run: Path, to: Path | None = None, force: bool = False) -> Published:
    source = run_artifact(run)
    if not MODEL_NAME.fullmatch(source.name):
        raise PublishRefused(
            f"{source.name!r} is not a model name: letters, digits, '.', '_', '-', a letter or digit first"
        )
    check_serves(source)
    folder = to if to is not None else default_folder()
    target = ModelArtifact(folder / source.name)
    version = ModelArtifact.version_of(source.onnx)
    holdout = held_out(source)
    figures = measure(source, holdout) if holdout else None
    replaced, forced = None, False
    if target.onnx.is_file():
        replaced = ModelArtifact.version_of(target.onnx)
        if replaced == version:
            raise PublishRefused(f"{target} is version {version} already: nothing to publish")
        if figures is None:
            if not force:
                raise PublishRefused(
                    f"{target.name} is published already, and {source} records no held-out set (at least "
                    f"{MIN_HELD_OUT} images, still there) to compare the two on; --force publishes it unmeasured"
                )
            forced = True
        else:
            current = measure(target, holdout)
            if figures["exact_match"] < current["exact_match"]:
                if not force:
                    raise PublishRefused(
                        f"the new {source.name} reads worse than the published one on the same held-out images: "
                        f"new {_describe(figures)}; published {_describe(current)}; --force publishes it anyway"
                    )
                forced = True
    meta = source.metadata()
    meta.published = {
        "version": version,
        "at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "from": str(source.folder.resolve()),
        "held_out": {k: figures[k] for k in ("n", "exact_match", "char_accuracy")} if figures else None,
        "replaced": replaced,
        "forced": forced,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(target.onnx, source.onnx.read_bytes())
    write_atomically(target.metadata_path, meta.to_json().encode("utf-8"))
    published = Published(target, version, figures, replaced, forced)
    log.info("%s", published.summary())
    return published
