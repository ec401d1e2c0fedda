"""The default ``hough`` IS the published computation it builds on: regularised Hough matching (RHM) of Hyperpixel
Flow (Min et al., ICCV 2019), ported here from its public code (juhongm999/hpf, ``model/rhm.py`` and
``model/geometry.py``), step for step and independently of pretrain/matchers/hough.py, and placed on C5 geometry: cells
``stride`` px apart, images of ``cells * stride`` px, no margin pruning (DenseCL needs a positive for every cell).
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.backbone import build_resnet, resnet_stages
from pretrain.matchers import hough


def hpf_receptive_fields(rfsz, jsz, height, width):
    """geometry.receptive_fields: one (x0, y0, x1, y1) box per cell, row-major."""
    rows = torch.arange(height).view(-1, 1).expand(height, width).reshape(-1)
    cols = torch.arange(width).view(1, -1).expand(height, width).reshape(-1)
    box = torch.zeros(height * width, 4)
    box[:, 0] = cols * jsz - rfsz // 2
    box[:, 1] = rows * jsz - rfsz // 2
    box[:, 2] = cols * jsz + rfsz // 2
    box[:, 3] = rows * jsz + rfsz // 2
    return box


def hpf_center(box):
    """geometry.center (integer halving of the box size, as the published code)."""
    return torch.stack((box[:, 0] + (box[:, 2] - box[:, 0]) // 2, box[:, 1] + (box[:, 3] - box[:, 1]) // 2)).t()


def hpf_gaussian2d(side=7):
    """geometry.gaussian2d."""
    sig_sq = (torch.tensor([side, side]).float() / 2 / 2.354).pow(2)
    half = (side - 1) // 2
    x = torch.arange(-half, half + 1).float().unsqueeze(0).expand(side, side)
    y = torch.arange(-half, half + 1).float().unsqueeze(1).expand(side, side)
    g = torch.exp(-(x.pow(2) / 2 / sig_sq[0] + y.pow(2) / 2 / sig_sq[1]))
    return g / g.sum()


def hpf_rhm(src_feats, trg_feats, src_box, trg_box, src_imsize, trg_imsize, ncells=8192):
    """rhm.rhm for one pair of images: features ``[L, C]``, boxes ``[L, 4]``, image sizes (width, height)."""
    sim = (src_feats @ trg_feats.t()) / (src_feats.norm(dim=1).unsqueeze(1) @ trg_feats.norm(dim=1).unsqueeze(0))
    votes = sim.clamp(min=0).pow(3)
    hs_width, hs_height = src_imsize[0] + trg_imsize[0], src_imsize[1] + trg_imsize[1]
    cell = math.sqrt((hs_width * hs_height) / ncells)
    nbins_x, nbins_y = int(hs_width / cell) + 1, int(hs_height / cell) + 1
    ref = torch.tensor(src_imsize, dtype=torch.float)
    src_c, trg_c = hpf_center(src_box), hpf_center(trg_box)
    xy_vote = (ref.unsqueeze(0) - src_c).unsqueeze(2).repeat(1, 1, len(trg_box)) \
        + trg_c.t().unsqueeze(0).repeat(len(src_box), 1, 1)
    ids = (xy_vote / cell).long()
    bin_ids = ids[:, 0, :] + ids[:, 1, :] * nbins_x
    hspace = torch.zeros(nbins_y * nbins_x).index_add(0, bin_ids.reshape(-1), votes.reshape(-1))
    hspace = F.conv2d(hspace.view(1, 1, nbins_y, nbins_x), hpf_gaussian2d(7).view(1, 1, 7, 7), padding=3).view(-1)
    return votes * hspace.index_select(0, bin_ids.reshape(-1)).view_as(votes)


def reference_confidence(fq, fk, stride=32, rfsz=427):
    """The port applied image by image to ``[N, C, H, W]`` maps: ``[N, Lq, Lk]``."""
    out = []
    for q, k in zip(fq, fk):
        (_, hq, wq), (_, hk, wk) = q.shape, k.shape
        out.append(hpf_rhm(q.flatten(1).t(), k.flatten(1).t(), hpf_receptive_fields(rfsz, stride, hq, wq),
                           hpf_receptive_fields(rfsz, stride, hk, wk), (wq * stride, hq * stride),
                           (wk * stride, hk * stride)))
    return torch.stack(out)


GRIDS = [((7, 7), (7, 7)), ((4, 4), (4, 4)), ((5, 7), (5, 7)), ((7, 7), (5, 6)), ((3, 8), (6, 4))]


@pytest.mark.parametrize("grid_q,grid_k", GRIDS)
def test_default_equals_the_hpf_port_on_random_features(grid_q, grid_k):
    g = torch.Generator().manual_seed(sum(grid_q) * 10 + sum(grid_k))
    fq = torch.randn(3, 32, *grid_q, generator=g).relu()   # ReLU features, as C5's
    fk = torch.randn(3, 32, *grid_k, generator=g).relu()
    sim = hough.similarity(fq, fk)
    ours = hough.hough_confidence(sim, grid_q, grid_k)
    theirs = reference_confidence(fq, fk)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert torch.equal(hough.hough_match(fq, fk), theirs.argmax(2))


@pytest.fixture(scope="module")
def photo_features():
    """C5 (and layer3) of a random-init ResNet-18 on two crops of a real photo (matplotlib's sample)."""
    from matplotlib import cbook
    from PIL import Image
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
    img = img.float().div(255).unsqueeze(0)
    torch.manual_seed(0)
    model = build_resnet(18, None).eval()
    views = (img[..., 0:448, 0:448], img[..., 64:512, 40:440])
    views = [F.interpolate(v, size=size, mode="bilinear", align_corners=False)
             for v, size in zip(views, ((224, 224), (192, 160)))]
    with torch.no_grad():
        return [resnet_stages(model, v, ("layer3", "layer4")) for v in views]


@pytest.mark.parametrize("layer,stride", [("layer4", 32), ("layer3", 16)])
def test_default_equals_the_hpf_port_on_photo_features(photo_features, layer, stride):
    fq, fk = photo_features[0][layer], photo_features[1][layer]
    opts = hough.HoughOptions(stride=stride)
    ours = hough.hough_confidence(hough.similarity(fq, fk), fq.shape[-2:], fk.shape[-2:], opts)
    theirs = reference_confidence(fq, fk, stride=stride)
    scale = theirs.abs().max()
    torch.testing.assert_close(ours / scale, theirs / scale, rtol=1e-5, atol=1e-6)
    assert torch.equal(hough.hough_match(fq, fk, opts), theirs.argmax(2))


def test_at_c5_the_reference_kernel_mixes_no_two_offsets():
    """Cells 32 px apart, bins about 5 px: every offset has its own bin, the 7 x 7 kernel (3 bins each side)
    reaches no other, so the reference's support is its raw vote count times the kernel's centre tap."""
    bins, by, bx = hough.rhm_bins((7, 7), (7, 7), hough.slices_for("translation"))
    offsets = hough.vote_bins((7, 7), (7, 7), hough.slices_for("translation"))[0]
    assert len(torch.unique(bins)) == len(torch.unique(offsets)) == 13 * 13
    cells = torch.stack((bins[0] // bx, bins[0] % bx), 1)
    distinct = torch.unique(cells, dim=0)
    gaps = (distinct.unsqueeze(0) - distinct.unsqueeze(1)).abs().amax(-1)
    assert int(gaps[gaps > 0].min()) > len(hough.rhm_taps()) // 2   # 6 bins or more against a radius of 3
    sim = torch.rand(2, 49, 49) * 2 - 1
    plain = hough.hough_confidence(sim, (7, 7), (7, 7), hough.HoughOptions(bins="cell"))
    centre = hough.rhm_taps()[3] ** 2
    torch.testing.assert_close(hough.hough_confidence(sim, (7, 7), (7, 7)), plain * centre, rtol=1e-5, atol=1e-7)


def test_defaults_are_the_reference_and_every_departure_is_named():
    opts = hough.HoughOptions()
    assert (opts.space, opts.center, opts.vote, opts.power, opts.bins, opts.sigma, opts.combine) == \
        ("translation", False, "power", 3.0, "rhm", 0.0, "sum")
    assert hough.describe_options(opts) == "reference (RHM at C5)"
    flip = hough.HoughOptions(space="flip", center=True)
    assert hough.describe_options(flip) == "toolkit options, not in the reference: SPACE flip, CENTER True"
    with pytest.raises(ValueError, match="MODEL.HOUGH.SIGMA"):
        hough.HoughOptions(sigma=1.0)
    assert hough.HoughOptions(bins="cell", sigma=1.0).departures() == ("BINS cell", "SIGMA 1.0")
