"""Greedy CTC decoding with confidences, in NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alphabet import Alphabet


@dataclass(frozen=True)
class Reading:
    text: str
    confidence: float
    char_confidences: tuple[float, ...]


def greedy_decode(probs: np.ndarray, alphabet: Alphabet) -> Reading:
    """Best path through (time, classes) probabilities: take the most likely class per step, merge repeats,
    drop blanks. A character's confidence is the highest probability over its run of steps; the reading's
    confidence is the product over its characters (for an empty reading, the least sure blank step)."""
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != alphabet.num_classes:
        raise ValueError(f"expected (time, {alphabet.num_classes}) probabilities, got {probs.shape}")
    if probs.shape[0] == 0:
        return Reading("", 0.0, ())
    best = probs.argmax(axis=1)
    best_p = probs[np.arange(len(best)), best]
    blank = alphabet.blank_index
    chars: list[int] = []
    confidences: list[float] = []
    previous = blank
    for cls, p in zip(best.tolist(), best_p.tolist()):
        if cls != blank:
            if cls != previous:
                chars.append(cls)
                confidences.append(p)
            elif p > confidences[-1]:
                confidences[-1] = p
        previous = cls
    if chars:
        confidence = float(np.prod(confidences))
    else:
        confidence = float(best_p.min())
    return Reading(alphabet.decode(chars), confidence, tuple(float(c) for c in confidences))


def greedy_decode_batch(probs: np.ndarray, alphabet: Alphabet) -> list[Reading]:
    return [greedy_decode(p, alphabet) for p in probs]
