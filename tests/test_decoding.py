import itertools

import numpy as np
import pytest

from captcha_api.core.alphabet import Alphabet
from captcha_api.core.decoding import (
    Constraints,
    _best_path_of_length,
    charset_probabilities,
    constrained_decode,
    constrained_decode_batch,
    count_probabilities,
    greedy_decode,
    greedy_decode_batch,
    label_probability,
    parse_length,
    runner_up,
)

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
    reading = greedy_decode(probs_of_ab(), ABC)
    assert reading.text == "ab"
    assert reading.char_confidences == pytest.approx((0.9, 0.7))
    assert reading.confidence == pytest.approx(brute_force_probability(reading.text, probs_of_ab()))


def probs_of_ab():
    return path((0, 0.9), (0, 0.8), (BLANK, 0.9), (1, 0.7), (BLANK, 0.6))


def brute_force_probability(text, probs, alphabet=ABC):
    """Reference: the sum over every frame path that collapses to `text`."""
    total = 0.0
    for frame_path in itertools.product(range(alphabet.num_classes), repeat=len(probs)):
        chars, _ = collapse(frame_path, probs, alphabet.blank_index)
        if alphabet.decode(chars) == text:
            total += float(np.prod(probs[np.arange(len(probs)), frame_path]))
    return total


def test_confidence_is_the_probability_of_the_whole_text_summed_over_its_paths():
    rng = np.random.default_rng(7)
    for case in range(40):
        probs = random_probs(rng, int(rng.integers(1, 6)), ABC.num_classes, sharpness=float(rng.uniform(1, 4)))
        texts = {"", "a", "ab", "aa", "cab", "abca", greedy_decode(probs, ABC).text}
        for text in texts:
            assert label_probability(probs, ABC, text) == pytest.approx(brute_force_probability(text, probs)), (
                case,
                text,
            )
        assert greedy_decode(probs, ABC).confidence == pytest.approx(
            brute_force_probability(greedy_decode(probs, ABC).text, probs)
        )


def test_a_character_half_seen_between_two_others_makes_the_reading_without_it_unsure():
    # every character peak is sure, but one step between 'a' and 'b' is split between the blank and 'c':
    # the product of peaks says 0.98; the reading "ab" is only about as likely as the step's blank
    probs = path((0, 0.99), (BLANK, 0.99), (BLANK, 0.55), (BLANK, 0.99), (1, 0.99))
    probs[2] = [0.0, 0.0, 0.45, 0.55]
    reading = greedy_decode(probs, ABC)
    assert reading.text == "ab"
    assert np.prod(reading.char_confidences) > 0.97
    assert reading.confidence < 0.6
    assert runner_up(probs, ABC, reading).text == "acb"


def test_runner_up_swaps_the_least_sure_character_and_respects_constraints():
    probs = path((0, 0.9), (BLANK, 0.9), (1, 0.6), (BLANK, 0.9), (2, 0.9))
    probs[2] = [0.0, 0.6, 0.35, 0.05]
    reading = greedy_decode(probs, ABC)
    second = runner_up(probs, ABC, reading)
    assert (reading.text, second.text) == ("abc", "acc")
    assert 0 < second.confidence < reading.confidence
    assert runner_up(probs, ABC, reading, Constraints(charset="abc", min_length=3, max_length=3)).text == "acc"
    assert runner_up(probs, ABC, reading, Constraints(charset="ab", min_length=3, max_length=3)).text != "acc"


def test_no_runner_up_when_nothing_else_can_be_read():
    probs = path((0, 1.0))
    assert (
        runner_up(probs, ABC, greedy_decode(probs, ABC), Constraints(charset="a", min_length=1, max_length=1)) is None
    )


def test_blank_between_repeats_keeps_both():
    assert greedy_decode(path((2, 0.9), (BLANK, 0.9), (2, 0.9)), ABC).text == "cc"


def test_repeat_without_blank_is_one_character():
    assert greedy_decode(path((2, 0.9), (2, 0.95), (2, 0.5)), ABC).text == "c"
    assert greedy_decode(path((2, 0.9), (2, 0.95), (2, 0.5)), ABC).char_confidences == pytest.approx((0.95,))


def test_all_blank_is_empty_with_the_probability_of_no_character_as_confidence():
    reading = greedy_decode(path((BLANK, 0.99), (BLANK, 0.6), (BLANK, 0.8)), ABC)
    assert reading.text == ""
    assert reading.char_confidences == ()
    assert reading.confidence == pytest.approx(0.99 * 0.6 * 0.8)


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


# Constrained decoding

DIGITS_AND_LETTERS = Alphabet("12ab")  # classes 1=0 2=1 a=2 b=3, blank=4


def steps(alphabet, *rows):
    """One row per step: {class: probability}; the rest of the mass is spread over the other classes."""
    probs = np.zeros((len(rows), alphabet.num_classes))
    for t, row in enumerate(rows):
        probs[t] = (1 - sum(row.values())) / (alphabet.num_classes - len(row))
        for cls, p in row.items():
            probs[t, cls] = p
    return probs


def random_probs(rng, time, classes, sharpness=1.0):
    probs = rng.random((time, classes)) ** sharpness
    return probs / probs.sum(axis=1, keepdims=True)


def collapse(frame_path, probs, blank):
    """Reference collapse: (characters, highest probability over each character's run of steps)."""
    chars, confidences, previous = [], [], blank
    for t, cls in enumerate(frame_path):
        if cls != blank and cls != previous:
            chars.append(cls)
            confidences.append(probs[t, cls])
        elif cls != blank:
            confidences[-1] = max(confidences[-1], probs[t, cls])
        previous = cls
    return chars, confidences


def test_charset_gives_the_best_allowed_character_instead_of_an_empty_slot():
    blank = DIGITS_AND_LETTERS.blank_index
    probs = steps(
        DIGITS_AND_LETTERS,
        {0: 0.9},
        {blank: 0.9},
        {2: 0.6, 1: 0.3},  # the model reads 'a'; '2' is its second choice
        {blank: 0.9},
        {0: 0.9},
    )
    assert greedy_decode(probs, DIGITS_AND_LETTERS).text == "1a1"
    reading = constrained_decode(probs, DIGITS_AND_LETTERS, Constraints(charset="12"))
    assert reading.text == "121"
    # raw probabilities: the overruled slot shows how unsure the model was of it
    assert reading.char_confidences == pytest.approx((0.9, 0.3, 0.9))
    assert reading.confidence == pytest.approx(label_probability(probs, DIGITS_AND_LETTERS, "121"))
    assert reading.confidence < 0.3


def test_length_picks_the_best_reading_of_that_length_not_a_filter():
    probs = path((0, 0.9), (BLANK, 0.9), (1, 0.9), (BLANK, 0.5), (2, 0.9))
    probs[3] = [0.45, 0.025, 0.025, 0.5]  # blank narrowly beats 'a' in the fourth step
    assert greedy_decode(probs, ABC).text == "abc"
    reading = constrained_decode(probs, ABC, Constraints.parse(length=4))
    assert reading.text == "abac"
    assert reading.char_confidences == pytest.approx((0.9, 0.9, 0.45, 0.9))


def test_length_range_leaves_a_reading_in_range_unchanged():
    probs = path((0, 0.9), (1, 0.8), (BLANK, 0.9), (2, 0.7), (BLANK, 0.6), (0, 0.9), (BLANK, 0.9))
    assert constrained_decode(probs, ABC, Constraints.parse(length="4-6")) == greedy_decode(probs, ABC)


def test_length_longer_than_the_time_steps_is_refused():
    probs = path((0, 0.9), (BLANK, 0.9), (1, 0.9))
    with pytest.raises(ValueError, match="time steps"):
        constrained_decode(probs, ABC, Constraints.parse(length=4))
    with pytest.raises(ValueError, match="time steps"):
        constrained_decode(np.zeros((0, ABC.num_classes)), ABC, Constraints.parse(length="1-2"))


def test_a_repeated_character_needs_a_blank_between():
    probs = path((0, 0.9), (0, 0.6), (0, 0.9))
    probs[1] = [0.6, 0.05, 0.05, 0.3]
    assert greedy_decode(probs, ABC).text == "a"
    reading = constrained_decode(probs, ABC, Constraints(charset="a", min_length=2))
    assert reading.text == "aa"  # a, blank, a
    assert reading.char_confidences == pytest.approx((0.9, 0.9))
    # "aaa" would need five steps: a, blank, a, blank, a
    with pytest.raises(ValueError, match="blank"):
        constrained_decode(probs, ABC, Constraints(charset="a", min_length=3))


@pytest.mark.parametrize("alphabet", [Alphabet("ab"), ABC], ids=["2 chars", "3 chars"])
def test_constrained_decode_matches_brute_force_over_all_frame_paths(alphabet):
    rng = np.random.default_rng(7)
    blank = alphabet.blank_index
    lengths = [(None, None), (0, 0), (1, 1), (2, 3), (3, None), (None, 1), (4, 6), (2, 2)]
    charsets = [None, "a", "b", alphabet.chars[::-1]]
    for time in range(1, 7):
        for sharpness in (1.0, 4.0):
            probs = random_probs(rng, time, alphabet.num_classes, sharpness)
            frame_paths = np.array(list(itertools.product(range(alphabet.num_classes), repeat=time)))
            collapsed = [collapse(p, probs, blank) for p in frame_paths]
            lengths_of = np.array([len(chars) for chars, _ in collapsed])
            for (low, high), charset in itertools.product(lengths, charsets):
                constraints = Constraints(charset, low, high)
                # paths are ranked by the charset's shared-out probabilities; confidences stay the model's own
                with np.errstate(divide="ignore"):  # masked classes: log 0 = -inf, never on a chosen path
                    logp = np.log(probs if charset is None else charset_probabilities(probs, alphabet, charset))
                scores = logp[np.arange(time), frame_paths].sum(axis=1)
                allowed = np.append(np.isin(list(alphabet.chars), list(charset or alphabet.chars)), True)
                fits = allowed[frame_paths].all(axis=1)
                low_, high_ = low, high
                if charset is not None and low is None and high is None:
                    # a charset alone keeps the model's count of characters, when a path over it has that count
                    count = len(greedy_decode(probs, alphabet).text)
                    if (fits & (lengths_of == count)).any():
                        low_ = high_ = count
                fits &= (lengths_of >= (low_ or 0)) & (lengths_of <= (time if high_ is None else high_))
                if not fits.any():
                    with pytest.raises(ValueError):
                        constrained_decode(probs, alphabet, constraints)
                    continue
                best = np.flatnonzero(fits)[scores[fits].argmax()]
                chars, confidences = collapsed[best]
                reading = constrained_decode(probs, alphabet, constraints)
                case = (time, sharpness, low, high, charset)
                assert reading.text == alphabet.decode(chars), case
                assert reading.char_confidences == pytest.approx(confidences), case
                # the length search itself, without the shortcut taken when the per-step best already fits
                masked = np.where(allowed, logp, -np.inf)
                dp_path = _best_path_of_length(masked, low_ or 0, time if high_ is None else high_)
                assert dp_path is not None
                assert masked[np.arange(time), dp_path].sum() == pytest.approx(scores[best]), case
                assert collapse(dp_path, probs, blank)[0] == chars, case


def test_without_constraints_it_is_greedy_decode():
    rng = np.random.default_rng(3)
    for time in (1, 2, 5, 25):
        for _ in range(20):
            probs = random_probs(rng, time, ABC.num_classes).astype(np.float32)
            greedy = greedy_decode(probs, ABC)
            assert constrained_decode(probs, ABC, Constraints()) == greedy
            assert constrained_decode(probs, ABC, Constraints(charset=ABC.chars, min_length=0)) == greedy
            dp_path = _best_path_of_length(np.log(probs.astype(np.float64)), 0, time)
            assert collapse(dp_path, probs, BLANK)[0] == ABC.encode(greedy.text)


def test_constrained_batch_decodes_each_row():
    batch = np.stack([path((0, 0.9), (BLANK, 0.9), (1, 0.9)), steps(ABC, {1: 0.9}, {BLANK: 0.9}, {2: 0.6, BLANK: 0.3})])
    readings = constrained_decode_batch(batch, ABC, Constraints(charset="ab"))
    # second row: the model's 'c' (0.6) is not allowed; its character mass (0.7) beats the blank (0.3) and goes
    # to 'a' and 'b' (0.05 each, a tie that the first class wins)
    assert [r.text for r in readings] == ["ab", "ba"]


def test_charset_keeps_the_models_decision_that_a_character_is_there():
    """A sure reading of a disallowed character: masking alone would let the blank (0.02) win over the allowed
    characters (0.01 each) and drop the slot; sharing out the character mass keeps it."""
    probs = steps(DIGITS_AND_LETTERS, {0: 0.95}, {4: 0.95}, {2: 0.95, 4: 0.02, 1: 0.012}, {4: 0.95})
    assert constrained_decode(probs, DIGITS_AND_LETTERS, Constraints()).text == "1a"
    reading = constrained_decode(probs, DIGITS_AND_LETTERS, Constraints(charset="12b"))
    assert reading.text == "12"
    assert reading.char_confidences == pytest.approx((0.95, 0.012))
    assert constrained_decode(probs, DIGITS_AND_LETTERS, Constraints(charset="12b", max_length=1)).text == "1"


def test_charset_probabilities_keep_the_blank_and_the_character_mass():
    rng = np.random.default_rng(11)
    probs = random_probs(rng, 9, DIGITS_AND_LETTERS.num_classes)
    shared = charset_probabilities(probs, DIGITS_AND_LETTERS, "1b")
    assert np.allclose(shared.sum(axis=1), 1.0)
    assert np.array_equal(shared[:, 4], probs[:, 4])
    assert (shared[:, [1, 2]] == 0).all()
    assert np.allclose(shared[:, 0] / shared[:, 3], probs[:, 0] / probs[:, 3])


@pytest.mark.parametrize(
    "value, expected",
    [(5, (5, 5)), ("5", (5, 5)), ("4-6", (4, 6)), ("4..6", (4, 6)), (" 4 - 6 ", (4, 6)), (0, (0, 0))],
)
def test_parse_length_accepts_exact_lengths_and_ranges(value, expected):
    assert parse_length(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        (-1, "negative"),
        ("-1", "like 5"),
        ("6-4", "minimum 6 is above maximum 4"),
        ("6..4", "minimum 6 is above maximum 4"),
        ("abc", "like 5"),
        ("", "like 5"),
        ("4-", "like 5"),
        ("4-5-6", "like 5"),
        (4.5, "like 5"),
        (True, "like 5"),
    ],
)
def test_parse_length_refuses_bad_input(value, message):
    with pytest.raises(ValueError, match=message):
        parse_length(value)


def test_constraints_refuse_bad_lengths():
    with pytest.raises(ValueError, match="negative"):
        Constraints(min_length=-1)
    with pytest.raises(ValueError, match="above maximum"):
        Constraints(min_length=5, max_length=4)
    with pytest.raises(ValueError, match="integer"):
        Constraints(max_length="5")
    assert Constraints.parse("ab", "4..6") == Constraints("ab", 4, 6)
    assert Constraints.parse() == Constraints()


@pytest.mark.parametrize(
    "charset, message", [("", "empty"), ("aba", "repeated"), ("ax", r"\['x'\] are not in the model's alphabet")]
)
def test_constraints_refuse_a_charset_the_model_cannot_produce(charset, message):
    with pytest.raises(ValueError, match=message):
        Constraints(charset=charset).check(ABC)
    with pytest.raises(ValueError, match=message):
        constrained_decode(path((0, 0.9)), ABC, Constraints(charset=charset))


def test_a_batch_gets_the_same_confidences_as_one_image_at_a_time():
    rng = np.random.default_rng(3)
    batch = np.stack([random_probs(rng, 9, ABC.num_classes, sharpness=3.0) for _ in range(12)])
    batch[4] = path(*[(BLANK, 0.99)] * 9)  # an empty reading among them
    one_by_one = [greedy_decode(p, ABC) for p in batch]
    together = greedy_decode_batch(batch, ABC)
    assert [r.text for r in together] == [r.text for r in one_by_one]
    assert [r.confidence for r in together] == pytest.approx([r.confidence for r in one_by_one])
    assert [r.char_confidences for r in together] == [r.char_confidences for r in one_by_one]


def test_count_probabilities_sum_every_path_by_its_number_of_characters():
    rng = np.random.default_rng(11)
    batch = np.stack([random_probs(rng, 5, ABC.num_classes, sharpness=float(s)) for s in (1, 2, 4)])
    counted = count_probabilities(batch, ABC, most=3)
    assert counted.shape == (3, 5)
    for probs, row in zip(batch, counted):
        expected = np.zeros(5)
        for frame_path in itertools.product(range(ABC.num_classes), repeat=len(probs)):
            chars, _ = collapse(frame_path, probs, BLANK)
            expected[min(len(chars), 4)] += np.prod(probs[np.arange(len(probs)), frame_path])
        assert row == pytest.approx(expected)


def test_a_count_the_model_cannot_settle_has_low_count_confidence():
    settled = path((0, 0.99), (BLANK, 0.99), (1, 0.99), (BLANK, 0.99))
    coin_tosses = path((0, 0.5), (BLANK, 0.5), (1, 0.5), (BLANK, 0.5))  # each step: a character or not
    counted = count_probabilities(np.stack([settled, coin_tosses]), ABC, most=4)
    assert counted[0].argmax() == 2 and counted[0].max() > 0.95
    assert counted[1].max() < 0.5


def test_a_reading_is_never_likelier_than_its_number_of_characters():
    # what lets the service skip the count for readings at one half or more: the count is at least as likely
    rng = np.random.default_rng(5)
    for _ in range(30):
        probs = random_probs(rng, 8, ABC.num_classes, sharpness=float(rng.uniform(1, 5)))
        reading = greedy_decode(probs, ABC)
        counted = count_probabilities(probs[None], ABC, most=8)[0]
        assert counted[len(reading.text)] >= reading.confidence - 1e-12
