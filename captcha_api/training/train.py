"""Training: generated plus real labelled captchas, validation on held-out real images, early stopping,
checkpoints that a later run resumes from, and a training-curve PNG."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.alphabet import FSSP, PAD, Alphabet
from ..core.artifact import ModelArtifact, ModelMetadata
from ..core.decoding import greedy_decode_batch
from .data import GRABBED_SHARE, LabelledFolder, augment, encode_labels, load_images, read_labels, split_holdout

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from .network import ARCHITECTURE, build_training_model, inference_model, make_ctc_loss  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    name: str = "fssp"
    synthetic: list[Path] = field(default_factory=list)
    real: list[Path] = field(default_factory=list)
    # Labelled folders held out whole (never trained on), instead of a share of `real`: fine-tuning on a handful of
    # reported images keeps every one of them for training and is measured on these.
    holdout: list[Path] = field(default_factory=list)
    # Real images left out of the run altogether, by file name: a k-fold run's held-out fold (kfold.py), measured
    # afterwards, never seen, not even to choose the epoch.
    exclude: frozenset[str] = frozenset()
    val_real: int = 80
    val_fraction: float | None = None  # instead of val_real: this share of the real images, 20 to 300 of them
    # None: until the held-out figure stops improving (`patience` epochs without a better one), at most MAX_EPOCHS;
    # the learning rate is halved after every PLATEAU epochs without improvement. A number: that many epochs, on a
    # cosine schedule, stopping early after `patience`.
    epochs: int | None = 30
    max_minutes: float | None = None  # stop after the first epoch that ends past this much training time
    batch_size: int = 64
    learning_rate: float = 1e-3
    real_repeat: int | None = 20  # None: enough to make SAMPLES_PER_EPOCH
    synthetic_per_epoch: int = 20000
    patience: int = 6
    # Everything a run writes: checkpoints, the best model (NAME.keras, .onnx, .json), curve and report. Never the
    # served folder: `publish` copies a finished model there.
    work_dir: Path = Path("runs/fssp")
    seed: int = 0
    resume: bool = True
    init_from: Path | None = None
    synthetic_strength: float = 0.35
    real_strength: float = 1.0
    grabbed: float = GRABBED_SHARE  # share of the images (generated and real) made worse as a scraper may grab them
    max_length: int | None = None
    alphabet: str | None = None

    def keep_starting_point(self) -> None:
        """Fine-tuning keeps the starting model's alphabet and lengths: its output layer is sized by them, and a
        feedback folder need not hold every character."""
        if self.init_from:
            _, meta = ModelArtifact.starting_point(self.init_from)
            if meta is not None:
                self.alphabet, self.max_length = meta.alphabet, meta.max_length


SAMPLES_PER_EPOCH = 16000
MAX_EPOCHS = 300
PLATEAU = 3
# Real images whose label holds the same character twice in a row are seen this many times as often: a doubled
# letter needs the network to put a blank between its two halves, the rarest thing in most folders to learn
# ("gg" read as "g" was half the misses of a 1,500-image folder trained without it).
DOUBLED_WEIGHT = 2
# 25 time steps: a reading longer than this could not fit once repeated characters need a blank between them.
MAX_READABLE_LENGTH = 12


def holdout_count(config: TrainConfig, total: int) -> int:
    if config.val_fraction is not None:
        return min(300, max(20, round(total * config.val_fraction)), total // 2)
    return min(config.val_real, total // 2)


def choose_alphabet(texts: list[str], requested: str | None) -> Alphabet:
    if requested:
        return Alphabet(requested)
    if FSSP.covers("".join(texts)):
        return FSSP
    return Alphabet("".join(sorted(set("".join(texts)))))


def concat(folders: list[LabelledFolder]) -> LabelledFolder:
    if not folders:
        return LabelledFolder(Path("."), [], [])
    return LabelledFolder(folders[0].root, [f for d in folders for f in d.files], [t for d in folders for t in d.texts])


class MixedBatches(keras.utils.PyDataset):
    """Each epoch: a fresh sample of generated images and every real training image `repeat` times, shuffled,
    augmented per batch (real images harder than generated ones)."""

    def __init__(self, syn_x, syn_y, real_x, real_y, config: TrainConfig):
        super().__init__(workers=2)
        self.x = np.concatenate([syn_x, real_x]) if len(real_x) else syn_x
        self.y = np.concatenate([syn_y, real_y]) if len(real_y) else syn_y
        self.is_real = np.r_[np.zeros(len(syn_x), bool), np.ones(len(real_x), bool)]
        self.n_syn = len(syn_x)
        times = np.where([has_doubled(row) for row in real_y], DOUBLED_WEIGHT, 1) * config.real_repeat
        self.real_index = np.repeat(np.arange(len(syn_x), len(self.x)), times.astype(np.int64))
        self.config = config
        self.epoch = 0
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(
            (min(self.n_syn, self.config.synthetic_per_epoch) + len(self.real_index)) / self.config.batch_size
        )

    def on_epoch_end(self) -> None:
        rng = np.random.default_rng([self.config.seed, self.epoch])
        synthetic = rng.choice(self.n_syn, size=min(self.n_syn, self.config.synthetic_per_epoch), replace=False)
        self.order = rng.permutation(np.r_[synthetic, self.real_index])
        self.epoch += 1

    def __getitem__(self, i):
        ids = self.order[i * self.config.batch_size : (i + 1) * self.config.batch_size]
        rng = np.random.default_rng([self.config.seed, self.epoch, i])
        real = self.is_real[ids]
        batch = np.empty((len(ids), *self.x.shape[1:]), dtype=np.float32)
        if (~real).any():
            batch[~real] = augment(self.x[ids[~real]], rng, self.config.synthetic_strength, self.config.grabbed)
        if real.any():
            batch[real] = augment(self.x[ids[real]], rng, self.config.real_strength, self.config.grabbed)
        return batch, self.y[ids]


def has_doubled(encoded: np.ndarray) -> bool:
    """Whether an encoded label (encode_labels: classes, then PAD) holds the same character twice in a row."""
    label = encoded[encoded != PAD]
    return bool(len(label) > 1 and (label[1:] == label[:-1]).any())


class Progress(keras.callbacks.Callback):
    """Exact match on held-out real and generated images each epoch; keeps the best serving model,
    checkpoints for resume, stops early, draws the training curve."""

    def __init__(self, config, alphabet, val_sets, state, metadata):
        super().__init__()
        self.config, self.alphabet, self.val_sets, self.state, self.metadata = (
            config,
            alphabet,
            val_sets,
            state,
            metadata,
        )
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        if self.config.epochs is not None:
            self.model.optimizer.learning_rate.assign(cosine_lr(epoch, self.config))
        else:
            self.model.optimizer.learning_rate.assign(plateau_lr(epoch, self.state, self.config))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        serving = inference_model(self.model)
        for key, (x, texts) in self.val_sets.items():
            probs = np.asarray(serving.predict(x, batch_size=256, verbose=0))
            readings = greedy_decode_batch(probs, self.alphabet)
            logs[f"{key}_exact"] = float(np.mean([r.text == t for r, t in zip(readings, texts)]))
        logs["lr"] = float(self.model.optimizer.learning_rate.numpy())
        self.state["seconds"] += time.monotonic() - self.started
        self.started = time.monotonic()
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        self.state["history"].append(record)
        score = selection_score(record)
        # Nothing to judge by (no held-out or generated validation images): every epoch is the best so far, and the
        # last is kept.
        if self.state["best"] is None or score > tuple(self.state["best"]) or not self.val_sets:
            self.state["best"] = list(score)
            self.state["best_epoch"] = epoch + 1
            self.save_serving(serving)
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
        self.model.save(self.config.work_dir / "last.keras")
        self.state["epoch"] = epoch + 1
        (self.config.work_dir / "state.json").write_text(json.dumps(self.state, indent=1))
        plot_curve(self.state["history"], self.config.work_dir / "curve.png")
        if epoch + 1 - self.state["best_epoch"] >= self.config.patience:
            log.info("no improvement for %d epochs: stopping", self.config.patience)
            self.model.stop_training = True
        if self.config.max_minutes is not None and self.state["seconds"] >= 60 * self.config.max_minutes:
            log.info("%.0f minutes of training: stopping (--max-minutes)", self.state["seconds"] / 60)
            self.model.stop_training = True

    def save_serving(self, serving):
        artifact = ModelArtifact(self.config.work_dir / self.config.name)
        keras_path, meta_path = artifact.keras, artifact.metadata_path
        serving.save(keras_path)
        self.metadata.training.update(
            best_epoch=self.state["best_epoch"],
            training_seconds=round(self.state["seconds"]),
            history=self.state["history"],
        )
        self.metadata.save(meta_path)
        log.info("saved %s", keras_path)


def selection_score(record: dict) -> tuple[float, float, float]:
    """Which epoch to keep: exact match on the held-out real images, then on the generated validation images
    (many and cleanly labelled), then the real validation loss. The loss comes last because a single mislabelled
    real image dominates it: the surer the model is of the right reading, the higher that loss."""
    return (record.get("val_exact", 0.0), record.get("syn_exact", 0.0), -record.get("val_loss", 0.0))


def describe_generated(folder: Path) -> dict:
    """The recipe a generated folder was made with (seed, count, fonts), when it says."""
    recipe = folder / "generator.json"
    described = {"folder": folder.name}
    if recipe.is_file():
        described.update(json.loads(recipe.read_text(encoding="utf-8")))
    return described


def cosine_lr(epoch: int, config: TrainConfig) -> float:
    warm = 1
    if epoch < warm:
        return config.learning_rate * 0.3
    progress = (epoch - warm) / max(1, config.epochs - warm)
    return max(1e-5, config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress)))


def plateau_lr(epoch: int, state: dict, config: TrainConfig) -> float:
    """Open-ended training: 0.3x for the first epoch, then the full rate, halved once for every PLATEAU epochs the
    held-out figure has gone without improving, down to 1e-5."""
    if epoch < 1:
        return config.learning_rate * 0.3
    history = state["history"]
    best, best_epoch, halvings = None, 0, 0
    for record in history[:epoch]:
        score = selection_score(record)
        if best is None or score > best:
            best, best_epoch = score, record["epoch"]
        elif (record["epoch"] - best_epoch) % PLATEAU == 0:
            halvings += 1
    return max(1e-5, config.learning_rate * 0.5**halvings)


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, label in (("loss", "training"), ("val_loss", "held-out real")):
        left.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_title("CTC loss")
    left.legend()
    for key, label in (("val_exact", "held-out real"), ("syn_exact", "generated validation")):
        right.plot(epochs, [h.get(key, np.nan) for h in history], label=label)
    right.set_xlabel("epoch")
    right.set_title("exact match")
    right.set_ylim(0, 1)
    right.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train(config: TrainConfig) -> Path:
    keras.utils.set_random_seed(config.seed)
    config.work_dir.mkdir(parents=True, exist_ok=True)
    synthetic = concat([read_labels(p) for p in config.synthetic])
    real = concat([read_labels(p) for p in config.real])
    if config.exclude:
        real = real.subset([i for i, path in enumerate(real.files) if path.name not in config.exclude])
    if not len(synthetic) and not len(real):
        raise ValueError("no training data: give --synthetic and/or --real folders")
    if config.holdout:
        real_train, real_val = real, concat([read_labels(p) for p in config.holdout])
    else:
        real_train, real_val = (
            split_holdout(real, holdout_count(config, len(real)), config.seed) if len(real) else (real, real)
        )
    if config.real_repeat is None:
        # Own-style data alone: each epoch sees about SAMPLES_PER_EPOCH augmented images whatever the set's size.
        config.real_repeat = 1 if len(synthetic) else max(1, round(SAMPLES_PER_EPOCH / max(1, len(real_train))))
    syn_train, syn_val = (
        (synthetic.subset(range(len(synthetic) - 1000)), synthetic.subset(range(len(synthetic) - 1000, len(synthetic))))
        if len(synthetic) > 5000
        else (synthetic, synthetic.subset([]))
    )
    all_texts = synthetic.texts + real.texts
    alphabet = choose_alphabet(all_texts, config.alphabet)
    max_length = config.max_length or max(7 if alphabet == FSSP else 0, max(map(len, all_texts)))
    if max_length > MAX_READABLE_LENGTH:
        raise ValueError(
            f"labels of up to {max_length} characters: this model family reads at most {MAX_READABLE_LENGTH}"
        )

    log.info(
        "loading images: %d generated, %d real for training, %d real held out",
        len(syn_train),
        len(real_train),
        len(real_val),
    )
    t0 = time.monotonic()
    syn_x = load_images(syn_train.files)
    real_x = load_images(real_train.files)
    val_x = load_images(real_val.files).astype(np.float32) / 255.0 if len(real_val) else None
    sval_x = load_images(syn_val.files).astype(np.float32) / 255.0 if len(syn_val) else None
    log.info("loaded in %.0f s", time.monotonic() - t0)
    syn_y = encode_labels(syn_train.texts, alphabet, max_length)
    real_y = encode_labels(real_train.texts, alphabet, max_length)

    data = MixedBatches(syn_x, syn_y, real_x, real_y, config)
    val_sets = {}
    validation_data = None
    if val_x is not None:
        val_sets["val"] = (val_x, real_val.texts)
        validation_data = (val_x, encode_labels(real_val.texts, alphabet, max_length))
    if sval_x is not None:
        val_sets["syn"] = (sval_x, syn_val.texts)

    loss = make_ctc_loss(alphabet.blank_index)
    state_path = config.work_dir / "state.json"
    last = config.work_dir / "last.keras"
    if config.resume and last.is_file() and state_path.is_file():
        model = keras.saving.load_model(last, custom_objects={"ctc_loss": loss})
        state = json.loads(state_path.read_text())
        log.info("resuming from %s after epoch %d", last, state["epoch"])
        best = max(state["history"], key=selection_score)
        state["best"], state["best_epoch"] = list(selection_score(best)), best["epoch"]
    else:
        model = build_training_model(alphabet.num_classes)
        if config.init_from:
            source = keras.saving.load_model(ModelArtifact.starting_point(config.init_from)[0], compile=False)
            for layer in model.layers:
                if layer.weights and layer.name in {lyr.name for lyr in source.layers}:
                    layer.set_weights(source.get_layer(layer.name).get_weights())
            log.info("initialised from %s", config.init_from)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=5.0), loss=loss)
        state = {"epoch": 0, "best": None, "best_epoch": 0, "seconds": 0.0, "history": []}
    data.epoch = state["epoch"]
    data.on_epoch_end()

    metadata = ModelMetadata(
        name=config.name,
        alphabet=alphabet.chars,
        blank_index=alphabet.blank_index,
        max_length=max_length,
        min_length=min(map(len, all_texts)),
        version=__version__,
        architecture=ARCHITECTURE,
        training={
            "generated_images": len(syn_train),
            "generated_folders": [describe_generated(p) for p in config.synthetic],
            "real_images": len(real_train),
            "real_folders": [str(p) for p in config.real + config.holdout],
            "real_repeat_per_epoch": config.real_repeat,
            "generated_per_epoch": min(len(syn_train), config.synthetic_per_epoch),
            "holdout_files": [f.name for f in real_val.files],
            "batch_size": config.batch_size,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        },
    )
    progress = Progress(config, alphabet, val_sets, state, metadata)
    if state["epoch"] and state["best_epoch"] == state["epoch"]:
        progress.save_serving(inference_model(model))  # the checkpoint resumed from is the best so far
    model.fit(
        data,
        epochs=config.epochs if config.epochs is not None else MAX_EPOCHS,
        initial_epoch=state["epoch"],
        validation_data=validation_data,
        # Progress before Keras' bar, so that the bar's last line of an epoch shows the held-out figure Progress
        # measured (val_exact). A bar redrawn in place on a terminal; elsewhere (a log file, a pipe) one line an
        # epoch: Keras redraws on any POSIX stdout, filling a log with escape codes and backspaces.
        callbacks=[progress, keras.callbacks.ProgbarLogger()],
        verbose=1 if sys.stdout.isatty() else 2,
    )
    keras_path = ModelArtifact(config.work_dir / config.name).keras
    log.info("best epoch %d; model at %s; %.0f s of training", state["best_epoch"], keras_path, state["seconds"])
    finish(keras_path, config.real + config.holdout, bool(len(real_val)))
    return keras_path


def finish(keras_path: Path, real_folders: list[Path], has_holdout: bool) -> None:
    """Export the kept model to ONNX and measure it on the held-out real images, recorded in its metadata."""
    from .evaluate import evaluate, record
    from .export import export_onnx

    export_onnx(keras_path)
    if not has_holdout:
        return
    artifact = ModelArtifact.at(keras_path)
    meta = artifact.metadata()
    figures, mistakes, _ = evaluate(artifact.onnx, real_folders, "onnx", set(meta.training["holdout_files"]))
    record(keras_path, "validation", figures, holdout=True)
    report = {"held_out": figures, "mistakes": mistakes}
    (artifact.folder / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    log.info(
        "held-out real images: %d, exact match %.2f%%, character accuracy %.2f%%",
        figures["n"],
        100 * figures["exact_match"],
        100 * figures["char_accuracy"],
    )
