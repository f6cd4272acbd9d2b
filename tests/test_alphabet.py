import pytest

from captcha_api.core.alphabet import FSSP, Alphabet


def test_fssp_alphabet_has_no_three_and_blank_last():
    assert FSSP.chars == "2456789бвгджклмнпрст"
    assert "3" not in FSSP.chars
    assert FSSP.blank_index == 20
    assert FSSP.num_classes == 21


def test_encode_decode_round_trip():
    assert FSSP.decode(FSSP.encode("д2бб5")) == "д2бб5"


def test_encode_rejects_foreign_characters():
    with pytest.raises(ValueError, match="not in the alphabet"):
        FSSP.encode("д3")


@pytest.mark.parametrize("chars", ["", "aa"])
def test_bad_alphabets(chars):
    with pytest.raises(ValueError):
        Alphabet(chars)
