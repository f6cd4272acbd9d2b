"""CTC best-path decoding with confidences, in NumPy: greedy, and under per-request charset and length constraints.

A reading's confidence is the probability the model gives its whole text: the sum over every frame path that
collapses to it (the CTC forward algorithm), not the product of its characters' peaks. A character the model half
saw between two others (a frame split between it and the blank) lowers the probability of the reading without it:
confident-looking deletions and insertions, which the product of peaks rated near 1.0, come out unsure. How well
it ranks right above wrong readings on real captchas, clean and degraded: docs/confidence.md."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .alphabet import Alphabet


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float  # the probability of the whole text (label_probability)
    char_confidences: tuple[float, ...]  # each character's highest probability over its steps
    runner_up: Reading | None = None  # the likeliest other reading, when asked for (runner_up)
    # The probability of the likeliest number of characters, whatever they are (count_probabilities); None when
    # not computed (Recognizer computes it for readings below one half only: it is never less than the confidence).
    count_confidence: float | None = None
    # Whether the model, before any constraint, sees a character anywhere (a step where one beats the blank); None
    # when not computed (Recognizer computes it).
    seen: bool | None = None


def _check_probs(probs: np.ndarray, alphabet: Alphabet) -> np.ndarray:
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != alphabet.num_classes:
        raise ValueError(f"expected (time, {alphabet.num_classes}) probabilities, got {probs.shape}")
    return probs


def label_probability(probs: np.ndarray, alphabet: Alphabet, text: str) -> float:
    """The probability of reading `text` from (time, classes) probabilities: the sum over every frame path that
    collapses to it (CTC forward algorithm)."""
    return float(label_probabilities(_check_probs(probs, alphabet), alphabet, [text])[0])


def label_probabilities(probs: np.ndarray, alphabet: Alphabet, texts: list[str]) -> np.ndarray:
    """label_probability of several texts: over the same (time, classes) probabilities, or one text per image of
    a (images, time, classes) batch, all at once.

    Each text's states (blank, c1, blank, c2, ..., blank; padded to the longest) evolve linearly: after step t the
    forward probabilities are alpha_t = alpha_(t-1) @ A_t, where A_t[i, j] is 1 for a move from state i to j (stay,
    next, or skip a blank between two different characters) times the probability of j's class at step t. The
    product of the A_t is taken pairwise (log2(time) rounds of batched matrix products) rather than step by step:
    a handful of NumPy calls instead of a few hundred on tiny arrays, which cost a served image more than the sums.
    Each matrix is rescaled by its largest entry, the scales kept in log space, so nothing underflows."""
    blank = alphabet.blank_index
    width = 2 * max(map(len, texts)) + 1
    states = np.full((len(texts), width), blank, dtype=np.int64)
    ends = np.empty(len(texts), dtype=np.int64)
    for row, text in enumerate(texts):
        states[row, 1 : 2 * len(text) : 2] = alphabet.encode(text)
        ends[row] = 2 * len(text)
    steps = probs.shape[-2]
    if steps == 0:
        return np.zeros(len(texts))
    index = np.arange(width)
    valid = index[None, :] <= ends[:, None]
    if probs.ndim == 2:
        emit = probs[:, states].transpose(1, 0, 2)  # (texts, time, states)
    else:
        emit = np.take_along_axis(probs, states[:, None, :], axis=2)
    emit = np.where(valid[:, None, :], emit.astype(np.float64), 0.0)
    # moves[k, i, j]: may text k go from state i to state j in one step
    moves = np.zeros((len(texts), width, width))
    moves[:, index, index] = 1.0
    moves[:, index[:-1], index[1:]] = 1.0
    # a character state may be entered from the character two states back unless the two are the same character
    skip = np.zeros(states.shape, dtype=bool)
    skip[:, 3::2] = states[:, 3::2] != states[:, 1:-2:2]
    moves[:, index[:-2], index[2:]] = skip[:, 2:]
    log_scale = np.zeros(len(texts))
    alpha = emit[:, 0, :] * (index < 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        if steps > 1:
            matrices = moves[:, None, :, :] * emit[:, 1:, None, :]  # (texts, time - 1, width, width)
            identity = np.broadcast_to(np.eye(width), (len(texts), 1, width, width))
            while matrices.shape[1] > 1:
                if matrices.shape[1] % 2:
                    matrices = np.concatenate([matrices, identity], axis=1)
                matrices = matrices[:, 0::2] @ matrices[:, 1::2]
                top = matrices.max(axis=(2, 3), keepdims=True)
                top[top <= 0.0] = 1.0
                matrices /= top
                log_scale += np.log(top).sum(axis=(1, 2, 3))
            alpha = (alpha[:, None, :] @ matrices[:, 0])[:, 0, :]
        rows = np.arange(len(texts))
        end = alpha[rows, ends] + np.where(ends > 0, alpha[rows, np.maximum(ends - 1, 0)], 0.0)
        return np.minimum(1.0, np.nan_to_num(np.exp(log_scale + np.log(end)), nan=0.0))


def count_probabilities(probs: np.ndarray, alphabet: Alphabet, most: int) -> np.ndarray:
    """How many characters each image of a (images, time, classes) batch holds, by the model: the probability of
    every count 0..most, and last of more than `most`, summed over every frame path (images, most + 2). The state
    after a step is (count so far, class of the step): a character is counted when it follows the blank or another
    character. All paths' probabilities add up to 1, so nothing underflows."""
    probs = np.asarray(probs, dtype=np.float64)
    blank = alphabet.blank_index
    images, steps, _ = probs.shape
    counts = most + 2
    score = np.zeros((images, counts, probs.shape[2]))
    if steps == 0:
        score[:, 0, blank] = 1.0
        return score.sum(axis=2)
    score[:, 0, blank] = probs[:, 0, blank]
    score[:, 1, :blank] = probs[:, 0, :blank]
    for t in range(1, steps):
        total = score.sum(axis=2)  # (images, counts): whatever the class of the last step
        entered = total[:, :, None] - score[:, :, :blank]  # from the blank or another character
        chars = score[:, :, :blank].copy()  # the same character again: not counted
        chars[:, 1:] += entered[:, :-1]
        chars[:, -1] += entered[:, -1]  # past `most`, every count is "more"
        score[:, :, :blank] = chars * probs[:, t, None, :blank]
        score[:, :, blank] = total * probs[:, t, blank][:, None]
    counted = score.sum(axis=2)
    return counted / np.maximum(counted.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)


def _collapse(path: np.ndarray, probs: np.ndarray, alphabet: Alphabet) -> tuple[str, tuple[float, ...]]:
    """Collapse a frame path (one class per step): merge repeats, drop blanks. A character's confidence is the
    highest probability over its run of steps."""
    path_p = probs[np.arange(len(path)), path]
    blank = alphabet.blank_index
    chars: list[int] = []
    confidences: list[float] = []
    previous = blank
    for cls, p in zip(path.tolist(), path_p.tolist()):
        if cls != blank:
            if cls != previous:
                chars.append(cls)
                confidences.append(p)
            elif p > confidences[-1]:
                confidences[-1] = p
        previous = cls
    return alphabet.decode(chars), tuple(float(c) for c in confidences)


def _read_path(path: np.ndarray, probs: np.ndarray, alphabet: Alphabet) -> Reading:
    """The reading of a frame path (_collapse), its confidence the probability of its whole text."""
    text, confidences = _collapse(path, probs, alphabet)
    return Reading(text, label_probability(probs, alphabet, text), confidences)


def greedy_decode(probs: np.ndarray, alphabet: Alphabet) -> Reading:
    """Best path through (time, classes) probabilities: take the most likely class per step, merge repeats,
    drop blanks. A character's confidence is the highest probability over its run of steps; the reading's
    confidence is the probability of its whole text (label_probability)."""
    probs = _check_probs(probs, alphabet)
    if probs.shape[0] == 0:
        return Reading("", 0.0, ())
    return _read_path(probs.argmax(axis=1), probs, alphabet)


def greedy_decode_batch(probs: np.ndarray, alphabet: Alphabet) -> list[Reading]:
    """greedy_decode of each image of a (images, time, classes) batch, the confidences computed in one pass."""
    probs = np.asarray(probs)
    if len(probs) == 0 or probs.shape[1] == 0:
        return [greedy_decode(p, alphabet) for p in probs]
    _check_probs(probs[0], alphabet)
    collapsed = [_collapse(path, p, alphabet) for path, p in zip(probs.argmax(axis=2), probs)]
    confidences = label_probabilities(probs, alphabet, [text for text, _ in collapsed])
    return [Reading(text, float(c), chars) for (text, chars), c in zip(collapsed, confidences)]


_LENGTH = re.compile(r"\s*(\d+)\s*(?:(?:-|\.\.)\s*(\d+)\s*)?")


def _check_length_range(min_length: int | None, max_length: int | None) -> None:
    for name, value in (("min_length", min_length), ("max_length", max_length)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if min_length is not None and max_length is not None and min_length > max_length:
        raise ValueError(f"length range is empty: minimum {min_length} is above maximum {max_length}")


def parse_length(value: int | str) -> tuple[int, int]:
    """An exact length (5 or "5") or a range ("4-6", "4..6", both ends included) -> (min, max)."""
    if isinstance(value, int) and not isinstance(value, bool):
        _check_length_range(value, value)
        return value, value
    match = _LENGTH.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"length must be a number like 5 or a range like 4-6 or 4..6, got {value!r}")
    low = int(match[1])
    high = int(match[2]) if match[2] is not None else low
    _check_length_range(low, high)
    return low, high


@dataclass(frozen=True)
class Constraints:
    """Per-request limits on a reading. charset: the characters allowed (a subset of the model's alphabet);
    min_length / max_length: bounds on the reading's length, both included. None means no limit."""

    charset: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        _check_length_range(self.min_length, self.max_length)

    @classmethod
    def parse(cls, charset: str | None = None, length: int | str | None = None) -> Constraints:
        """From request values: length as for parse_length."""
        low, high = parse_length(length) if length is not None else (None, None)
        return cls(charset, low, high)

    def check(self, alphabet: Alphabet) -> None:
        """Refuse a charset the model cannot produce: empty, with repeats, or outside its alphabet."""
        if self.charset is None:
            return
        if not self.charset:
            raise ValueError("charset is empty")
        if len(set(self.charset)) != len(self.charset):
            raise ValueError(f"charset has repeated characters: {self.charset!r}")
        if not alphabet.covers(self.charset):
            bad = sorted(set(self.charset) - set(alphabet.chars))
            raise ValueError(f"charset characters {bad} are not in the model's alphabet {alphabet.chars!r}")


def _best_path_of_length(logp: np.ndarray, min_length: int, max_length: int) -> np.ndarray | None:
    """Viterbi over (time, classes) log probabilities, blank last: the frame path with the highest total whose
    collapsed length is in [min_length, max_length], or None if no path of finite score has such a length.

    State after step t: (n = characters emitted so far, class at step t). Moving to class d emits a character
    unless d is blank or repeats the class of the previous step; so the same character twice needs a blank
    between. O(T * L * C): the best entry into d from another character uses the top two of the previous step."""
    steps, classes = logp.shape
    blank = classes - 1
    top = min(max_length, steps)  # at most one character per step
    rows = np.arange(top + 1)
    chars = np.arange(blank)
    score = np.full((top + 1, classes), -np.inf)
    score[0, blank] = logp[0, blank]
    if top >= 1:
        score[1, :blank] = logp[0, :blank]
    back = np.zeros((steps, top + 1, classes), dtype=np.int64)  # class at the previous step
    for t in range(1, steps):
        new = np.full_like(score, -np.inf)
        # blank: from any class, same count
        source = score.argmax(axis=1)
        new[:, blank] = score[rows, source] + logp[t, blank]
        back[t, :, blank] = source
        # character d from count n - 1: the best of blank and the characters other than d
        char_scores = score[:, :blank]
        first = char_scores.argmax(axis=1)
        first_score = char_scores[rows, first]
        runner_up_scores = char_scores.copy()
        runner_up_scores[rows, first] = -np.inf
        second = runner_up_scores.argmax(axis=1)
        second_score = runner_up_scores[rows, second]
        is_first = chars[None, :] == first[:, None]
        other_score = np.where(is_first, second_score[:, None], first_score[:, None])
        other = np.where(is_first, second[:, None], first[:, None])
        from_blank = score[:, blank][:, None] >= other_score
        enter_score = np.where(from_blank, score[:, blank][:, None], other_score)
        enter = np.where(from_blank, blank, other)
        # character d, count n: stay in d (a repeat, no new character) or enter it from count n - 1
        stay = char_scores[1:] >= enter_score[:-1]
        new[1:, :blank] = np.where(stay, char_scores[1:], enter_score[:-1]) + logp[t, :blank]
        back[t, 1:, :blank] = np.where(stay, chars[None, :], enter[:-1])
        score = new
    if min_length > top:
        return None
    allowed = score[min_length : top + 1]
    n, cls = np.unravel_index(allowed.argmax(), allowed.shape)
    if not np.isfinite(allowed[n, cls]):
        return None
    n, cls = int(n) + min_length, int(cls)
    path = np.empty(steps, dtype=np.int64)
    path[-1] = cls
    for t in range(steps - 1, 0, -1):
        previous = int(back[t, n, cls])
        if cls != blank and previous != cls:
            n -= 1
        cls = previous
        path[t - 1] = cls
    return path


def charset_probabilities(probs: np.ndarray, alphabet: Alphabet, charset: str) -> np.ndarray:
    """Probabilities with only `charset` (and the blank) left: at each step the model's belief that a character is
    there (1 - p(blank)) is kept and shared among the allowed characters in proportion to their probabilities.
    Masking alone would let the blank win wherever the model was sure of a disallowed character, and the slot
    would come back empty; this way the model decides where characters are and the charset which ones."""
    allowed = np.zeros(alphabet.num_classes, dtype=bool)
    allowed[alphabet.encode(charset)] = True
    blank = alphabet.blank_index
    out = np.where(allowed, probs, 0.0).astype(np.float64)
    character_mass = 1.0 - probs[:, blank].astype(np.float64)
    allowed_mass = out.sum(axis=1)
    out *= (character_mass / np.maximum(allowed_mass, np.finfo(np.float64).tiny))[:, None]
    out[:, blank] = probs[:, blank]
    return out


def constrained_decode(probs: np.ndarray, alphabet: Alphabet, constraints: Constraints) -> Reading:
    """Best path under constraints, chosen inside decoding rather than filtered afterwards. A charset leaves only
    its characters, each step's character probability shared among them (charset_probabilities), so a slot the
    model read as a disallowed character gets the best allowed one instead of coming back empty; without a length,
    a charset keeps the model's own count of characters when a reading of that count exists. A length limit picks
    the most probable frame path whose reading has an allowed length (exact Viterbi).

    Confidences use the model's own probabilities of the characters read, not the shared-out ones: they stay
    comparable to unconstrained readings and drop when the constraint overruled the model. Without constraints
    this is greedy_decode. Raises ValueError for a charset outside the alphabet or a length no path can have."""
    probs = _check_probs(probs, alphabet)
    constraints.check(alphabet)
    steps = probs.shape[0]
    min_length = constraints.min_length or 0
    max_length = constraints.max_length if constraints.max_length is not None else steps
    if min_length > steps:
        raise ValueError(f"no reading of length {min_length} or more fits in {steps} time steps")
    if steps == 0:
        return Reading("", 0.0, ())
    scores = probs if constraints.charset is None else charset_probabilities(probs, alphabet, constraints.charset)
    # The total log probability splits over steps, so the per-step best is the best path overall; if its
    # reading has an allowed length it is also the best allowed one, and the length search is not needed.
    reading = _read_path(scores.argmax(axis=1), probs, alphabet)
    keep_count = constraints.charset is not None and constraints.min_length is None and constraints.max_length is None
    if keep_count:
        # A charset alone keeps the number of characters the model reads: a character spread over two steps
        # whose best allowed stand-ins differ would otherwise come back as two.
        min_length = max_length = len(_collapse(probs.argmax(axis=1), probs, alphabet)[0])
    if min_length <= len(reading.text) <= max_length:
        return reading
    # Exact zeros become the smallest positive double, so only masked classes make a path impossible.
    logp = np.log(np.maximum(scores, np.finfo(np.float64).tiny, dtype=np.float64))
    if constraints.charset is not None:
        masked = np.ones(alphabet.num_classes, dtype=bool)
        masked[alphabet.encode(constraints.charset)] = False
        masked[alphabet.blank_index] = False
        logp[:, masked] = -np.inf
    path = _best_path_of_length(logp, min_length, max_length)
    if path is None and keep_count:
        return reading  # no reading over the charset has the model's count: the best one of any length
    if path is None:
        over = f" over the charset {constraints.charset!r}" if constraints.charset is not None else ""
        raise ValueError(
            f"no reading of length {min_length}-{max_length}{over} fits in {steps} time steps"
            " (the same character twice needs a blank step between)"
        )
    return _read_path(path, probs, alphabet)


def constrained_decode_batch(probs: np.ndarray, alphabet: Alphabet, constraints: Constraints) -> list[Reading]:
    return [constrained_decode(p, alphabet, constraints) for p in probs]


def runner_up(
    probs: np.ndarray, alphabet: Alphabet, reading: Reading, constraints: Constraints | None = None
) -> Reading | None:
    """The likeliest reading other than `reading` among its near neighbours: each character swapped for the one
    the model rated next at that character's peak step, and the best readings one character shorter and one longer
    (exact Viterbi). Within `constraints` when given. None when no other reading is possible."""
    probs = _check_probs(probs, alphabet)
    constraints = constraints or Constraints()
    allowed = set(constraints.charset) if constraints.charset is not None else set(alphabet.chars)
    low = constraints.min_length or 0
    high = constraints.max_length if constraints.max_length is not None else probs.shape[0]
    candidates: set[str] = set()
    blank = alphabet.blank_index
    logp = np.log(np.maximum(probs, np.finfo(np.float64).tiny, dtype=np.float64))
    if constraints.charset is not None:
        masked = np.ones(alphabet.num_classes, dtype=bool)
        masked[alphabet.encode(constraints.charset)] = False
        masked[blank] = False
        logp[:, masked] = -np.inf
    # The reading's own frame path: the best one, or (when a constraint changed the count) the best of its length.
    best = probs.argmax(axis=1)
    if len(_collapse(best, probs, alphabet)[0]) != len(reading.text) and reading.text:
        best = _best_path_of_length(logp, len(reading.text), len(reading.text))
    peaks: list[int] = []  # the step where each character of the path is surest
    previous = blank
    for t, cls in enumerate(best.tolist() if best is not None else []):
        if cls != blank and cls != previous:
            peaks.append(t)
        elif cls != blank and probs[t, cls] > probs[peaks[-1], cls]:
            peaks[-1] = t
        previous = cls
    if len(peaks) == len(reading.text):
        for position, t in enumerate(peaks):
            for other in np.argsort(probs[t, :blank])[::-1][:3].tolist():
                char = alphabet.chars[other]
                if char != reading.text[position] and char in allowed:
                    candidates.add(reading.text[:position] + char + reading.text[position + 1 :])
                    break
    for length in (len(reading.text) - 1, len(reading.text) + 1):
        if low <= length <= high:
            path = _best_path_of_length(logp, length, length)
            if path is not None:
                candidates.add(_collapse(path, probs, alphabet)[0])
    candidates.discard(reading.text)
    candidates = {c for c in candidates if low <= len(c) <= high}
    if not candidates:
        return None
    texts = sorted(candidates)
    scores = label_probabilities(probs, alphabet, texts)
    best_index = int(scores.argmax())
    return Reading(texts[best_index], float(scores[best_index]), ())
