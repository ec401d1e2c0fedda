"""pretrain/data/device_views.py against the Pillow pipeline of pretrain/data/transforms.py: the same parameters for
the same
(seed, epoch, index), pixels within stated tolerances, each batched adjustment against torchvision's, geometry
that the pixels obey (the oracle's partners show the same image point), and pretraining through it."""
import dataclasses
import json
import os
import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from pretrain.data.device_views import DecodedDataset, DeviceViews, adjust, gaussian_blur, pack
from pretrain.data.geometry import cell_centres
from pretrain.data.images import TwoViewDataset
from pretrain.data.transforms import TwoViewTransform, draw_view_params
from pretrain.matchers import MATCHERS

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # views in [0, 1]: errors read as fractions of the 8-bit range


def both(folder, size=64, seed=5):
    transform = TwoViewTransform(size, mean=MEAN, std=STD)
    return (TwoViewDataset(folder, transform, seed=seed), DecodedDataset(folder, transform, seed=seed),
            DeviceViews(size, MEAN, STD))


def render(decoded, views, keys):
    batch = DecodedDataset.collate([decoded[k] for k in keys])
    return batch, views(batch)


def test_the_same_sample_has_the_same_boxes_and_flips_in_both_pipelines(image_folder):
    pillow, decoded, views = both(image_folder)
    keys = [(i, epoch) for epoch in range(3) for i in range(len(pillow))]
    batch, out = render(decoded, views, keys)
    for side in "qk":
        assert torch.equal(out[f"box_{side}"], torch.stack([pillow[k][f"box_{side}"] for k in keys]))
        assert torch.equal(out[f"flip_{side}"], torch.stack([pillow[k][f"flip_{side}"] for k in keys]))
    assert torch.equal(batch["image_size"], torch.stack([pillow[k]["image_size"] for k in keys]))


def test_views_agree_with_pillows_within_the_stated_tolerances(image_folder):
    """Over 144 drawn views: the views' means and contrast (std) agree to 0.01 of the range, exactly the views
    drawn grey are grey, and the views drawn blurred compare in sharpness with the others alike in both."""
    pillow, decoded, views = both(image_folder)
    keys = [(i, epoch) for epoch in range(6) for i in range(len(pillow))]
    batch, out = render(decoded, views, keys)
    for side in "qk":
        ours = out[f"view_{side}"]
        theirs = torch.stack([pillow[k][f"view_{side}"] for k in keys])
        grey_drawn = batch[f"params_{side}"][:, 9] > 0
        assert abs(ours.mean() - theirs.mean()) < 0.01
        assert abs(ours.std(dim=(1, 2, 3)).mean() - theirs.std(dim=(1, 2, 3)).mean()) < 0.01
        is_grey = lambda x: (x[:, 0] - x[:, 1]).abs().amax(dim=(1, 2)) < 1e-5  # noqa: E731
        assert torch.equal(is_grey(ours), grey_drawn) and torch.equal(is_grey(theirs), grey_drawn)
        assert 0 < grey_drawn.sum() < len(keys)
        # blur: the views drawn blurred stand to the others in sharpness (mean absolute gradient) alike in both
        blurred = batch[f"params_{side}"][:, 10] > 0
        sharpness = lambda x: (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))  # noqa: E731
        ratio = [sharpness(x)[blurred].mean() / sharpness(x)[~blurred].mean() for x in (ours, theirs)]
        assert 0 < blurred.sum() < len(keys) and abs(ratio[0] - ratio[1]) < 0.05, ratio


@pytest.mark.parametrize("variant,tolerance", [("plain", 0.005), ("grey", 0.005), ("blur", 0.005),
                                               ("jitter", 0.012), ("all", 0.012)])
def test_each_step_renders_pillows_view_to_a_stated_tolerance(image_folder, variant, tolerance):
    """The same parameters rendered by both: mean absolute difference per view, as a fraction of the 8-bit
    range (Pillow rounds to 8 bits after every step and resamples with its triangle filter)."""
    transform, views = TwoViewTransform(64, mean=MEAN, std=STD), DeviceViews(64, MEAN, STD)
    for i, path in enumerate(sorted(os.listdir(image_folder))):
        img = Image.open(os.path.join(image_folder, path)).convert("RGB")
        rng = random.Random(i)
        for _ in range(4):
            p = draw_view_params(img.width, img.height, rng)
            fixed = [(0, 1.3), (1, 0.7), (2, 1.2), (3, 0.05)]  # every step present, whatever was drawn
            p = dataclasses.replace(p, jitter=p.jitter or fixed, blur=p.blur or 1.0)
            p = {"plain": dataclasses.replace(p, jitter=None, grayscale=False, blur=None),
                 "grey": dataclasses.replace(p, jitter=None, grayscale=True, blur=None),
                 "blur": dataclasses.replace(p, jitter=None, grayscale=False),
                 "jitter": dataclasses.replace(p, grayscale=False, blur=None), "all": p}[variant]
            ours = views.render(torch.from_numpy(np.array(img)).permute(2, 0, 1)[None],
                                torch.tensor([p.box], dtype=torch.float32), pack(p)[None])[0]
            assert (ours - transform.render(img, p)).abs().mean() < tolerance, (path, p)


@pytest.mark.parametrize("kind,function,factors", [
    (0, TF.adjust_brightness, [0.6, 1.0, 1.4]), (1, TF.adjust_contrast, [0.6, 1.2, 1.4]),
    (2, TF.adjust_saturation, [0.6, 0.9, 1.4]), (3, TF.adjust_hue, [-0.1, 0.03, 0.1])])
def test_each_adjustment_with_one_factor_per_image_is_torchvisions(kind, function, factors):
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(kind))
    ours = adjust(x, kind, torch.tensor(factors))
    for i, factor in enumerate(factors):  # luma: Pillow's 0.299 red weight, torchvision's tensor path 0.2989
        torch.testing.assert_close(ours[i], function(x[i], factor), rtol=1e-4, atol=1e-4)


def test_blur_with_one_sigma_per_image_is_torchvisions_away_from_the_edges():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sigmas = [0.3, 1.7]
    ours = gaussian_blur(x, torch.tensor(sigmas))
    for i, sigma in enumerate(sigmas):  # torchvision reflects at the edges, Pillow and we repeat the edge
        theirs = TF.gaussian_blur(x[i], kernel_size=13, sigma=sigma)
        torch.testing.assert_close(ours[i, :, 6:-6, 6:-6], theirs[:, 6:-6, 6:-6], rtol=1e-5, atol=1e-5)


def test_the_pixels_obey_the_geometry_the_oracle_reads(tmp_path):
    """An image whose red and green channels spell its own x and y: in a view without colour changes the
    pixel at each cell centre shows the image point cell_centres says it shows, and the oracle's key partner of
    a query cell shows nearly the same point."""
    ys, xs = np.mgrid[0:200, 0:250]
    Image.fromarray(np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)).save(tmp_path / "coords.png")
    transform = TwoViewTransform(56, scale=(0.2, 1.0), mean=MEAN, std=STD)
    decoded = DecodedDataset(str(tmp_path), transform, seed=0, check=False)
    batch = DecodedDataset.collate([decoded[(0, epoch)] for epoch in range(40)])
    for key in ("params_q", "params_k"):
        batch[key][:, 0] = batch[key][:, 9] = batch[key][:, 10] = 0  # no jitter, grey or blur: pure geometry
    out = DeviceViews(56, MEAN, STD)(batch)
    grid = (7, 7)
    for side in "qk":
        centres = cell_centres(out[f"box_{side}"], out[f"flip_{side}"], grid)  # (N, 49, 2) image pixels
        view = out[f"view_{side}"][:, :2] * 255
        # a cell's centre lies between its pixels 3 and 4 (of 8): their mean is the image point seen there
        middle = (view[:, :, 3::8] + view[:, :, 4::8]) / 2
        middle = (middle[..., 3::8] + middle[..., 4::8]) / 2
        cells = middle.flatten(2).transpose(1, 2)
        assert (cells - (centres - 0.5)).abs().max() < 0.5  # the pixel value is its centre's index
    positives = MATCHERS["geometric"](torch.zeros(40, 1, *grid), torch.zeros(40, 1, *grid), out)
    has = positives.index >= 0
    q_points = cell_centres(out["box_q"], out["flip_q"], grid)
    k_points = cell_centres(out["box_k"], out["flip_k"], grid)
    partner = torch.gather(k_points, 1, positives.index.clamp(min=0)[..., None].expand(-1, -1, 2))
    cell_size = (out["box_k"][:, 2:] - out["box_k"][:, :2]) / 7
    assert has.sum() > 200
    assert ((partner - q_points).abs() <= cell_size[:, None] / 2 + 1e-3)[has].all()


@pytest.mark.slow
def test_pretraining_through_the_device_pipeline(image_folder, tmp_path, run_script):
    """The same run with the views made on the device: every loss finite and within 10% of the Pillow run's."""
    losses = {}
    for views in ("cpu", "device"):
        result = run_script("pretrain_net.py", "--config-file", "configs/pretrain/tiny_r18_cpu.yaml", "DATA.ROOT",
                            image_folder, "SOLVER.MAX_ITER", 4, "DATALOADER.NUM_WORKERS", 1, "DATALOADER.VIEWS",
                            views, "SEED", 1, "OUTPUT_DIR", tmp_path / views)
        assert result.returncode == 0, result.stderr[-2000:]
        with open(os.path.join(tmp_path / views, "metrics.jsonl")) as f:
            losses[views] = [json.loads(line)["total_loss"] for line in f if "total_loss" in line]
    assert len(losses["device"]) == len(losses["cpu"]) == 4
    assert np.allclose(losses["device"], losses["cpu"], rtol=0.1), losses


def test_the_view_pipeline_is_a_checked_config_choice(image_folder):
    from pretrain.config import ConfigError, load_config
    config = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs", "pretrain", "tiny_r18_cpu.yaml")
    with pytest.raises(ConfigError, match=r"DATALOADER.VIEWS = 'gpu' is not one of \('cpu', 'device'\)"):
        load_config(config, ["DATA.ROOT", image_folder, "DATALOADER.VIEWS", "gpu"])
