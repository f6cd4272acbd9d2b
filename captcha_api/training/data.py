"""Labelled folders, in-memory data sets and augmentation for training."""

from __future__ import annotations

import csv
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..core.alphabet import PAD, Alphabet
from ..core.preprocess import IMAGE_HEIGHT, IMAGE_SUFFIXES, IMAGE_WIDTH, INPUT_SHAPE, preprocess

log = logging.getLogger(__name__)

BILINEAR = Image.Resampling.BILINEAR  # as preprocess resizes


@dataclass
class LabelledFolder:
    root: Path
    files: list[Path]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices) -> LabelledFolder:
        return LabelledFolder(self.root, [self.files[i] for i in indices], [self.texts[i] for i in indices])


class LabelsError(ValueError):
    """A labelled folder that cannot be used as it is: the message says which file or entry, and why."""


FILE_COLUMNS = ("filename", "file", "image")
TEXT_COLUMNS = ("text", "label")


def _inside(folder: Path, entry: str, labels: Path, line: int) -> Path:
    """The image a labels.csv entry names, which must lie in `folder`: an absolute path or one that climbs out with
    '..' is refused before anything is opened, so a labels file can make training or evaluation read nothing
    outside its own folder (nor tell, through a "missing" error, which outside paths exist)."""
    relative = Path(os.path.normpath(entry)) if entry else None
    if relative is None or not relative.parts or relative.is_absolute() or relative.parts[0] == "..":
        raise LabelsError(
            f"{labels}, line {line}: the image {entry!r} is not a file name inside {folder}; entries must be "
            "relative paths that stay in that folder"
        )
    return folder / relative


def read_labels(root: Path | str) -> LabelledFolder:
    """A folder with labels.csv (a file column `filename`, `file` or `image` and a `text` or `label` column; images
    beside it or in images/), or images named by their text (`abc12.png`, or `abc12_7.png` to tell repeats apart).
    Labels keep their case."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    labels = root / "labels.csv"
    image_dir = root / "images" if (root / "images").is_dir() else root
    files, texts = [], []
    if labels.is_file():
        with open(labels, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            file_col = next((c for c in FILE_COLUMNS if c in columns), None)
            text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
            if file_col is None or text_col is None:
                raise ValueError(
                    f"{labels} needs a header with a file column ({'/'.join(FILE_COLUMNS)}) and a "
                    f"text column ({'/'.join(TEXT_COLUMNS)}); it has {reader.fieldnames}"
                )
            for line, row in enumerate(reader, start=2):
                row = {k.strip().lower(): v for k, v in row.items() if k}
                files.append(_inside(image_dir, (row[file_col] or "").strip(), labels, line))
                texts.append((row[text_col] or "").strip())
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"{len(missing)} images listed in {labels} are missing, e.g. {missing[:3]}")
    else:
        for path in sorted(image_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                texts.append(path.stem.split("_")[0])
    if not files:
        raise ValueError(f"{root} holds no labelled images (labels.csv or images named by their text)")
    empty = [f.name for f, t in zip(files, texts) if not t]
    if empty:
        raise ValueError(f"{len(empty)} images in {root} have an empty label, e.g. {empty[:3]}")
    return LabelledFolder(root, files, texts)


def load_images(files: list[Path], workers: int = 2) -> np.ndarray:
    """Files -> uint8 array (n, W, H, 1) through the serving preprocessing."""

    def one(path: Path) -> np.ndarray:
        return np.round(preprocess(path.read_bytes()) * 255).astype(np.uint8)

    if not files:
        return np.zeros((0, *INPUT_SHAPE), dtype=np.uint8)
    with ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(one, files)))


def encode_labels(texts: list[str], alphabet: Alphabet, max_length: int) -> np.ndarray:
    out = np.full((len(texts), max_length), PAD, dtype=np.int32)
    for i, text in enumerate(texts):
        if len(text) > max_length:
            raise ValueError(f"label {text!r} is longer than {max_length}")
        out[i, : len(text)] = alphabet.encode(text)
    return out


def split_holdout(folder: LabelledFolder, count: int, seed: int) -> tuple[LabelledFolder, LabelledFolder]:
    """(train, held out): a seeded random choice of `count` images, independent of file order."""
    order = sorted(range(len(folder)), key=lambda i: folder.files[i].name)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    return folder.subset(sorted(order[count:])), folder.subset(sorted(order[:count]))


def augment(images: np.ndarray, rng: np.random.Generator, strength: float, grabbed: float = 0.0) -> np.ndarray:
    """uint8 (n, W, H, 1) -> float32 in [0, 1]: small affine warps, contrast, brightness and noise.
    `strength` 0 leaves images untouched; 1 is the full range used for real captchas. A `grabbed` share of the
    images is then made worse as a scraper may grab a captcha (`grab`)."""
    out = images.astype(np.float32) / 255.0
    if strength <= 0 and grabbed <= 0:
        return out
    if strength > 0:
        for i in range(len(out)):
            if rng.random() < 0.8 * strength:
                out[i] = _warp(images[i], rng, strength)
        n = len(out)
        contrast = rng.uniform(1 - 0.25 * strength, 1 + 0.15 * strength, size=(n, 1, 1, 1))
        brightness = rng.uniform(-0.08, 0.08, size=(n, 1, 1, 1)) * strength
        contrast, brightness = contrast.astype(np.float32), brightness.astype(np.float32)
        mean = out.mean(axis=(1, 2, 3), keepdims=True)
        out = (out - mean) * contrast + mean + brightness
        sigma = rng.uniform(0, 0.04 * strength, size=(n, 1, 1, 1)).astype(np.float32)
        out += rng.standard_normal(out.shape, dtype=np.float32) * sigma
        np.clip(out, 0.0, 1.0, out=out)
    for i in np.flatnonzero(rng.random(len(out)) < grabbed):
        out[i] = grab(out[i], rng)
    return out


# How a scraper's copy of a captcha gets worse, as training augmentation: the kinds degrade.py measures, over wider
# ranges than it uses (a thumbnail of 25-70% against its 35% and 50%, blur radius 0.5-2 against 1-1.6, JPEG quality
# 4-40 against 5-11, noise sigma 8-45 against 25-40), drawn afresh for every image.
GRAB_KINDS = ("thumbnail", "blur", "jpeg", "noise")
# The share of training images so made worse by default: the FSSP fold models trained with none misread 5-11% of
# noisy and 35% thumbnails at confidences up to 0.98; a quarter keeps three in four images as they come.
GRABBED_SHARE = 0.25


def grab(image: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> np.ndarray:
    """One model input, float32 (W, H, 1) in [0, 1], made worse by `kind` (default: one of GRAB_KINDS at random)."""
    pil = Image.fromarray(np.round(image[:, :, 0].T * 255).astype(np.uint8), "L")
    kind = kind or GRAB_KINDS[rng.integers(len(GRAB_KINDS))]
    if kind == "thumbnail":
        scale = rng.uniform(0.25, 0.7)
        small = pil.resize((max(8, round(IMAGE_WIDTH * scale)), max(8, round(IMAGE_HEIGHT * scale))), BILINEAR)
        pil = small.resize((IMAGE_WIDTH, IMAGE_HEIGHT), BILINEAR)
    elif kind == "blur":
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 2.0))))
    elif kind == "jpeg":
        encoded = io.BytesIO()
        pil.save(encoded, "JPEG", quality=int(rng.integers(4, 41)))
        pil = Image.open(encoded)
    else:
        pixels = np.asarray(pil, dtype=np.float32)
        pixels += rng.normal(0.0, float(rng.uniform(8, 45)), pixels.shape).astype(np.float32)
        pil = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    return np.asarray(pil, dtype=np.float32).T[:, :, np.newaxis] / 255.0


def _warp(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    pil = Image.fromarray(np.ascontiguousarray(image[:, :, 0].T), "L")
    sx = 1 + rng.uniform(-0.12, 0.12) * strength
    sy = 1 + rng.uniform(-0.12, 0.12) * strength
    shear = rng.uniform(-0.15, 0.15) * strength
    tx = rng.uniform(-12, 12) * strength
    ty = rng.uniform(-5, 5) * strength
    cx, cy = IMAGE_WIDTH / 2, IMAGE_HEIGHT / 2
    # inverse map: output (x, y) samples input (a x + b y + c, d x + e y + f), centred
    a, b, d, e = 1 / sx, shear, 0.0, 1 / sy
    c = cx - a * cx - b * cy - tx
    f = cy - d * cx - e * cy - ty
    background = int(np.concatenate([image[:2], image[-2:]]).mean())
    warped = pil.transform(
        pil.size, Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR, fillcolor=background
    )
    return np.asarray(warped, dtype=np.float32).T[:, :, np.newaxis] / 255.0
