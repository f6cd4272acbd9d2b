"""Real captchas made worse the ways a scraper may grab them: a small thumbnail, a blurred screenshot, heavy JPEG,
sensor-like noise. Used to measure readings and their confidence on more than clean images; each degradation is
seeded by the image's name, so a run can be repeated exactly."""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ..core.preprocess import to_grey


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _thumbnail(scale: float) -> Callable[[Image.Image, np.random.Generator], bytes]:
    def degrade(image: Image.Image, rng: np.random.Generator) -> bytes:
        size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
        return _encode(image.resize(size, Image.Resampling.BILINEAR))

    return degrade


def _blur(image: Image.Image, rng: np.random.Generator) -> bytes:
    return _encode(image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 1.6)))))


def _jpeg(image: Image.Image, rng: np.random.Generator) -> bytes:
    return _encode(image.convert("RGB"), "JPEG", quality=int(rng.integers(5, 12)))


def _noise(image: Image.Image, rng: np.random.Generator) -> bytes:
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    noisy = pixels + rng.normal(0.0, float(rng.uniform(25, 40)), pixels.shape[:2])[..., None]
    return _encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)))


DEGRADATIONS: dict[str, Callable[[Image.Image, np.random.Generator], bytes]] = {
    "thumbnail-50": _thumbnail(0.5),
    "thumbnail-35": _thumbnail(0.35),
    "blur": _blur,
    "jpeg": _jpeg,
    "noise": _noise,
}


def degrade(data: bytes, kind: str, name: str) -> bytes:
    """The image `data` (any format Pillow reads) degraded by `kind`, seeded by `name`: encoded bytes, as a client
    would send them."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}: one of {', '.join(DEGRADATIONS)}")
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rng = np.random.default_rng([zlib.crc32(name.encode()), zlib.crc32(kind.encode())])
        # grey as the service sees it (transparency on white), then degraded
        return DEGRADATIONS[kind](to_grey(image).convert("RGB"), rng)
