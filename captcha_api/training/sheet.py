"""Contact sheets: labelled images beside what a model read, in one PNG, to be checked by eye (`audit`, and
`evaluate --errors-sheet`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

IMAGE_SIZE = (200, 60)  # each captcha drawn at the size the models read
TEXT_WIDTH = 420
PAD = 8
ROW = IMAGE_SIZE[1] + 2 * PAD
# Faces with Cyrillic and Latin, from Debian's fonts-dejavu-core and fonts-freefont-ttf (make install puts them in).
FACES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
)


@dataclass(frozen=True)
class SheetRow:
    image: Path
    label: str
    reading: str
    confidence: float
    note: str = ""  # e.g. the fold that read it


def _font(size: int) -> ImageFont.ImageFont:
    for face in FACES:
        if Path(face).is_file():
            return ImageFont.truetype(face, size)
    raise RuntimeError(f"no font with Cyrillic for the sheet: install fonts-dejavu-core ({FACES[0]})")


def draw(rows: list[SheetRow], path: Path, title: str) -> Path:
    """One row per image: the image, its label, the reading and its confidence, its file name. Written to `path`."""
    big, small = _font(20), _font(13)
    sheet = Image.new("RGB", (IMAGE_SIZE[0] + TEXT_WIDTH + 3 * PAD, ROW * (len(rows) + 1)), "white")
    pen = ImageDraw.Draw(sheet)
    pen.text((PAD, PAD), title, fill="black", font=big)
    pen.text(
        (PAD, PAD + 28), f"{len(rows)} images; label, then what was read and its confidence", fill="gray", font=small
    )
    for index, row in enumerate(rows, start=1):
        top = index * ROW
        if index % 2 == 0:
            pen.rectangle((0, top, sheet.width, top + ROW), fill=(244, 244, 244))
        try:
            with Image.open(row.image) as image:
                thumb = ImageOps.contain(image.convert("RGB"), IMAGE_SIZE)
        except OSError:
            thumb = Image.new("RGB", IMAGE_SIZE, (255, 230, 230))
        sheet.paste(thumb, (PAD, top + PAD))
        left = IMAGE_SIZE[0] + 2 * PAD
        pen.text((left, top + PAD), f"label  {row.label}", fill="black", font=big)
        pen.text(
            (left, top + PAD + 26),
            f"read   {row.reading or '(nothing)'}   {row.confidence:.2f}",
            fill=(170, 0, 0) if row.reading != row.label else (0, 110, 0),
            font=big,
        )
        pen.text((left + 250, top + PAD + 4), (row.image.name + "  " + row.note).strip(), fill="gray", font=small)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
