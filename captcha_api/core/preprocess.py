"""Bytes -> model input. One place for the input size, used by training and serving alike.

Steps:
1. decode the bytes (by content, not by name) within a cost budget, checked on the header before any decoding:
   a pixel count against decompression bombs, a scan count against progressive JPEGs that repeat cheap scans
   (each scan walks the whole image: 35,000 scans of 14 bytes, 500 KB, took 20 s), and, for a batch, the work of
   all its images together;
2. take the first frame, composite any transparency on white, bring every mode to 8-bit grey;
3. resize to IMAGE_WIDTH x IMAGE_HEIGHT;
4. scale to float32 in [0, 1] and transpose to (width, height, 1) so that time runs along the width.

One grey channel: the captchas carry no meaning in colour, and a third of the input makes the first convolution,
the only one at full resolution, three times cheaper.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageTooLarge, InvalidImage, UnreadableImage, UnsupportedImageFormat

IMAGE_WIDTH = 200
IMAGE_HEIGHT = 60
INPUT_SHAPE = (IMAGE_WIDTH, IMAGE_HEIGHT, 1)

# No TIFF: a 156 KB TIFF whose one LZMA tile was larger than its image took 4 s and 1.1 GB to decode, and libtiff
# has more such ways than a captcha service can check; no captcha comes as TIFF.
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# The file names a folder of such images is searched for (predict, training, pseudolabel).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
DEFAULT_MAX_PIXELS = 4_000_000
# libjpeg writes 1 scan (baseline) and up to 10 (its progressive script for colour); decoding walks every block of
# the image once per scan, so the scans multiply the work. Real captchas have 1.
MAX_JPEG_SCANS = 32
SOS = b"\xff\xda"  # start of scan; entropy-coded data never holds it (a 0xFF there is followed by 0x00 or RSTn)
# APPn and COM segments: a few in a real JPEG (JFIF, EXIF, ICC); 127,000 empty ones in 510 KB took 0.28 s to skip.
MAX_JPEG_SEGMENTS = 64
JPEG_SIDE_SEGMENTS = tuple(bytes([0xFF, marker]) for marker in (*range(0xE0, 0xF0), 0xFE))
# BMP compressions decoded in Python pixel by pixel (RLE8, RLE4): a 1 KB image took 0.7 s.
BMP_RLE = (1, 2)
MIN_SIDE = 8
MAX_ASPECT = 25.0

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


class DecodeBudget:
    """The decoding work one request may cause, in pixels decoded (a progressive JPEG's once per scan), shared by
    the images of a batch: an image whose work would pass what is left is refused before it is decoded."""

    def __init__(self, pixels: int):
        self.total = pixels
        self.left = pixels

    def charge(self, work: int) -> None:
        if work > self.left:
            raise ImageTooLarge(
                f"decoding this image ({work} pixels, counting a progressive JPEG's once per scan) would pass the "
                f"{self.total} pixels one request may decode (CAPTCHA_MAX_BATCH_PIXELS); send it in another request"
            )
        self.left -= work


def decode_work(image: Image.Image, data: bytes) -> int:
    """Pixels the decoder will produce, counting a JPEG's once per scan; refuses a JPEG of absurdly many scans."""
    width, height = image.size
    if image.format != "JPEG":
        return width * height
    scans = max(1, data.count(SOS))
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded")
    segments = sum(data.count(marker) for marker in JPEG_SIDE_SEGMENTS)
    if segments > MAX_JPEG_SEGMENTS:
        raise ImageTooLarge(f"the JPEG has {segments} APP and COM segments; at most {MAX_JPEG_SEGMENTS} are read")
    return width * height * scans


# File signatures of the served formats -> the suffix an image of it is stored under.
SIGNATURES = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"), (b"RIFF", ".webp"))


def image_suffix(data: bytes) -> str:
    """The file suffix for image bytes of a served format, by their signature (".img" for anything else)."""
    return next((suffix for signature, suffix in SIGNATURES if data.startswith(signature)), ".img")


def _known_format(data: bytes) -> str | None:
    """The name of a format we do not serve that Pillow knows these bytes as, by its signature check alone."""
    Image.init()
    prefix = data[:16]
    for name, (_, accept) in Image.OPEN.items():
        if name in SUPPORTED_FORMATS:
            continue  # one of ours that did not open: a broken image, not another format
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # noqa: BLE001 - a signature check that fails on odd bytes says "not this format"
            continue
    return None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, budget: DecodeBudget | None = None) -> Image.Image:
    """Decode image bytes into a loaded PIL image, refusing formats, sizes and decoding costs we do not serve."""
    if not data:
        raise InvalidImage("the image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Only the formats served are tried: Pillow would otherwise try each of its formats in turn (an EPS or
            # PPM guess alone took 0.3 s on 512 KB).
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image has too many pixels: {exc}") from None
    except UnidentifiedImageError:
        other = _known_format(data)
        if other is not None:
            raise UnsupportedImageFormat(
                f"image format {other} is not supported; use one of {', '.join(SUPPORTED_FORMATS)}"
            ) from None
        raise InvalidImage("the data is not a recognisable image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"the image cannot be decoded: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"the image is {width}x{height}; at most {max_pixels} pixels are accepted")
    if image.format == "BMP" and image.info.get("compression") in BMP_RLE:
        raise UnsupportedImageFormat("run-length encoded BMP is not supported; send PNG, JPEG or an uncompressed BMP")
    check_readable(image)  # on the header: an image of absurd proportions is refused before it is decoded
    work = decode_work(image, data)
    if budget is not None:
        budget.charge(work)
    try:
        image.seek(0)
        if image.format == "JPEG" and image.mode in ("RGB", "YCbCr"):
            # libjpeg hands over its luma plane directly: no colour conversion there and back, 40% of the decode.
            image.draft("L", image.size)
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the image is truncated or corrupt: {exc}") from None
    return image


def to_grey(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit grey ("L"); transparency is composited on white."""
    if image.mode in _SIXTEEN_BIT_MODES:
        scale = 257.0 if np.asarray(image).max() > 255 else 1.0
        grey = np.clip(np.asarray(image, dtype=np.float64) / scale, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L")
    if image.mode == "F":
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    if image.mode != "L":
        return image.convert("L")
    return image


def check_readable(image: Image.Image) -> None:
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise UnreadableImage(f"the image is {width}x{height}; each side must be at least {MIN_SIDE} pixels")
    aspect = width / height
    if not 1 / MAX_ASPECT <= aspect <= MAX_ASPECT:
        raise UnreadableImage(f"the image is {width}x{height}; its proportions are too far from a captcha's")


def image_to_array(image: Image.Image) -> np.ndarray:
    """A PIL image -> float32 array (IMAGE_WIDTH, IMAGE_HEIGHT, 1) in [0, 1]."""
    grey = to_grey(image)
    if grey.size != (IMAGE_WIDTH, IMAGE_HEIGHT):
        grey = grey.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    array = np.asarray(grey, dtype=np.float32) * (1.0 / 255.0)
    return array.T[:, :, np.newaxis]


def preprocess(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, budget: DecodeBudget | None = None) -> np.ndarray:
    """Image bytes -> one model input of shape INPUT_SHAPE."""
    image = open_image(data, max_pixels, budget)
    try:
        return image_to_array(image)
    except (ValueError, OSError) as exc:  # a mode Pillow decodes but cannot convert, or a lazy decode failure
        raise UnreadableImage(f"the image cannot be converted to grey: {exc}") from None


def preprocess_batch(items: Iterable[bytes], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Several images -> (n, *INPUT_SHAPE); any bad image raises."""
    arrays = [preprocess(data, max_pixels) for data in items]
    if not arrays:
        return np.zeros((0, *INPUT_SHAPE), dtype=np.float32)
    return np.stack(arrays)
