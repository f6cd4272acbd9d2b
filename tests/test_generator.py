import csv
import json
from collections import Counter

import numpy as np

from captcha_api.core.alphabet import FSSP
from captcha_api.training.generator import LENGTH_WEIGHTS, generate, random_text, sample


def test_same_seed_same_image_and_text():
    first, text1 = sample(seed=3, index=17)
    second, text2 = sample(seed=3, index=17)
    assert text1 == text2
    assert np.array_equal(np.asarray(first), np.asarray(second))


def test_other_seed_other_captcha():
    assert sample(seed=3, index=0)[1] != sample(seed=4, index=0)[1] or not np.array_equal(
        np.asarray(sample(seed=3, index=0)[0]), np.asarray(sample(seed=4, index=0)[0])
    )


def test_images_are_fssp_sized_rgb():
    image, text = sample(seed=0, index=1)
    assert image.size == (200, 60) and image.mode == "RGB"
    assert FSSP.covers(text) and 4 <= len(text) <= 7


def test_lengths_follow_real_proportions():
    from captcha_api.training.generator import GeneratorConfig

    rng = np.random.default_rng(0)
    counts = Counter(len(random_text(rng, GeneratorConfig())) for _ in range(4000))
    for length, share in LENGTH_WEIGHTS.items():
        assert abs(counts[length] / 4000 - share) < 0.03


def test_ink_is_dark_blue_on_light_paper():
    image, _ = sample(seed=0, index=2)
    pixels = np.asarray(image, dtype=np.float32).reshape(-1, 3)
    paper = np.median(pixels, axis=0)
    assert paper.min() > 200
    ink = pixels[pixels.sum(axis=1) < 250]
    assert len(ink) > 100
    assert (ink[:, 2] > ink[:, 0]).mean() > 0.9  # blue over red


def test_generate_writes_images_and_labels(tmp_path):
    generate(tmp_path, 12, seed=5, workers=1)
    with open(tmp_path / "labels.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12
    assert all((tmp_path / row["filename"]).is_file() and FSSP.covers(row["text"]) for row in rows)
    assert rows[3]["text"] == sample(seed=5, index=3)[1]
    recipe = json.loads((tmp_path / "generator.json").read_text())
    assert (recipe["seed"], recipe["count"]) == (5, 12) and recipe["fonts"]
