"""Augmentation takes a grey image or its three-channel copy alike."""
import numpy as np

from covidspark.finetune.augment import augment
from covidspark.finetune.recipe import Recipe


def test_grey_and_three_channel_inputs_are_augmented_alike():
    gray = np.random.default_rng(0).uniform(0, 255, (48, 48)).astype(np.float32)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    recipe = Recipe()
    from_gray = augment(gray, recipe, np.random.default_rng(7))
    from_rgb = augment(rgb, recipe, np.random.default_rng(7))
    assert from_gray.shape == (48, 48) and from_rgb.shape == (48, 48, 3)
    assert from_gray.dtype == from_rgb.dtype == np.float32
    np.testing.assert_array_equal(from_rgb, np.repeat(from_gray[:, :, None], 3, axis=2))
    # It did transform the image (a no-op would pass the line above too).
    assert np.abs(from_gray - gray).mean() > 1.0
