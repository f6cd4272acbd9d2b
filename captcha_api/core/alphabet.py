"""Character sets and the mapping between text and CTC class indices."""

from __future__ import annotations

from dataclasses import dataclass

FSSP_ALPHABET = "2456789бвгджклмнпрст"
FSSP_MIN_LENGTH = 4
FSSP_MAX_LENGTH = 7
PAD = -1  # pads label rows to a fixed width in training batches; never a class index


@dataclass(frozen=True)
class Alphabet:
    """An ordered character set; class i is chars[i] and the CTC blank is the last class."""

    chars: str

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("alphabet is empty")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"alphabet has repeated characters: {self.chars!r}")

    @property
    def blank_index(self) -> int:
        return len(self.chars)

    @property
    def num_classes(self) -> int:
        """Characters plus the blank."""
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        try:
            return [self.chars.index(c) for c in text]
        except ValueError:
            bad = sorted(set(text) - set(self.chars))
            raise ValueError(f"characters {bad} are not in the alphabet {self.chars!r}") from None

    def decode(self, indices) -> str:
        return "".join(self.chars[i] for i in indices)

    def covers(self, text: str) -> bool:
        return set(text) <= set(self.chars)


FSSP = Alphabet(FSSP_ALPHABET)
