"""pretrain/data/transforms.py: views that carry their geometry, drawn only from the generator they are given."""
import random

import numpy as np
import torch
from PIL import Image

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD
from pretrain.data.transforms import TwoViewTransform, random_resized_crop_box


def test_crop_boxes_follow_torchvisions_area_and_aspect_limits():
    rng = random.Random(0)
    for _ in range(500):
        width, height = rng.randint(40, 400), rng.randint(40, 400)
        x0, y0, x1, y1 = random_resized_crop_box(width, height, rng)
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        w, h = x1 - x0, y1 - y0
        fallback = (w, h) in {(width, height), (width, round(width * 4 / 3)), (round(height * 4 / 3), height)}
        assert fallback or (0.2 * 0.9 <= w * h / (width * height) <= 1.0 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1)


def test_the_view_is_flipped_as_recorded_and_repeats_from_the_same_generator_state():
    # A horizontal ramp: resizing keeps it a ramp, so the view's left and right ends say where the box lay.
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.float32), (120, 1))
    image = Image.fromarray(np.stack([ramp] * 3, -1).astype("uint8"))
    transform = TwoViewTransform(32, mean=(0, 0, 0), std=(1, 1, 1))
    rng = random.Random(3)
    for _ in range(40):
        state = rng.getstate()
        sample = transform(image, rng)
        rng.setstate(state)
        again = transform(image, rng)  # the same generator state gives the same views
        assert all(torch.equal(sample[k], again[k]) for k in sample)
        flip, view = bool(sample["flip_q"]), sample["view_q"]
        # A grey ramp stays a rising ramp under jitter (contrast >= 0.6, hue and saturation act on no colour),
        # greying and blur: only the flip turns it round.
        left, right = view[0, :, :3].mean(), view[0, :, -3:].mean()
        assert (left > right) == flip or abs(float(left - right)) < 0.05


def test_normalisation_uses_the_imagenet_statistics():
    image = Image.new("RGB", (64, 64), (128, 64, 32))
    rng = random.Random(0)
    # Constant colour: a crop and a resize change nothing; jitter, grey and blur may, so find a view without.
    transform = TwoViewTransform(16)
    expected = (torch.tensor([128, 64, 32]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    seen = 0
    for _ in range(50):
        view = transform(image, rng)["view_q"]
        if torch.allclose(view.mean((1, 2)), expected, atol=1e-5):
            seen += 1
    assert seen >= 5  # about one view in ten is neither jittered, grey nor blurred-with-change
