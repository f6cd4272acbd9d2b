import numpy as np
import pytest

from captcha_api.ocr.alphabet import Alphabet
from captcha_api.ocr.decoding import greedy_decode, greedy_decode_batch

ABC = Alphabet("abc")  # classes a=0 b=1 c=2, blank=3
BLANK = 3


def path(*steps):
    """One row per step: (class, probability); the rest of the mass is spread over the other classes."""
    probs = np.zeros((len(steps), ABC.num_classes))
    for t, (cls, p) in enumerate(steps):
        probs[t] = (1 - p) / (ABC.num_classes - 1)
        probs[t, cls] = p
    return probs


def test_repeats_merge_and_blanks_drop():
    reading = greedy_decode(path((0, 0.9), (0, 0.8), (BLANK, 0.9), (1, 0.7), (BLANK, 0.6)), ABC)
    assert reading.text == "ab"
    assert reading.char_confidences == pytest.approx((0.9, 0.7))
    assert reading.confidence == pytest.approx(0.9 * 0.7)


def test_blank_between_repeats_keeps_both():
    assert greedy_decode(path((2, 0.9), (BLANK, 0.9), (2, 0.9)), ABC).text == "cc"


def test_repeat_without_blank_is_one_character():
    assert greedy_decode(path((2, 0.9), (2, 0.95), (2, 0.5)), ABC).text == "c"
    assert greedy_decode(path((2, 0.9), (2, 0.95), (2, 0.5)), ABC).char_confidences == pytest.approx((0.95,))


def test_all_blank_is_empty_with_least_sure_step_as_confidence():
    reading = greedy_decode(path((BLANK, 0.99), (BLANK, 0.6), (BLANK, 0.8)), ABC)
    assert reading.text == ""
    assert reading.char_confidences == ()
    assert reading.confidence == pytest.approx(0.6)


def test_no_steps_is_empty_with_zero_confidence():
    reading = greedy_decode(np.zeros((0, ABC.num_classes)), ABC)
    assert (reading.text, reading.confidence) == ("", 0.0)


def test_confidence_is_a_probability():
    rng = np.random.default_rng(1)
    for _ in range(50):
        probs = rng.random((12, ABC.num_classes))
        probs /= probs.sum(axis=1, keepdims=True)
        assert 0.0 <= greedy_decode(probs, ABC).confidence <= 1.0


def test_blank_index_is_taken_from_the_alphabet_not_zero():
    # class 0 is a real character here: a decoder assuming blank=0 would drop the 'a'
    assert greedy_decode(path((0, 0.9), (BLANK, 0.9)), ABC).text == "a"


def test_wrong_class_count_is_refused():
    with pytest.raises(ValueError):
        greedy_decode(np.ones((5, 7)) / 7, ABC)


def test_batch_decodes_each_row():
    batch = np.stack([path((0, 0.9), (BLANK, 0.9)), path((1, 0.9), (2, 0.9))])
    assert [r.text for r in greedy_decode_batch(batch, ABC)] == ["a", "bc"]
