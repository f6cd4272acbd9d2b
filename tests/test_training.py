"""Pure pieces of the training loop."""

import numpy as np
import pytest

pytest.importorskip("keras", reason="training dependencies (requirements-train.txt) are not installed")

from captcha_api.core.alphabet import PAD  # noqa: E402
from captcha_api.training.data import LabelledFolder, augment, split_holdout  # noqa: E402
from captcha_api.training.train import (  # noqa: E402
    PLATEAU,
    TrainConfig,
    cosine_lr,
    has_doubled,
    plateau_lr,
    selection_score,
)


def test_selection_prefers_real_then_generated_exact_then_low_loss():
    history = [
        {"epoch": 1, "val_exact": 0.975, "syn_exact": 0.999, "val_loss": 0.1},
        {"epoch": 2, "val_exact": 0.9875, "syn_exact": 0.97, "val_loss": 0.2},
        {"epoch": 3, "val_exact": 0.9875, "syn_exact": 0.99, "val_loss": 0.3},
        {"epoch": 4, "val_exact": 0.9875, "syn_exact": 0.99, "val_loss": 0.25},
    ]
    assert max(history, key=selection_score)["epoch"] == 4


def test_cosine_schedule_warms_up_then_decays():
    config = TrainConfig(learning_rate=1e-3, epochs=20)
    rates = [cosine_lr(epoch, config) for epoch in range(20)]
    assert rates[0] < rates[1] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))
    assert rates[-1] >= 1e-5


def test_holdout_is_seeded_and_disjoint(tmp_path):
    from pathlib import Path

    folder = LabelledFolder(tmp_path, [Path(f"{i:03d}.png") for i in range(50)], [str(i) for i in range(50)])
    train, held = split_holdout(folder, 10, seed=0)
    again_train, again_held = split_holdout(folder, 10, seed=0)
    assert [f.name for f in held.files] == [f.name for f in again_held.files]
    assert len(held) == 10 and len(train) == 40
    assert not {f.name for f in held.files} & {f.name for f in train.files}
    assert [f.name for f in split_holdout(folder, 10, seed=1)[1].files] != [f.name for f in held.files]


def test_augment_keeps_shape_range_and_is_seeded():
    images = (np.random.default_rng(0).random((4, 200, 60, 1)) * 255).astype(np.uint8)
    first = augment(images, np.random.default_rng(5), 1.0)
    second = augment(images, np.random.default_rng(5), 1.0)
    assert first.shape == images.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert np.array_equal(first, second)
    assert np.array_equal(augment(images, np.random.default_rng(5), 0.0), images / np.float32(255))


def test_open_ended_training_halves_the_rate_on_each_plateau():
    config = TrainConfig(learning_rate=1e-3, epochs=None)
    figures = [0.5, 0.8, 0.9, 0.9, 0.9, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]
    state = {"history": [{"epoch": i + 1, "val_exact": v, "val_loss": 1.0} for i, v in enumerate(figures)]}
    rates = [plateau_lr(epoch, state, config) for epoch in range(len(figures) + 1)]
    assert rates[0] == pytest.approx(3e-4) and rates[1] == pytest.approx(1e-3)
    # best at epoch 3; epochs 4-6 do not improve: halved after the third of them
    assert rates[3:6] == [pytest.approx(1e-3)] * 3 and rates[6] == pytest.approx(5e-4)
    # a new best at epoch 7 keeps the rate; PLATEAU more epochs without one halve it again
    assert rates[7] == pytest.approx(5e-4) and rates[7 + PLATEAU] == pytest.approx(2.5e-4)
    assert rates[7 + 2 * PLATEAU] == pytest.approx(1.25e-4)


def test_doubled_characters_are_found_in_encoded_labels():
    assert has_doubled(np.array([3, 4, 4, 1, PAD, PAD]))
    assert not has_doubled(np.array([3, 4, 3, 4, 1, PAD]))
    assert not has_doubled(np.array([PAD, PAD, PAD]))


def test_grabbed_share_degrades_that_many_images_each_a_known_way():
    from captcha_api.training.data import GRAB_KINDS, grab

    images = np.full((40, 200, 60, 1), 255, np.uint8)
    images[:, 60:140, 20:40] = 0  # a black bar on white: every degradation changes its edges
    untouched = augment(images, np.random.default_rng(1), 0.0, 0.0)
    grabbed = augment(images, np.random.default_rng(1), 0.0, 0.5)
    changed = [not np.array_equal(a, b) for a, b in zip(untouched, grabbed)]
    assert 10 <= sum(changed) <= 30
    assert grabbed.dtype == np.float32 and 0.0 <= grabbed.min() and grabbed.max() <= 1.0
    assert np.array_equal(grabbed, augment(images, np.random.default_rng(1), 0.0, 0.5))
    assert np.array_equal(untouched, images / np.float32(255))
    # every kind changes the image, keeps its shape and range; a thumbnail or blur softens the bar's edges
    rng = np.random.default_rng(2)
    for kind in GRAB_KINDS:
        out = grab(untouched[0], rng, kind)
        assert out.shape == untouched[0].shape and 0.0 <= out.min() and out.max() <= 1.0
        assert not np.array_equal(out, untouched[0]), kind
        if kind in ("thumbnail", "blur"):
            assert ((out > 0.1) & (out < 0.9)).sum() > 50, kind
