"""Learning from misses: the images of recent readings, kept briefly so that a client can report a wrong one, and
the reports, kept as training data.

Recent readings live in a folder every worker of the machine shares (the report may reach another worker than the
reading): in memory, /dev/shm/captcha-ocr-UID-HASH (HASH names FOLDER), where the machine has it, else
FOLDER/.recent; one file each, named by request id and image index, holding a small JSON head line and the image
bytes (written straight, about 40 us on tmpfs: the head's byte count tells a whole file from one being written).
They are dropped after CAPTCHA_FEEDBACK_KEEP_SECONDS, and the oldest first once they pass CAPTCHA_FEEDBACK_KEEP_MB;
the folder is the service user's alone. Nothing else of a request is stored.

A report (POST /report) moves its image into FOLDER/MODEL/images/, named by the SHA-256 of its bytes (the same
image reported twice is stored once), and appends `filename,text` to FOLDER/MODEL/labels.csv: the layout
`captcha-ocr train --data` reads. Files are written aside and renamed; labels.csv is appended under an exclusive
lock, so several workers may report at once. The folder may hold at most CAPTCHA_FEEDBACK_MAX_MB."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from ..core.errors import InvalidParameter
from ..core.preprocess import image_suffix
from .errors import FeedbackFull, FeedbackUnavailable, UnknownRequest

log = logging.getLogger(__name__)

RECENT = ".recent"
SHARED_MEMORY = Path("/dev/shm")
PRUNE_EVERY = 1.0  # seconds between two prunings of the recent readings by one worker


def recent_folder(folder: Path) -> Path:
    """Where the recent readings of the service storing reports in `folder` live (see the module's docstring)."""
    if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK):
        tag = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
        return SHARED_MEMORY / f"captcha-ocr-{os.getuid()}-{tag}"
    return folder / RECENT


class Feedback:
    def __init__(self, folder: Path, keep_seconds: int, keep_bytes: int, max_bytes: int):
        self.folder = Path(folder)
        self.recent = recent_folder(self.folder)
        self.keep_seconds, self.keep_bytes, self.max_bytes = keep_seconds, keep_bytes, max_bytes
        self._pruned = 0.0
        self.usable = self._prepare()

    def _prepare(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.recent.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.recent, prefix=".probe-")
            probe.close()
        except OSError as error:
            log.error("feedback is off: %s is not writable (%s); set CAPTCHA_FEEDBACK_DIR", self.folder, error)
            return False
        return True

    # ------------------------------------------------------------------------------------------ recent readings

    def remember(self, request_id: str, index: int, model: str, version: str, reading: str, image: bytes) -> None:
        """Keep one reading's image for a report to find; a failure here never fails the reading."""
        if not self.usable or self.keep_seconds <= 0:
            return
        head = json.dumps({"model": model, "version": version, "reading": reading, "bytes": len(image)})
        try:
            handle = os.open(self.recent / f"{request_id}.{index}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(handle, head.encode("utf-8") + b"\n" + image)
            finally:
                os.close(handle)
            self._prune()
        except OSError as error:
            log.warning("could not keep the image of request %s for reports: %s", request_id, error)

    def _prune(self) -> None:
        now = time.time()
        if now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        entries = []
        with os.scandir(self.recent) as found:
            for entry in found:
                if entry.name.startswith("."):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:  # another worker pruned it
                    continue
                entries.append((stat.st_mtime, stat.st_size, entry.path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        for mtime, size, path in entries:
            if now - mtime <= self.keep_seconds and total <= self.keep_bytes:
                break
            Path(path).unlink(missing_ok=True)
            total -= size

    def recall(self, request_id: str, index: int) -> tuple[dict, bytes]:
        path = self.recent / f"{request_id}.{index}"
        try:
            if time.time() - path.stat().st_mtime > self.keep_seconds:
                raise FileNotFoundError(path)
            head, _, image = path.read_bytes().partition(b"\n")
            reading = json.loads(head)
            if reading.get("bytes") != len(image):  # being written, or cut short
                raise FileNotFoundError(path)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            raise UnknownRequest(
                f"no recent reading has the request id {request_id!r}"
                + (f" and index {index}" if index else "")
                + f": the images of readings are kept {self.keep_seconds} s (CAPTCHA_FEEDBACK_KEEP_SECONDS)"
            ) from None
        return reading, image

    # ------------------------------------------------------------------------------------------------- reports

    def report(self, request_id: str, index: int, text: str, models) -> dict:
        """Store the image of a wrong reading with its right text; the text must be one the model could read."""
        if not self.usable:
            raise FeedbackUnavailable(f"reports are not stored: {self.folder} is not writable (CAPTCHA_FEEDBACK_DIR)")
        reading, image = self.recall(request_id, index)
        recognizer = models.recognizers.get(reading["model"])
        if recognizer is None:
            raise UnknownRequest(f"the model {reading['model']!r} that read request {request_id!r} is served no more")
        meta = recognizer.metadata
        outside = sorted(set(text) - set(meta.alphabet))
        if outside:
            raise InvalidParameter(f"'text' holds characters the model {meta.name!r} cannot read: {''.join(outside)}")
        if not meta.min_length <= len(text) <= meta.max_length:
            raise InvalidParameter(
                f"'text' has {len(text)} characters; the model {meta.name!r} reads {meta.min_length} to "
                f"{meta.max_length}"
            )
        if text == reading["reading"]:
            raise InvalidParameter("'text' is the reading itself: report only readings that were wrong")
        target = self.folder / reading["model"]
        name = hashlib.sha256(image).hexdigest()[:32] + image_suffix(image)
        stored = target / "images" / name
        if stored.is_file():
            return {"stored": False, "model": reading["model"], "file": name}
        if self._size() + len(image) + 256 > self.max_bytes:
            raise FeedbackFull(
                f"the feedback folder holds {self.max_bytes // 2**20} MB already (CAPTCHA_FEEDBACK_MAX_MB): train on "
                "it and move it away"
            )
        stored.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(stored, image)
        _append_label(target / "labels.csv", name, text)
        log.info("report stored: %s reads %r, not %r (model %s)", name, text, reading["reading"], reading["model"])
        return {"stored": True, "model": reading["model"], "file": name}

    def _size(self) -> int:
        total = 0
        for root, _dirs, files in os.walk(self.folder):
            if Path(root).name == RECENT:
                continue
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except FileNotFoundError:
                    continue
        return total


def _write_atomically(path: Path, data: bytes) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _append_label(labels: Path, name: str, text: str) -> None:
    """One row, appended under an exclusive lock (the header first when the file is new)."""
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\n")
    with open(labels, "a+", encoding="utf-8", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                writer.writerow(["filename", "text"])
            writer.writerow([name, text])
            handle.write(line.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
