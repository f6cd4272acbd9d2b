"""The command by which every model here is judged: exact match, character accuracy, length errors,
confusions and time per image on a labelled folder."""

from __future__ import annotations

import csv
import datetime
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..core.artifact import ModelArtifact
from ..core.preprocess import preprocess_batch
from ..core.runtime import Recognizer
from .data import read_labels
from .kfold import row as pool_row
from .sheet import SheetRow, draw

log = logging.getLogger(__name__)


def edit_ops(truth: str, guess: str) -> tuple[int, list[tuple[str, str]]]:
    """Levenshtein distance and the substituted (truth, guess) character pairs along one best alignment."""
    n, m = len(truth), len(guess)
    dist = np.zeros((n + 1, m + 1), dtype=np.int32)
    dist[:, 0] = np.arange(n + 1)
    dist[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            dist[i, j] = min(
                dist[i - 1, j] + 1, dist[i, j - 1] + 1, dist[i - 1, j - 1] + (truth[i - 1] != guess[j - 1])
            )
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if dist[i, j] == dist[i - 1, j - 1] + (truth[i - 1] != guess[j - 1]):
            if truth[i - 1] != guess[j - 1]:
                pairs.append((truth[i - 1], guess[j - 1]))
            i, j = i - 1, j - 1
        elif dist[i, j] == dist[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return int(dist[n, m]), pairs


def score(truths: list[str], guesses: list[str]) -> dict:
    distance = 0
    confusions: Counter = Counter()
    by_length: dict[int, list[bool]] = {}
    for truth, guess in zip(truths, guesses):
        d, pairs = edit_ops(truth, guess)
        distance += d
        confusions.update(pairs)
        by_length.setdefault(len(truth), []).append(truth == guess)
    n = len(truths)
    total_chars = sum(map(len, truths))
    return {
        "n": n,
        "exact_match": float(np.mean([t == g for t, g in zip(truths, guesses)])) if n else 0.0,
        "char_accuracy": 1.0 - distance / total_chars if total_chars else 0.0,
        "length_errors": sum(len(t) != len(g) for t, g in zip(truths, guesses)),
        "exact_by_length": {str(k): round(float(np.mean(v)), 4) for k, v in sorted(by_length.items())},
        "confusions": [[t, g, c] for (t, g), c in confusions.most_common(10)],
    }


REJECTION = 0.05  # the share of least confident readings a pipeline is assumed to refuse


def confidence_figures(correct: list[bool], scores: list[float], rejection: float = REJECTION) -> dict:
    """How well confidence separates right from wrong readings: AUROC (the chance a right reading is more confident
    than a wrong one, ties half), and the share of the wrong readings among the `rejection` least confident
    (ties at the cut shared out in proportion). `scores` rank the readings: a reading the service refuses whatever
    the threshold (unreadable) should come first, e.g. as -1."""
    right = np.asarray(correct, dtype=bool)
    score = np.asarray(scores, dtype=np.float64)
    n, wrong = len(right), int((~right).sum())
    figures: dict = {"errors": wrong, "rejection": rejection}
    if n == 0 or wrong == 0 or wrong == n:
        return figures | {"auroc": None, "errors_caught": None}
    # Mann-Whitney: average ranks over ties
    order = np.argsort(score, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(1, n + 1)
    _, inverse = np.unique(score, return_inverse=True)
    ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    n_right = int(right.sum())
    auroc = (ranks[right].sum() - n_right * (n_right + 1) / 2) / (n_right * wrong)
    cut = rejection * n
    threshold = np.sort(score)[max(1, int(np.ceil(cut))) - 1]  # under one reading to refuse: a share of the least
    below = score < threshold
    at = score == threshold
    room = cut - below.sum()  # how many of the tied readings at the cut are refused
    caught = (~right & below).sum() + (room / at.sum() if at.any() else 0.0) * (~right & at).sum()
    return figures | {"auroc": round(float(auroc), 4), "errors_caught": round(float(caught / wrong), 4)}


def risk_coverage(correct: list[bool], scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk): answering only the most confident readings, the share answered and the share of those
    wrong, from the surest reading alone to every one."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    wrong = ~np.asarray(correct, dtype=bool)[order]
    answered = np.arange(1, len(order) + 1)
    return answered / len(order), np.cumsum(wrong) / answered


def ranking_score(confidence: float, refused: str | None) -> float:
    """A reading's place in the ranking: its confidence, or -1 when the service refuses it whatever the threshold."""
    return -1.0 if refused else confidence


def pool_figures(rows) -> dict:
    """Figures of a pool of readings (kfold.Row: clean and degraded): exact match per kind, and how well the
    confidence ranks them (confidence_figures), unreadable ones first."""
    kinds = sorted({r.kind for r in rows}, key=lambda k: (k != "clean", k))
    correct = [r.reading == r.label for r in rows]
    return {
        "readings": len(rows),
        "exact_by_kind": {
            k: round(float(np.mean([r.reading == r.label for r in rows if r.kind == k])), 4) for k in kinds
        },
        "refused_unreadable": sum(r.refused is not None for r in rows),
        **confidence_figures(correct, [ranking_score(r.confidence, r.refused) for r in rows]),
    }


def draw_risk_coverage(rows, path: Path, title: str) -> Path:
    """The risk-coverage curve of a pool as a PNG: the error rate among the readings answered, against the share
    answered, the least confident refused first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    correct = [r.reading == r.label for r in rows]
    coverage, risk = risk_coverage(correct, [ranking_score(r.confidence, r.refused) for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(100 * coverage, 100 * risk, color="tab:blue")
    ax.axvline(100 * (1 - REJECTION), color="grey", linestyle=":", label=f"{REJECTION:.0%} least confident refused")
    ax.set_xlabel("readings answered (%), the least confident refused")
    ax.set_ylabel("wrong among those answered (%)")
    ax.set_xlim(50, 100)
    ax.set_ylim(0, max(0.5, 110 * float(risk[-1])))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def read_relabel(path: Path) -> dict[str, str]:
    """Labels checked by eye (filename,text, as labels.csv and audit's labels.fixed.csv): file name -> text."""
    with open(path, newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's BOM, if any
        rows = list(csv.DictReader(handle))
    if not rows or not {"filename", "text"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a filename,text header and rows")
    fixed = {}
    for line, row in enumerate(rows, start=2):
        name, text = (row["filename"] or "").strip(), (row["text"] or "").strip()
        if not name or not text:
            raise ValueError(f"{path}, line {line}: a file name and a text are both needed")
        fixed[Path(name).name] = text
    return fixed


def labelled_paths(
    data_dirs: list[Path], files: set[str] | None, relabel: dict[str, str] | None = None
) -> tuple[list[Path], list[str]]:
    """The labelled images of the folders (only `files`, when given), with `relabel`'s texts over their labels."""
    relabel = relabel or {}
    paths, truths = [], []
    for folder in map(read_labels, data_dirs):
        for path, text in zip(folder.files, folder.texts):
            if files is None or path.name in files:
                paths.append(path)
                truths.append(relabel.get(path.name, text))
    if not paths:
        raise ValueError("no labelled images to evaluate")
    return paths, truths


def evaluate(
    model: Path | str,
    data_dirs: list[Path],
    runtime: str = "auto",
    files: set[str] | None = None,
    batch_size: int = 64,
    relabel: dict[str, str] | None = None,
) -> tuple[dict, list]:
    recognizer = Recognizer(model, runtime)
    paths, truths = labelled_paths(data_dirs, files, relabel)
    blobs = [p.read_bytes() for p in paths]
    recognizer.warm_up()
    readings = []
    started = time.perf_counter()
    for start in range(0, len(blobs), batch_size):
        readings.extend(recognizer.read_arrays(preprocess_batch(blobs[start : start + batch_size])))
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    single = min(len(blobs), 100)
    for blob in blobs[:single]:
        recognizer.read(blob)
    single_ms = (time.perf_counter() - started) / single * 1000
    figures = score(truths, [r.text for r in readings])
    figures.update(
        data=[str(d) for d in data_dirs],
        model=str(recognizer.path),
        runtime=recognizer.runtime.name,
        ms_per_image=round(elapsed / len(blobs) * 1000, 3),
        ms_per_image_batch1=round(single_ms, 3),
        batch_size=batch_size,
    )
    mistakes = [(p.name, t, r.text, round(r.confidence, 3)) for p, t, r in zip(paths, truths, readings) if t != r.text]
    rows = [pool_row(recognizer, p.name, "clean", t, r) for p, t, r in zip(paths, truths, readings)]
    return figures, mistakes, rows


RECORDED = (
    "confidence",
    "data",
    "n",
    "exact_match",
    "char_accuracy",
    "length_errors",
    "exact_by_length",
    "ms_per_image",
    "runtime",
    "ddddocr",
)


def record(model: Path | str, key: str, figures: dict, holdout: bool) -> None:
    """Store the figures in the model's metadata (accuracy.KEY), where /info and the model card read them."""
    artifact = ModelArtifact.at(model)
    meta = artifact.metadata()
    meta.accuracy[key] = {k: figures[k] for k in RECORDED if k in figures} | {
        "measured": datetime.date.today().isoformat(),
        "holdout_only": holdout,
    }
    meta.save(artifact.metadata_path)
    log.info("recorded as accuracy.%s in %s", key, artifact.metadata_path)


def ddddocr_figures(paths: list[Path], truths: list[str], alphabet: str) -> dict | None:
    """ddddocr (the usual peer) on the same images in the same run: as it comes, and restricted to the model's
    alphabet with its own set_ranges (which filters its output after it has chosen)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("ddddocr") is None:
        return None
    import ddddocr

    blobs = [p.read_bytes() for p in paths]
    plain = ddddocr.DdddOcr(show_ad=False)
    started = time.perf_counter()
    plain_texts = [plain.classification(b) for b in blobs]
    ms = (time.perf_counter() - started) / len(blobs) * 1000
    restricted = ddddocr.DdddOcr(show_ad=False)
    restricted.set_ranges(alphabet)
    restricted_texts = [restricted.classification(b) for b in blobs]
    return {
        "version": importlib.metadata.version("ddddocr"),
        "n": len(blobs),
        "exact_match": float(np.mean([t == g for t, g in zip(truths, plain_texts)])),
        "exact_match_restricted": float(np.mean([t == g for t, g in zip(truths, restricted_texts)])),
        "ms_per_image": round(ms, 3),
    }


def main(args) -> int:
    from .degrade import DEGRADATIONS
    from .kfold import pooled, read_rows

    kinds = tuple(DEGRADATIONS) if getattr(args, "degrade", False) else ()
    files = None
    if args.files:
        files = {line.strip() for line in Path(args.files).read_text(encoding="utf-8").splitlines() if line.strip()}
    if getattr(args, "holdout", False):
        meta = ModelArtifact.at(args.model).metadata()
        files = set(meta.training.get("holdout_files", []))
    relabel = read_relabel(Path(args.relabel)) if getattr(args, "relabel", None) else {}
    unknown = sorted(set(relabel) - {p.name for d in args.data for p in read_labels(Path(d)).files})
    if unknown:
        raise SystemExit(f"--relabel names {len(unknown)} files that --data does not hold, e.g. {unknown[0]}")
    if getattr(args, "kfold", None):
        mixed = [
            o
            for o, on in (
                ("--record", args.record),
                ("--files", args.files),
                ("--holdout", args.holdout),
                ("--ddddocr", args.ddddocr),
            )
            if on
        ]
        if mixed:
            raise SystemExit(f"--kfold reads every image with its fold's model: {', '.join(mixed)} does not apply")
        runtime = args.runtime if args.runtime != "auto" else "onnx"
        rows = [replace(r, label=relabel.get(r.file, r.label)) for r in pooled(Path(args.kfold), kinds, runtime)]
        clean = [r for r in rows if r.kind == "clean"]
        figures = score([r.label for r in clean], [r.reading for r in clean])
        figures.update(data=[str(d) for d in args.data], model=f"{args.kfold} (each fold's model on its own fold)")
        figures.update(ms_per_image=None, ms_per_image_batch1=None, batch_size=None, runtime="onnx")
        mistakes = [(r.file, r.label, r.reading, round(r.confidence, 3)) for r in clean if r.reading != r.label]
    else:
        figures, mistakes, rows = evaluate(
            args.model, [Path(d) for d in args.data], args.runtime, files, args.batch_size, relabel
        )
        if kinds:
            recognizer = Recognizer(args.model, args.runtime)
            paths, truths = labelled_paths([Path(d) for d in args.data], files, relabel)
            rows += read_rows(recognizer, list(zip(paths, truths)), kinds)
    figures["confidence"] = pool_figures(rows)
    if getattr(args, "ddddocr", False):
        paths, truths = labelled_paths([Path(d) for d in args.data], files, relabel)
        alphabet = ModelArtifact.at(args.model).metadata().alphabet
        figures["ddddocr"] = ddddocr_figures(paths, truths, alphabet)
    print(f"images            {figures['n']}")
    print(f"exact match       {figures['exact_match']:.2%}")
    print(f"char accuracy     {figures['char_accuracy']:.2%}")
    print(f"length errors     {figures['length_errors']}")
    print(f"exact by length   {figures['exact_by_length']}")
    print(f"confusions        {', '.join(f'{t}->{g} x{c}' for t, g, c in figures['confusions']) or 'none'}")
    if figures["ms_per_image"] is not None:
        print(
            f"ms per image      {figures['ms_per_image']} (batch {figures['batch_size']}), "
            f"{figures['ms_per_image_batch1']} (batch 1), {figures['runtime']} runtime"
        )
    pool = figures["confidence"]
    print(f"pool              {pool['readings']} readings: {pool['exact_by_kind']}")
    print(
        f"confidence        AUROC {pool['auroc']}, {pool['errors_caught']} of the {pool['errors']} wrong readings "
        f"among the {pool['rejection']:.0%} least confident ({pool['refused_unreadable']} refused as unreadable)"
    )
    if getattr(args, "risk_coverage", None):
        title = f"{', '.join(Path(d).name for d in args.data)}: {pool['readings']} readings, {pool['errors']} wrong"
        print(f"risk-coverage     {draw_risk_coverage(rows, Path(args.risk_coverage), title)}")
    peer = figures.get("ddddocr")
    if peer:
        print(
            f"ddddocr {peer['version']}     {peer['exact_match']:.2%} exact, {peer['exact_match_restricted']:.2%} "
            f"with set_ranges(alphabet), {peer['ms_per_image']} ms an image (same {peer['n']} images)"
        )
    elif "ddddocr" in figures:
        print("ddddocr           not installed")
    for name, truth, guess, confidence in mistakes[:20]:
        print(f"  wrong: {name}  {truth} -> {guess}  ({confidence})")
    if getattr(args, "errors_sheet", None):
        paths, _ = labelled_paths([Path(d) for d in args.data], files)
        by_name = {path.name: path for path in paths}
        drawn = [SheetRow(by_name[name], truth, guess, confidence) for name, truth, guess, confidence in mistakes]
        print(f"errors sheet      {draw(drawn, Path(args.errors_sheet), f'misread by {Path(args.model).name}')}")
    if args.record:
        record(args.model, args.record, figures, holdout=bool(getattr(args, "holdout", False)))
    if getattr(args, "readings", None):
        Path(args.readings).write_text(
            "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    if args.json:
        print(json.dumps(figures, ensure_ascii=False))
    return 0
