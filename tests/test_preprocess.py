import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from captcha_api.core.errors import ImageTooLarge, InvalidImage, UnreadableImage, UnsupportedImageFormat
from captcha_api.core.preprocess import INPUT_SHAPE, preprocess, preprocess_batch

from .conftest import encode


def check(array):
    assert array.shape == INPUT_SHAPE == (200, 60, 1)
    assert array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_every_format_decodes_to_model_input(captcha_image, fmt):
    array = preprocess(encode(captcha_image, fmt))
    check(array)
    # the same captcha in any format looks alike (lossy formats included)
    reference = preprocess(encode(captcha_image, "PNG"))
    assert np.abs(array - reference).mean() < 0.08


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "1", "I;16"])
def test_every_mode_becomes_grey(captcha_image, mode):
    image = captcha_image.convert(mode) if mode not in ("I;16", "I", "F") else captcha_image.convert("L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, dtype=np.uint16) * 257)
        assert image.mode == "I;16"
    elif mode in ("I", "F"):
        image = image.convert(mode)
    fmt = {"CMYK": "JPEG"}.get(mode, "PNG")
    array = preprocess(encode(image, fmt))
    check(array)
    assert np.abs(array.mean() - preprocess(encode(captcha_image, "PNG")).mean()) < 0.1


def test_sixteen_bit_is_scaled_not_clipped():
    grey = np.full((60, 200), 32768, dtype=np.uint16)
    array = preprocess(encode(Image.fromarray(grey), "PNG"))
    assert array.mean() == pytest.approx(128 / 255, abs=0.01)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(mode):
    image = Image.new(mode, (200, 60), (0, 0, 0, 0) if mode == "RGBA" else (0, 0))
    array = preprocess(encode(image, "PNG"))
    assert array.min() == pytest.approx(1.0)


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (200, 60), 0)
    image.putpalette([0, 0, 0] * 256)
    data = encode(image, "PNG", transparency=0)
    assert preprocess(data).min() == pytest.approx(1.0)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (200, 60), colour) for colour in ((255, 255, 255), (0, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    array = preprocess(buffer.getvalue())
    assert array.mean() > 0.9


def test_resize_and_width_first_layout():
    image = Image.new("RGB", (100, 30), (255, 255, 255))
    image.putpixel((99, 0), (255, 0, 0))  # top-right corner
    array = preprocess(encode(image, "PNG"))
    check(array)
    assert array[199, 0, 0] < 0.9  # width is the first axis
    assert array[0, 59, 0] == pytest.approx(1.0)


def test_batch_form_stacks():
    data = encode(Image.new("RGB", (200, 60), "white"), "PNG")
    assert preprocess_batch([data, data]).shape == (2, *INPUT_SHAPE)
    assert preprocess_batch([]).shape == (0, *INPUT_SHAPE)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size: the guard must refuse it before any pixel is decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", InvalidImage),
        (b"definitely not an image", InvalidImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, InvalidImage),
        (png_header_only(20000, 20000), ImageTooLarge),
        (png_header_only(200, 60), InvalidImage),  # claims pixels it does not hold
        (encode(Image.new("RGB", (1, 1)), "PNG"), UnreadableImage),
        (encode(Image.new("RGB", (4000, 20)), "PNG"), UnreadableImage),
        (encode(Image.new("RGB", (200, 60)), "PPM"), UnsupportedImageFormat),
    ],
    ids=["empty", "text", "png-garbage", "bomb", "truncated", "1x1", "very-wide", "ppm"],
)
def test_bad_input_raises_its_own_error(data, error):
    with pytest.raises(error) as caught:
        preprocess(data)
    assert caught.value.status in (400, 413, 415, 422)


def test_truncated_real_png_is_invalid(captcha_image):
    data = encode(captcha_image, "PNG")
    with pytest.raises(InvalidImage):
        preprocess(data[: len(data) // 2])


def test_pixel_limit_is_configurable():
    data = encode(Image.new("RGB", (200, 60)), "PNG")
    with pytest.raises(ImageTooLarge):
        preprocess(data, max_pixels=1000)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_corrupted_bytes_raise_only_our_errors(captcha_image, fmt):
    """Seeded random byte flips, cuts and splices: each either decodes or raises a CaptchaError."""
    from captcha_api.core.errors import CaptchaError

    original = bytearray(encode(captcha_image, fmt))
    rng = np.random.default_rng(len(fmt))
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.integers(1, 12)):
            data[rng.integers(len(data))] = rng.integers(256)
        if rng.random() < 0.3:
            data = data[: rng.integers(1, len(data))]
        if rng.random() < 0.2:
            start = rng.integers(len(data))
            data[start:start] = rng.integers(0, 256, size=rng.integers(1, 64), dtype=np.uint8).tobytes()
        try:
            array = preprocess(bytes(data))
        except CaptchaError:
            continue
        assert array.shape == INPUT_SHAPE and np.isfinite(array).all()


def test_a_jpeg_of_too_many_scans_is_refused_on_its_header():
    from captcha_api.core.preprocess import MAX_JPEG_SCANS
    from scripts.hostile import scan_bomb

    with pytest.raises(ImageTooLarge, match=f"at most {MAX_JPEG_SCANS} are decoded"):
        preprocess(scan_bomb(30000))
    check(preprocess(scan_bomb(MAX_JPEG_SCANS - 6, side=400)))  # 6 scans of its own: within the limit, read


@pytest.mark.parametrize("progressive", [False, True])
def test_ordinary_jpegs_are_within_the_scan_limit(captcha_image, progressive):
    check(preprocess(encode(captcha_image, "JPEG", progressive=progressive)))


def test_a_decode_budget_is_shared_by_the_images_it_is_given(captcha_image):
    from captcha_api.core.preprocess import DecodeBudget

    png = encode(captcha_image, "PNG")  # 200 x 60 = 12,000 pixels
    progressive = encode(captcha_image, "JPEG", progressive=True)
    budget = DecodeBudget(30_000)
    preprocess(png, budget=budget)
    assert budget.left == 18_000
    with pytest.raises(ImageTooLarge, match="CAPTCHA_MAX_BATCH_PIXELS"):
        preprocess(progressive, budget=budget)  # a progressive JPEG counts its pixels once per scan
    assert budget.left == 18_000  # refused before decoding: nothing spent
    preprocess(png, budget=budget)
    assert budget.left == 6_000


def rle8_bmp(width: int, height: int) -> bytes:
    """A run-length encoded 8-bit BMP (Pillow writes none): a grey palette, then 'end of bitmap'."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    pixels = b"\x00\x01"
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(pixels), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + palette + pixels


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "RLE8-BMP"])
def test_costly_formats_are_refused_before_decoding(captcha_image, fmt):
    # TIFF: libtiff's tiles and strips can cost far more than the image; RLE: decoded pixel by pixel in Python.
    data = rle8_bmp(200, 60) if fmt == "RLE8-BMP" else encode(captcha_image, fmt)
    with pytest.raises(UnsupportedImageFormat, match="not supported"):
        preprocess(data)


def test_a_jpeg_of_many_side_segments_is_refused_on_its_header(captcha_image):
    from captcha_api.core.preprocess import MAX_JPEG_SEGMENTS

    data = encode(captcha_image, "JPEG")
    padded = data[:2] + b"\xff\xe3\x00\x02" * (MAX_JPEG_SEGMENTS + 1) + data[2:]  # empty APP3 segments
    with pytest.raises(ImageTooLarge, match="APP and COM segments"):
        preprocess(padded)
    check(preprocess(data[:2] + b"\xff\xe3\x00\x02" * 8 + data[2:]))


def test_absurd_proportions_are_refused_before_decoding():
    # 500000 x 8: within the pixel limit, but no captcha; refused from the header (decoding its RLE took 0.7 s).
    with pytest.raises(UnreadableImage, match="proportions"):
        preprocess(encode(Image.new("L", (100_000, 8), 255), "PNG"))
