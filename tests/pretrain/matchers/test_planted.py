"""Planted scenes (pretrain/matchers/planted.py) tell argmax, the reference `hough` and its toolkit options apart, and
the
reference recovers the exact mapping where the scene's geometry determines it."""
import dataclasses

import torch

from pretrain.data.geometry import true_partners
from pretrain.matchers import argmax_match, planted
from pretrain.matchers.hough import HoughOptions, hough_match


def test_pure_repeats_shifted_by_whole_cells_only_geometry_can_resolve():
    # Cells are exactly one patch and every patch is one of 4 prototypes, with no component of its own and no
    # noise: by looks, every key cell of the same prototype is a perfect match. The crops are shifted by whole
    # cells, so all true pairs vote for one offset: the reference must recover every true partner.
    setting = planted.SceneSetting(prototypes=4, uniqueness=0.0, noise=0.0, scene=320, patch=32, grid=7)
    g = torch.Generator().manual_seed(3)
    scene = planted.make_scene(setting, g)
    box_q, box_k = torch.tensor([[0.0, 32.0, 224.0, 256.0]]), torch.tensor([[64.0, 0.0, 288.0, 224.0]])
    no = torch.tensor([False])
    fq = planted.view_cells(scene, box_q[0], False, setting, g).unsqueeze(0)
    fk = planted.view_cells(scene, box_k[0], False, setting, g).unsqueeze(0)
    truth = true_partners(box_q, no, (7, 7), box_k, no, (7, 7))
    has = truth >= 0
    assert int(has.sum()) == 5 * 6          # 5 columns x 6 rows overlap
    assert torch.equal(hough_match(fq, fk)[has], truth[has])
    assert planted.exact_accuracy(argmax_match(fq, fk), truth, 7) < 0.5


def accuracies(setting, pairs=60, seed=1):
    data = planted.planted_pairs(setting, pairs, seed)
    out = {}
    for name in ("argmax", "reference", "flip"):
        opts = {"reference": HoughOptions(), "flip": HoughOptions(space="flip")}.get(name)
        pred = argmax_match(data["fq"], data["fk"]) if opts is None else hough_match(data["fq"], data["fk"], opts)
        out[name] = {"all": planted.exact_accuracy(pred, data["truth"], 7)}
        if setting.flips:
            for part, mask in (("same", ~data["mirrored"]), ("mirrored", data["mirrored"])):
                out[name][part] = planted.exact_accuracy(pred[mask], data["truth"][mask], 7)
    return out


def test_reference_beats_argmax_among_repeats_and_the_flip_slice_recovers_mirrored_pairs():
    shifted = accuracies(planted.SETTINGS["shifted crops"])
    assert shifted["reference"]["all"] > shifted["argmax"]["all"] + 0.25
    crops = accuracies(planted.SETTINGS["random resized crops + flips"])
    # Same orientation: the translation space sees the consistent pairs.
    assert crops["reference"]["same"] > crops["argmax"]["same"] + 0.15
    # Mirrored: no translation is consistent, the reference is no better than argmax; the mirrored slice is.
    assert abs(crops["reference"]["mirrored"] - crops["argmax"]["mirrored"]) < 0.1
    assert crops["flip"]["mirrored"] > crops["reference"]["mirrored"] + 0.15


def test_pairs_are_seeded_and_the_truth_follows_the_flips():
    setting = dataclasses.replace(planted.SETTINGS["random resized crops + flips"], channels=8)
    a, b = planted.planted_pairs(setting, 6, 5), planted.planted_pairs(setting, 6, 5)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["fq"], planted.planted_pairs(setting, 6, 6)["fq"])
    assert a["truth"].shape == (6, 49) and a["fq"].shape == (6, 8, 7, 7)
