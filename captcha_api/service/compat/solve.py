"""What both solver-compatible APIs share: an order (the image and what the client asked of its reading), read at
once by the served model under the matching decoding constraints, and kept as a task in the task store.

The solving services' options map onto the native reader as follows (docs/compat.md):
- numeric 1 (digits only) and 2 (letters only) become the charset constraint inside decoding; 3 (digits only or
  letters only) reads under each and keeps the more confident reading; 4 (digits and letters both) reads freely and
  answers ERROR_CAPTCHA_UNSOLVABLE when the reading lacks either.
- a length range (min_len / max_len, minLength / maxLength; 0: no bound) becomes the length constraint, within what
  the model reads; a range outside it, or a numeric option over characters the model lacks, is ERROR_BAD_PARAMETERS.
- math / calc: the reading must be `number sign number`, answered by its value; a model without signs in its
  alphabet is ERROR_BAD_PARAMETERS.
- a confidence threshold (the request's, else the model's `min_confidence`) fails the task with
  ERROR_CAPTCHA_UNSOLVABLE below it; so does a reading the native API answers 422 unreadable (no characters, a
  length the model was not trained on without a length asked, noise).
- case sensitivity, phrase, language and instructions for human solvers are accepted and change nothing: the model
  reads what it was trained to read."""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
from dataclasses import dataclass

from flask import current_app, request
from limits import parse_many

from ...core.decoding import Constraints
from ...core.errors import CaptchaError
from ..extensions import IMAGES_SCOPE, limiter, rate_limit_key
from . import errors as e
from .store import ID_HIGH, ID_LOW, StoreError, StoreFull, Task, TaskStore

MODEL_SEPARATOR = "__"  # CapMonster's "<key>__<model>" key form
SIGNS = "+-*x×/:÷"
EXPRESSION = re.compile(r"^(\d{1,9})([+\-*x×/:÷])(\d{1,9})=?$")
NUMERIC_CHOICES = range(5)


@dataclass(frozen=True)
class Order:
    """An image and what its reading must be."""

    image: bytes
    numeric: int = 0
    min_length: int = 0
    max_length: int = 0
    math: bool = False
    threshold: float | None = None  # 0 to 1; None: the model's min_confidence
    model: str | None = None


def owner(key: str) -> str:
    """The task store's name for an API key (never the key itself)."""
    return hashlib.sha256(("task-owner\0" + key).encode("utf-8", "replace")).hexdigest()[:32]


def _models():
    return current_app.extensions["models"]


def _store() -> TaskStore:
    return current_app.extensions["tasks"]  # there whenever these endpoints are (compat/__init__.py)


def _charsets(numeric: int, alphabet: str, name: str) -> list[str | None]:
    """The charsets a reading is tried under: numeric 1 digits, 2 letters, 3 each of them the model has."""
    digits = "".join(c for c in alphabet if c.isdigit())
    letters = "".join(c for c in alphabet if c.isalpha())
    if numeric == 1 and not digits:
        raise e.BAD_PARAMETERS(f"numeric=1 asks for digits only; the model {name!r} reads none")
    if numeric == 2 and not letters:
        raise e.BAD_PARAMETERS(f"numeric=2 asks for letters only; the model {name!r} reads none")
    if numeric == 1:
        return [digits]
    if numeric == 2:
        return [letters]
    if numeric == 3:
        return [chars for chars in (digits, letters) if chars] or [None]
    return [None]


def _lengths(order: Order, meta) -> tuple[int | None, int | None]:
    if order.min_length < 0 or order.max_length < 0:
        raise e.BAD_PARAMETERS("lengths are not negative (0: no bound)")
    if order.min_length and order.max_length and order.min_length > order.max_length:
        raise e.BAD_PARAMETERS(f"the minimum length {order.min_length} is above the maximum {order.max_length}")
    if not order.min_length and not order.max_length:
        return None, None
    low = max(order.min_length or meta.min_length, meta.min_length)
    high = min(order.max_length or meta.max_length, meta.max_length)
    if low > high:
        raise e.BAD_PARAMETERS(
            f"the model {meta.name!r} reads {meta.min_length} to {meta.max_length} characters, not "
            f"{order.min_length or 'any'} to {order.max_length or 'any'}"
        )
    return low, high


def _calculated(text: str) -> str | None:
    match = EXPRESSION.match(text)
    if match is None:
        return None
    left, sign, right = int(match.group(1)), match.group(2), int(match.group(3))
    if sign in "/:÷":
        return str(left // right) if right and left % right == 0 else None
    return str(left + right if sign == "+" else left - right if sign == "-" else left * right)


def read(order: Order, name: str, recognizer):
    """The reading of an order (text, confidence), or a CompatError the task fails with. Raises CompatError for an
    order the model cannot meet, and CaptchaError for an image it cannot read."""
    meta = recognizer.metadata
    if order.numeric not in NUMERIC_CHOICES:
        raise e.BAD_PARAMETERS(f"numeric is 0 to 4, not {order.numeric}")
    if order.math and not set(SIGNS) & set(meta.alphabet):
        raise e.BAD_PARAMETERS(f"a calculation was asked; the model {name!r} reads no arithmetic signs")
    if order.threshold is not None and not 0 <= order.threshold <= 1:
        raise e.BAD_PARAMETERS("the recognizing threshold is 0 to 100")
    low, high = _lengths(order, meta)
    readings = []
    for charset in _charsets(order.numeric, meta.alphabet, name):
        constraints = Constraints(charset, low, high) if charset or low is not None else None
        readings.append((recognizer.read(order.image, constraints), constraints))
    reading, constraints = max(readings, key=lambda pair: pair[0].confidence)
    text, confidence = reading.text, float(reading.confidence)
    # What the native API answers 422 (unreadable, low_confidence) is an unsolvable captcha here.
    refusal = recognizer.verdict(reading, constraints, order.threshold)
    if refusal is not None:
        return e.CAPTCHA_UNSOLVABLE(refusal.message)
    if order.numeric == 4 and not (any(c.isdigit() for c in text) and any(c.isalpha() for c in text)):
        return e.CAPTCHA_UNSOLVABLE("numeric=4 asks for digits and letters; the reading has not both")
    if order.math:
        value = _calculated(text)
        if value is None:
            return e.CAPTCHA_UNSOLVABLE(f"the reading {text!r} is not a calculation")
        text = value
    return text, confidence


def create(order: Order, key: str) -> Task:
    """Read the order's image now and keep the outcome as a task of `key`'s (the reading is done before the task
    exists, so its first poll finds it ready)."""
    models = _models()
    if order.model is not None and order.model not in models.recognizers:
        raise e.BAD_PARAMETERS(f"no model {order.model!r} is served; GET /info lists them")
    name = order.model or models.default_name
    recognizer = models.get(name)
    store = _store()
    # Whose share of the store the task takes: the client as the rate limit counts it (its key, or its address on
    # a service without keys, where any string is a key).
    holder = owner(rate_limit_key())
    with _store_errors():
        store.check_room(holder)  # before the image costs anything
    started = time.time()
    try:
        outcome = read(order, name, recognizer)
    except CaptchaError as error:
        raise e.from_native(error.code, error.message) from None
    fields = {
        "owner": owner(key),
        "model": name,
        "version": recognizer.version,
        "created": started,
        "ended": time.time(),
        "client_ip": request.remote_addr or "",
    }
    if isinstance(outcome, e.CompatError):
        fields.update(status="failed", error=outcome.name, message=outcome.text)
    else:
        fields.update(status="ready", text=outcome[0], confidence=outcome[1])
    with _store_errors():
        # The feedback store's name for the image is the task's own (a client's X-Request-ID may repeat).
        task = store.add(lambda task_id: Task(id=task_id, request_id=f"task-{task_id}", **fields), holder)
    feedback = current_app.extensions.get("feedback")
    if feedback is not None and task.status == "ready":
        feedback.remember(key, task.request_id, 0, name, recognizer.version, task.text, order.image)
    return task


@contextlib.contextmanager
def _store_errors():
    """The store's failures as the compatible APIs answer them: ERROR_NO_SLOT_AVAILABLE (logged when it broke)."""
    try:
        yield
    except StoreFull as error:
        raise e.NO_SLOT_AVAILABLE(str(error)) from None
    except StoreError as error:
        current_app.logger.error("%s", error)
        raise e.NO_SLOT_AVAILABLE("the task store is not answering; retry shortly") from None


def task_number(value) -> int:
    """A task id as a client sends it (a number, or its digits in a string) -> int; WRONG_ID_FORMAT otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise e.WRONG_ID_FORMAT("a task id is the number its creation answered")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise e.WRONG_ID_FORMAT(f"a task id is the number its creation answered, not {text[:40]!r}")
    return int(text)


def find(task_id: int, key: str) -> Task | None:
    """The live task of this id created with this key, else None."""
    if not ID_LOW <= task_id <= ID_HIGH:
        return None  # no task has such an id
    with _store_errors():
        task = _store().get(task_id)
    if task is None or task.owner != owner(key):
        return None
    return task


def image_limits() -> list:
    """CAPTCHA_RATE_LIMIT's windows (none when it is off): the allowance of images a key draws on."""
    rate_limit = current_app.config["SETTINGS"].rate_limit
    return parse_many(rate_limit) if rate_limit else []


def charge_image() -> None:
    """Count one image against CAPTCHA_RATE_LIMIT for this request's key, as the views under routes.images_limit
    are counted; ERROR_TOO_MUCH_REQUESTS past it."""
    settings = current_app.config["SETTINGS"]
    if not settings.rate_limit:
        return
    try:
        allowed = all(limiter.limiter.hit(item, rate_limit_key(), IMAGES_SCOPE) for item in image_limits())
    except Exception:  # noqa: BLE001 - a storage that does not answer counts nothing, as Flask-Limiter does
        current_app.logger.warning("rate limit storage unreachable: a report is not counted", exc_info=True)
        return
    if not allowed:
        raise e.TOO_MUCH_REQUESTS(f"over CAPTCHA_RATE_LIMIT ({settings.rate_limit}): retry after a pause")


def failure(task: Task) -> e.CompatError:
    """The error a failed task is answered with."""
    return e.BY_NAME.get(task.error, e.CAPTCHA_UNSOLVABLE)(task.message)


def report(task: Task, key: str, correct: bool) -> bool:
    """A client's word on a task's reading: False if the task was reported already. A wrong reading's image, while
    the feedback store still has it, is kept there for labelling (FOLDER/MODEL/unlabelled/)."""
    with _store_errors():
        first = _store().mark_reported(task.id, "good" if correct else "bad")
    if not first:
        return False
    feedback = current_app.extensions.get("feedback")
    if not correct and task.status == "ready" and feedback is not None:
        feedback.report_unlabelled(key, task.request_id, 0)
    return True
