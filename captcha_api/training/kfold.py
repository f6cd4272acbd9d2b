"""K-fold readings of a labelled folder: every image read by a model that never saw it.

The folder's images are dealt into K folds (seeded, by file name). For each fold a model is trained on the other
folds (and any generated data), the fold left out altogether: not trained on, not used to choose the epoch (that is
done on generated validation images, or the last epoch is kept). Each model then reads its own fold, as it comes and
degraded (degrade.py). The pooled readings measure accuracy and confidence on real images without holding out a
single small split, and audit a folder's labels (audit.py) without a model that trained on the slips.

Layout of WORK_DIR: folds.json (the data, K, seed and each fold's file names), fold-I/ (a training run each, resumed
like any other; fold-I/done once finished)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.artifact import ModelArtifact
from ..core.preprocess import preprocess_batch
from ..core.runtime import Recognizer
from .data import read_labels
from .degrade import degrade

log = logging.getLogger(__name__)

BATCH = 64


@dataclass(frozen=True)
class Row:
    """One image read by the fold model that did not train on it."""

    file: str
    kind: str  # "clean", or the degradation's name
    label: str
    reading: str
    confidence: float
    refused: str | None  # the code the service answers it with at min_confidence 0 ("unreadable"), else None
    fold: int


def deal(names: list[str], k: int, seed: int) -> list[list[str]]:
    """`names` dealt into k folds of nearly equal size: a seeded shuffle of the sorted names, independent of order."""
    if not 2 <= k <= len(names):
        raise ValueError(f"k-fold needs 2 to {len(names)} folds, not {k}")
    order = sorted(names)
    np.random.default_rng(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def train_folds(data: Path, k: int, work_dir: Path, base, seed: int = 0) -> list[Path]:
    """Train the K fold models of `data` with `base` (a TrainConfig: generated data, epochs, starting point...);
    a finished fold is kept, an unfinished one resumed. Returns each fold's model base path."""
    from .train import train

    work_dir.mkdir(parents=True, exist_ok=True)
    plan_path = work_dir / "folds.json"
    folder = read_labels(data)
    folds = deal([p.name for p in folder.files], k, seed)
    # the folder's absolute path: the plan is read from other working directories (evaluate, audit)
    plan = {"data": str(Path(data).resolve()), "k": k, "seed": seed, "folds": folds}
    if plan_path.is_file() and json.loads(plan_path.read_text(encoding="utf-8")) != plan:
        raise ValueError(f"{work_dir} holds folds of another plan (data, k, seed or files differ): use another dir")
    plan_path.write_text(json.dumps(plan, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    models = []
    for index, held_out in enumerate(folds):
        fold_dir = work_dir / f"fold-{index}"
        name = f"fold-{index}"
        models.append(fold_dir / name)
        if (fold_dir / "done").is_file():
            log.info("fold %d of %d: finished before", index + 1, k)
            continue
        log.info(
            "fold %d of %d: training on %d images, %d left out",
            index + 1,
            k,
            len(folder) - len(held_out),
            len(held_out),
        )
        config = replace(
            base,
            name=name,
            real=[data],
            holdout=[],
            exclude=frozenset(held_out),
            val_real=0,
            val_fraction=None,
            work_dir=fold_dir,
        )
        train(config)
        (fold_dir / "done").write_text("finished\n")
    return models


def pooled(work_dir: Path, kinds: tuple[str, ...] = (), runtime: str = "onnx") -> list[Row]:
    """Each fold's images read by its own model: as they come, and degraded by each of `kinds`."""
    plan = json.loads((work_dir / "folds.json").read_text(encoding="utf-8"))
    folder = read_labels(Path(plan["data"]))
    by_name = {p.name: (p, text) for p, text in zip(folder.files, folder.texts)}
    rows = []
    for index, names in enumerate(plan["folds"]):
        model = ModelArtifact(work_dir / f"fold-{index}" / f"fold-{index}")
        if not (model.folder / "done").is_file():
            raise ValueError(f"fold {index} of {work_dir} is not trained yet: run `captcha-ocr kfold` to finish it")
        recognizer = Recognizer(model.base, runtime)
        rows.extend(read_rows(recognizer, [by_name[n] for n in names], ("clean", *kinds), index))
    return rows


def read_rows(recognizer: Recognizer, labelled: list[tuple[Path, str]], kinds: tuple[str, ...], fold: int = -1):
    """Rows for these (path, label) pairs read by `recognizer` as each of `kinds` makes them: "clean" (as they come)
    or a degradation's name."""
    rows = []
    for kind in kinds:
        for start in range(0, len(labelled), BATCH):
            chunk = labelled[start : start + BATCH]
            blobs = [p.read_bytes() if kind == "clean" else degrade(p.read_bytes(), kind, p.name) for p, _ in chunk]
            readings = recognizer.read_arrays(preprocess_batch(blobs))
            rows.extend(row(recognizer, path.name, kind, label, r, fold) for (path, label), r in zip(chunk, readings))
    return rows


def row(recognizer: Recognizer, file: str, kind: str, label: str, reading, fold: int = -1) -> Row:
    """The Row of one reading (runtime.Reading) of `recognizer`, judged as the service answers it."""
    refusal = recognizer.verdict(reading, None, 0.0)
    return Row(
        file,
        kind,
        label,
        reading.text,
        round(float(reading.confidence), 6),
        None if refusal is None else refusal.code,
        fold,
    )


def main(args) -> int:
    from .train import TrainConfig

    base = TrainConfig(
        synthetic=[Path(p) for p in args.synthetic],
        epochs=args.epochs,
        patience=args.epochs,
        real_repeat=args.real_repeat,
        synthetic_per_epoch=args.synthetic_per_epoch,
        grabbed=args.grabbed,
        learning_rate=args.learning_rate,
        init_from=Path(args.init_from) if args.init_from else None,
        seed=args.seed,
    )
    base.keep_starting_point()
    work_dir = Path(args.work_dir)
    models = train_folds(Path(args.data), args.folds, work_dir, base, args.seed)
    print(f"{len(models)} fold models in {work_dir}: read their held-out folds with")
    print(f"  captcha-ocr evaluate --data {args.data} --kfold {work_dir} [--degrade]")
    print(f"  captcha-ocr audit --data {args.data} --kfold {work_dir}")
    return 0
