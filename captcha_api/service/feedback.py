"""Learning from misses: the images of recent readings, kept briefly so that a client can report a wrong one, and
the reports, kept as training data.

Recent readings live in a folder every worker of the machine shares (the report may reach another worker than the
reading): in memory, /dev/shm/captcha-ocr-UID-HASH (HASH names FOLDER), where the machine has it, else
FOLDER/.recent. The folder must be the service user's alone (else reports are off). One file a reading, named by a
hash of the client's API key, the request id and the image index (so a client can neither overwrite nor report
another's reading, and no name is hidden from pruning), holding a small JSON head line and the image bytes (written
straight, about 40 us on tmpfs: the head's byte count tells a whole file from one being written). They are dropped
after CAPTCHA_FEEDBACK_KEEP_SECONDS, and the oldest first once they pass CAPTCHA_FEEDBACK_KEEP_MB, counted in the
blocks they take; a worker prunes at once when its own writes take it past that. Nothing else of a request is
stored.

A report (POST /report) moves its image into FOLDER/MODEL/images/, named by the SHA-256 of its bytes (the same
image reported twice is stored once, with its first text), and appends `filename,text` to FOLDER/MODEL/labels.csv:
the layout `captcha-ocr train --data` reads. A report holds an exclusive lock on labels.csv from its duplicate check
to its last write, so several workers may report at once; an image is written aside and renamed, and taken back if
its row cannot be written. No link is followed. The folder may hold at most CAPTCHA_FEEDBACK_MAX_MB, in blocks."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import stat
import tempfile
import time
from pathlib import Path

from ..core.artifact import write_atomically
from ..core.errors import InvalidParameter
from ..core.preprocess import image_suffix
from .errors import FeedbackFull, FeedbackUnavailable, UnknownRequest

log = logging.getLogger(__name__)

RECENT = ".recent"
LOCK = ".lock"  # in each model's feedback folder
UNLABELLED = "unlabelled"  # images reported wrong without their right text, in each model's feedback folder
SHARED_MEMORY = Path("/dev/shm")
PRUNE_EVERY = 1.0  # seconds between two prunings of the recent readings by one worker, while under budget
PRUNE_TO = 0.75  # of CAPTCHA_FEEDBACK_KEEP_MB, once past it
NO_FOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


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
        self._held = 0  # bytes (in blocks) in the recent folder at the last pruning, plus this worker's writes since
        self.usable = self._prepare()

    def _prepare(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.recent.mkdir(mode=0o700, parents=True, exist_ok=True)
            mine = os.lstat(self.recent)
            if not stat.S_ISDIR(mine.st_mode) or mine.st_uid != os.geteuid() or mine.st_mode & 0o077:
                # Another user made it (the name is predictable): they could read the images or plant links.
                raise PermissionError(f"{self.recent} must be a folder of this user's alone (mode 700)")
            probe = tempfile.NamedTemporaryFile(dir=self.recent, prefix=".probe-")
            probe.close()
        except OSError as error:
            log.error("feedback is off: %s (%s); set CAPTCHA_FEEDBACK_DIR", self.folder, error)
            return False
        return True

    @staticmethod
    def entry(key: str, request_id: str, index: int) -> str:
        """The file name of a reading: a hash of who asked (the API key) and what they called it."""
        scope = hashlib.sha256(f"{key}\0{request_id}".encode("utf-8", "replace")).hexdigest()[:40]
        return f"{scope}.{index}"

    # ------------------------------------------------------------------------------------------ recent readings

    def remember(self, key: str, request_id: str, index: int, model: str, version: str, reading: str, image: bytes):
        """Keep one reading's image for a report to find; a failure here never fails the reading."""
        if not self.usable or self.keep_seconds <= 0 or self.keep_bytes <= 0:
            return
        head = json.dumps({"model": model, "version": version, "reading": reading, "bytes": len(image)})
        data = head.encode("utf-8") + b"\n" + image
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NO_FOLLOW
            handle = os.open(self.recent / self.entry(key, request_id, index), flags, 0o600)
            try:
                os.write(handle, data)
            finally:
                os.close(handle)
            self._held += -(-len(data) // 4096) * 4096  # tmpfs and most disks take whole 4 KB blocks
            self._prune()
        except OSError as error:
            log.warning("could not keep the image of request %s for reports: %s", request_id, error)

    def _prune(self) -> None:
        now = time.time()
        if now - self._pruned < PRUNE_EVERY and self._held <= self.keep_bytes:
            return
        self._pruned = now
        entries = []
        with os.scandir(self.recent) as found:
            for entry in found:
                if entry.name.startswith(".probe-"):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # another worker pruned it
                    continue
                entries.append((info.st_mtime, info.st_blocks * 512, entry.path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        # Past the budget, down to three quarters of it: at the budget every next reading would prune again (a scan
        # of some 2,000 files on each request took /predict from 3 to 13 ms).
        target = self.keep_bytes if total <= self.keep_bytes else self.keep_bytes * PRUNE_TO
        for mtime, size, path in entries:
            if now - mtime <= self.keep_seconds and total <= target:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
        self._held = total

    def recall(self, key: str, request_id: str, index: int) -> tuple[dict, bytes]:
        path = self.recent / self.entry(key, request_id, index)
        try:
            handle = os.open(path, os.O_RDONLY | NO_FOLLOW)
            with os.fdopen(handle, "rb") as source:
                if time.time() - os.fstat(source.fileno()).st_mtime > self.keep_seconds:
                    raise FileNotFoundError(path)
                head, _, image = source.read().partition(b"\n")
            reading = json.loads(head)
            if reading.get("bytes") != len(image):  # being written, or cut short
                raise FileNotFoundError(path)
        except (OSError, ValueError):
            raise UnknownRequest(
                f"no recent reading has the request id {request_id!r}"
                + (f" and index {index}" if index else "")
                + f" for this API key: the images of readings are kept {self.keep_seconds} s "
                "(CAPTCHA_FEEDBACK_KEEP_SECONDS)"
            ) from None
        return reading, image

    # ------------------------------------------------------------------------------------------------- reports

    def report(self, key: str, request_id: str, index: int, text: str, models) -> dict:
        """Store the image of a wrong reading with its right text; the text must be one the model could read."""
        if not self.usable:
            raise FeedbackUnavailable(
                f"reports are not stored: {self.folder.name} is not usable (CAPTCHA_FEEDBACK_DIR)"
            )
        reading, image = self.recall(key, request_id, index)
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
        if target.resolve().parent != self.folder.resolve():  # a model name is a plain name (ModelArtifact)
            raise FeedbackUnavailable(f"the model name {reading['model']!r} cannot name a feedback folder")
        name = hashlib.sha256(image).hexdigest()[:32] + image_suffix(image)
        try:
            return self._store(target, name, image, text, reading)
        except OSError as error:  # a folder an operator broke (a link planted, no space left): not the client's doing
            log.error("could not store a report in %s: %s", target, error)
            raise FeedbackUnavailable(f"the report could not be stored: {error.strerror or error}") from None

    def report_unlabelled(self, key: str, request_id: str, index: int) -> bool:
        """Keep the image of a reading reported wrong without its right text (the solver-compatible APIs' reports)
        in FOLDER/MODEL/unlabelled/, for labelling. False when it is not stored (kept no more, reported already, the
        folder full or broken): the report itself is the caller's to record, so nothing here fails it."""
        if not self.usable:
            return False
        try:
            reading, image = self.recall(key, request_id, index)
        except UnknownRequest:
            return False
        target = self.folder / reading["model"]
        if target.resolve().parent != self.folder.resolve():
            return False
        name = hashlib.sha256(image).hexdigest()[:32] + image_suffix(image)
        try:
            return self._store(target, name, image, None, reading)["stored"]
        except (OSError, FeedbackFull) as error:
            log.warning("could not keep the image of a reading reported wrong (request %s): %s", request_id, error)
            return False

    def _store(self, target: Path, name: str, image: bytes, text: str | None, reading: dict) -> dict:
        """Store an image with its text (images/ and a row of labels.csv), or without one (unlabelled/)."""
        folder = target / ("images" if text is not None else UNLABELLED)
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(target / LOCK):
            stored = folder / name
            if os.path.lexists(stored):
                return {"stored": False, "model": reading["model"], "file": name}
            total, unlabelled = self._sizes()
            if text is None and unlabelled + -(-len(image) // 4096) * 4096 > self.max_bytes // 4:
                # Reports without a text are a quarter of the folder at most: they never crowd out labelled ones.
                raise FeedbackFull("the unlabelled reports hold a quarter of CAPTCHA_FEEDBACK_MAX_MB already")
            if total + -(-len(image) // 4096) * 4096 + 4096 > self.max_bytes:
                raise FeedbackFull(
                    f"the feedback folder holds {self.max_bytes // 2**20} MB already (CAPTCHA_FEEDBACK_MAX_MB): "
                    "train on it and move it away"
                )
            write_atomically(stored, image)
            if text is None:
                log.info(
                    "report stored: %s is not %r (model %s), unlabelled", name, reading["reading"], reading["model"]
                )
                return {"stored": True, "model": reading["model"], "file": name}
            try:
                _append_label(target / "labels.csv", name, text)
            except BaseException:
                stored.unlink(missing_ok=True)  # no image without its row: a later report may store it again
                raise
        log.info("report stored: %s reads %r, not %r (model %s)", name, text, reading["reading"], reading["model"])
        return {"stored": True, "model": reading["model"], "file": name}

    def _sizes(self) -> tuple[int, int]:
        """What the stored reports take, in blocks: all of them, and those without a text (UNLABELLED folders)."""
        total = unlabelled = 0
        for root, _dirs, files in os.walk(self.folder):
            here = 0
            for name in files:
                try:
                    here += os.lstat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
            total += here
            unlabelled += here if Path(root).name == UNLABELLED else 0
        return total, unlabelled


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on a model's feedback folder (its lock file, never through a link) while the block runs."""
    handle = os.open(path, os.O_RDWR | os.O_CREAT | NO_FOLLOW, 0o600)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _append_label(labels: Path, name: str, text: str) -> None:
    """One row (the header first when the file is new), appended and flushed to disk, never through a link. The
    file is locked from the check for its header to the write, so two writers never both write the header (a
    report also holds the folder's lock; a tool appending beside it need not); the write is one append, so a
    reader never sees half a row."""
    line = io.StringIO()
    writer = csv.writer(line, lineterminator="\n")
    handle = os.open(labels, os.O_WRONLY | os.O_APPEND | os.O_CREAT | NO_FOLLOW, 0o644)
    with os.fdopen(handle, "a", encoding="utf-8", newline="") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # released when the file closes
        if os.fstat(file.fileno()).st_size == 0:
            writer.writerow(["filename", "text"])
        writer.writerow([name, text])
        file.write(line.getvalue())
        file.flush()
        os.fsync(file.fileno())
