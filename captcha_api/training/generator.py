"""Synthetic FSSP-style captchas: typewriter serif glyphs in dark-blue ink with a light-blue offset shadow on
grainy off-white paper, each glyph with its own size, baseline and tilt, some letters in capital form.

Every image is a pure function of (seed, index), so a data set can be rebuilt exactly and made in parallel.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..core.alphabet import FSSP_ALPHABET
from ..core.preprocess import IMAGE_HEIGHT, IMAGE_WIDTH

log = logging.getLogger(__name__)

# Typewriter-like and slab-serif faces with Cyrillic, from Debian font packages
# (fonts-freefont-ttf, fonts-liberation2, fonts-urw-base35, fonts-paratype, fonts-cmu, fonts-dejavu-core).
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Bold.otf",
    "/usr/share/fonts/opentype/urw-base35/NimbusMonoPS-Regular.otf",
    "/usr/share/fonts/truetype/freefont/FreeMonoBold.ttf",
    "/usr/share/fonts/truetype/freefont/FreeMono.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationMono-Bold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationMono-Regular.ttf",
    "/usr/share/fonts/truetype/paratype/PTM75F.ttf",
    "/usr/share/fonts/truetype/paratype/PTM55F.ttf",
    "/usr/share/fonts/truetype/cmu/cmuntb.ttf",
    "/usr/share/fonts/truetype/cmu/cmuntt.ttf",
    "/usr/share/fonts/truetype/paratype/PTF75F.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSerifBold.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSerif-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
)
FONT_PACKAGES = "fonts-freefont-ttf fonts-liberation2 fonts-urw-base35 fonts-paratype fonts-cmu fonts-dejavu-core"

# Share of each length in the public FSSP collection (39,774 labels).
LENGTH_WEIGHTS = {4: 0.17, 5: 0.46, 6: 0.18, 7: 0.19}
# Letters the site sometimes draws in capital form; labels stay lower case.
CAPITAL_FORMS = "вгджклмнпрст"


@dataclass(frozen=True)
class GeneratorConfig:
    alphabet: str = FSSP_ALPHABET
    lengths: tuple[tuple[int, float], ...] = tuple(LENGTH_WEIGHTS.items())
    capital_probability: float = 0.25
    width: int = IMAGE_WIDTH
    height: int = IMAGE_HEIGHT


def available_fonts() -> list[str]:
    fonts = [path for path in FONT_CANDIDATES if Path(path).is_file()]
    if not fonts:
        raise RuntimeError(f"no Cyrillic typewriter font found; install the Debian packages: {FONT_PACKAGES}")
    return fonts


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def random_text(rng: np.random.Generator, config: GeneratorConfig) -> str:
    lengths, weights = zip(*config.lengths)
    weights = np.asarray(weights) / np.sum(weights)
    length = int(rng.choice(lengths, p=weights))
    return "".join(rng.choice(list(config.alphabet), size=length))


def _glyph_mask(char: str, font: ImageFont.FreeTypeFont, stroke: int, angle: float) -> np.ndarray:
    left, top, right, bottom = font.getbbox(char, stroke_width=stroke)
    pad = 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text(
        (pad - left, pad - top), char, font=font, fill=255, stroke_width=stroke, stroke_fill=255
    )
    if angle:
        canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _paper(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = rng.uniform(232, 252)
    tint = rng.uniform(-2, 2, size=3)
    paper = np.full((height, width, 3), base, dtype=np.float32) + tint
    grain = rng.normal(0, rng.uniform(3, 9), size=(height, width, 1)).astype(np.float32)
    fibres = np.asarray(
        Image.fromarray(rng.integers(0, 255, size=(height // 3 + 1, width // 3 + 1), dtype=np.uint8)).resize(
            (width, height), Image.Resampling.BICUBIC
        ),
        dtype=np.float32,
    )
    paper += grain + (fibres[..., None] - 128) * rng.uniform(0.02, 0.08)
    return paper


def _ragged(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Typewriter ink: uneven density, frayed edges, the odd pale speck inside a stroke."""
    h, w = mask.shape
    noise = rng.random((h, w)).astype(np.float32)
    soft = (
        np.asarray(
            Image.fromarray((noise * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32
        )
        / 255.0
    )
    density = np.clip(0.9 + (soft - 0.5) * rng.uniform(0.5, 2.0), 0.5, 1.0)
    specks = rng.random((h, w)) < rng.uniform(0.0, 0.008)
    density[specks] *= 0.3
    return mask * density


def render(text: str, rng: np.random.Generator, config: GeneratorConfig = GeneratorConfig(), fonts=None) -> Image.Image:
    """Draw one captcha of `text` (lower case) as an RGB image."""
    fonts = fonts or available_fonts()
    width, height = config.width, config.height
    main_font = fonts[rng.integers(len(fonts))]
    base_size = rng.uniform(35, 45)
    glyphs = []
    for char in text:
        shown = char.upper() if char in CAPITAL_FORMS and rng.random() < config.capital_probability else char
        font_path = main_font if rng.random() < 0.8 else fonts[rng.integers(len(fonts))]
        size = int(np.clip(base_size * rng.uniform(0.78, 1.25), 22, 50))
        stroke = int(rng.random() < (0.55 if "Bold" in font_path or "75" in font_path or "tb" in font_path else 0.85))
        angle = rng.uniform(-9, 9) if rng.random() < 0.7 else 0.0
        glyphs.append(_glyph_mask(shown, _font(font_path, size), stroke, angle))

    gaps = rng.uniform(-11, 2, size=len(glyphs))
    total = sum(g.shape[1] for g in glyphs) + gaps[1:].sum()
    room = width - 16
    squeeze = min(1.0, room / total)
    x = rng.uniform(4, max(5.0, width - total * squeeze - 4))
    ink = np.zeros((height, width), dtype=np.float32)
    baseline = height * rng.uniform(0.6, 0.78)
    for glyph, gap in zip(glyphs, gaps):
        if squeeze < 1.0:
            gh, gw = glyph.shape
            glyph = np.asarray(
                Image.fromarray(glyph).resize(
                    (max(1, int(gw * squeeze)), max(1, int(gh * squeeze))), Image.Resampling.BILINEAR
                )
            )
        gh, gw = glyph.shape
        top = int(np.clip(baseline - gh * rng.uniform(0.6, 0.85) + rng.normal(0, 3), 0, max(0, height - gh)))
        left = int(x)
        right = min(width, left + gw)
        bottom = min(height, top + gh)
        ink[top:bottom, left:right] = np.maximum(ink[top:bottom, left:right], glyph[: bottom - top, : right - left])
        x += gw + gap * (squeeze if squeeze < 1 else 1)

    ink = _ragged(ink, rng)
    dx, dy = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    if rng.random() < 0.2:
        dx = -dx
    shadow = np.roll(np.roll(ink, dy, axis=0), dx, axis=1)
    shadow = (
        np.asarray(
            Image.fromarray((shadow * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0))),
            dtype=np.float32,
        )
        / 255.0
    )

    paper = _paper(rng, height, width)
    shadow_colour = np.array([rng.uniform(140, 185), rng.uniform(190, 220), rng.uniform(220, 245)], dtype=np.float32)
    ink_colour = np.array([rng.uniform(10, 45), rng.uniform(40, 75), rng.uniform(80, 125)], dtype=np.float32)
    strength = rng.uniform(0.75, 1.0)
    out = paper * (1 - shadow[..., None] * strength) + shadow_colour * shadow[..., None] * strength
    out = out * (1 - ink[..., None]) + ink_colour * ink[..., None]
    image = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.5)))
    # The site serves JPEG; compress the way it does.
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(55, 92)))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def sample(seed: int, index: int, config: GeneratorConfig = GeneratorConfig()) -> tuple[Image.Image, str]:
    """The index-th captcha of a seeded stream: (image, text)."""
    rng = np.random.default_rng([seed, index])
    text = random_text(rng, config)
    return render(text, rng, config), text


def _write_chunk(args) -> list[tuple[str, str]]:
    out, seed, start, stop, config = args
    rows = []
    for index in range(start, stop):
        image, text = sample(seed, index, config)
        name = f"{index:07d}.jpg"
        image.save(out / name, "JPEG", quality=95)
        rows.append((name, text))
    return rows


def generate(
    out: Path, count: int, seed: int = 0, config: GeneratorConfig = GeneratorConfig(), workers: int = 2
) -> Path:
    """Write `count` images and labels.csv (filename,text) into `out`."""
    out = Path(out)
    (out).mkdir(parents=True, exist_ok=True)
    available_fonts()
    chunk = 500
    jobs = [(out, seed, start, min(count, start + chunk), config) for start in range(0, count, chunk)]
    rows: list[tuple[str, str]] = []
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_write_chunk, jobs):
                rows.extend(part)
    else:
        for job in jobs:
            rows.extend(_write_chunk(job))
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "text"])
        writer.writerows(rows)
    recipe = {
        "seed": seed,
        "count": count,
        "lengths": {str(length): share for length, share in config.lengths},
        "fonts": [Path(f).name for f in available_fonts()],
    }
    (out / "generator.json").write_text(json.dumps(recipe, indent=1) + "\n", encoding="utf-8")
    log.info("wrote %d images to %s", count, out)
    return out
