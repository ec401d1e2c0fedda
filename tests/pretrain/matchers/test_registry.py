"""The matcher registry (pretrain/matchers/__init__.py): every name reachable from config, model, evaluation and tools,
each matcher with its own options, and labels that say which method is the paper's and which is an extension."""
import dataclasses

import pytest
import torch

from pretrain import matchers as matching
from pretrain.builder import describe
from pretrain.config import ConfigError, get_cfg, load_config
from pretrain.matchers.hough import HoughOptions
from pretrain.matchers.hough_transform import TransformOptions


def test_hough_is_the_papers_matcher_by_default_and_the_extension_has_its_own_name():
    cfg = get_cfg()
    assert cfg.MODEL.MATCHER == "hough"
    assert matching.get_matcher("hough").options is HoughOptions
    assert matching.get_matcher("hough_transform").options is TransformOptions
    # Nothing inside MODEL.HOUGH switches to another way of choosing positives.
    assert set(cfg.MODEL.HOUGH) == {f.name.upper() for f in dataclasses.fields(HoughOptions)}
    assert not {"SELECT", "LAYER", "CANDIDATES", "REFINE", "QUERY_POOL"} & set(cfg.MODEL.HOUGH)
    assert matching.describe_matcher("hough").startswith("HoughCL") and "extension" not in matching.describe_matcher(
        "hough")
    assert "extension" in matching.describe_matcher("hough_transform")
    assert "not in the paper" in describe(load_config("", ["MODEL.MATCHER", "hough_transform"]))
    # The default run says it is the reference; a run with a toolkit option names it as such.
    assert describe(get_cfg()) == "HoughCL (per-pair Hough confidence), reference (RHM at C5), lambda 0.5"
    centred = load_config("", ["MODEL.HOUGH.CENTER", "True"])
    assert "toolkit options, not in the reference: CENTER True" in describe(centred)


def test_every_matcher_owns_a_config_node_built_from_its_options_defaults():
    cfg = get_cfg()
    for name in matching.list_matchers():
        m = matching.get_matcher(name)
        if m.options is None:
            assert m.config_key not in cfg.MODEL
            continue
        assert matching.options_from_cfg(cfg.MODEL, name) == m.options()
    # An override reaches the options object; a YAML list becomes the tuple the dataclass holds.
    cfg = load_config("", ["MODEL.HOUGH.BINS", "cell", "MODEL.HOUGH.SIGMA", "0.5", "MODEL.HOUGH_TRANSFORM.REFINE",
                           "(2.0,)", "MODEL.THRESHOLD.RATIO", "0.9"])
    assert matching.options_from_cfg(cfg.MODEL, "hough").sigma == 0.5
    assert matching.options_from_cfg(cfg.MODEL, "hough_transform").refine == (2.0,)
    assert matching.options_from_cfg(cfg.MODEL, "threshold").ratio == 0.9


def test_choices_and_unknown_names_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match="MODEL.HOUGH_TRANSFORM.OUTSIDE"):
        load_config("", ["MODEL.HOUGH_TRANSFORM.OUTSIDE", "nearest"])
    with pytest.raises(ConfigError, match="MODEL.HOUGH.SPACE"):
        load_config("", ["MODEL.HOUGH.SPACE", "affine"])
    with pytest.raises(ConfigError, match="MODEL.MATCHER"):
        load_config("", ["MODEL.MATCHER", "nope"])
    # An inconsistent pair of options of any matcher (the diagnostics build them all) is one line at load time.
    with pytest.raises(ConfigError, match="MODEL.HOUGH.SIGMA = 1.0 smooths one-cell bins only"):
        load_config("", ["MODEL.MATCHER", "argmax", "MODEL.HOUGH.SIGMA", "1.0"])
    with pytest.raises(KeyError, match="registered: argmax, hough"):
        matching.get_matcher("nope")


def test_views_too_small_for_the_extension_are_refused_before_training():
    with pytest.raises(ConfigError, match="INPUT.SIZE 64: .* 4 voters per side"):
        load_config("", ["MODEL.MATCHER", "hough_transform", "INPUT.SIZE", 64])
    load_config("", ["MODEL.MATCHER", "hough_transform", "INPUT.SIZE", 64, "MODEL.HOUGH_TRANSFORM.QUERY_POOL", 1])
    load_config("", ["MODEL.MATCHER", "hough", "INPUT.SIZE", 64])  # the paper's matcher has no such limit


def test_a_new_matcher_is_available_to_evaluation_without_other_edits(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class NearestOptions:
        offset: int = 0

    def nearest(fq, fk, views, options):
        cells = fk.shape[-1] * fk.shape[-2]
        return matching.Positives(index=(matching.argmax_match(fq, fk) + options.offset) % cells)

    from pretrain.evaluation import accuracy as matching_eval
    monkeypatch.setitem(matching.MATCHERS, "nearest", None)  # removed again after the test
    matching.register("nearest", "test matcher", NearestOptions)(nearest)
    assert "nearest" in matching.list_matchers(from_geometry=False)
    assert "nearest" in matching_eval.registered_variants()
    fq, fk = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    picks = matching_eval.pick_all(fq, fk, {}, {"nearest": ("nearest", NearestOptions(offset=1))})
    assert torch.equal(picks["nearest"].index, (matching.argmax_match(fq, fk) + 1) % 16)


def test_the_extension_reports_where_cells_leave_the_key_view_and_can_leave_them_out():
    # Key view = the right half of the query view: the query's left half has no place under the transformation.
    g = torch.Generator().manual_seed(0)
    fq = torch.randn(1, 32, 16, 16, generator=g)
    fk = fq[..., 8:].repeat_interleave(2, dim=-1)     # the right half, stretched to the full width
    opts = TransformOptions(layer="layer4", query_pool=1)
    kept = matching.MATCHERS["hough_transform"](fq, fk, {}, opts)
    dropped = matching.MATCHERS["hough_transform"](fq, fk, {}, dataclasses.replace(opts, outside="none"))
    share = float(kept.stats["outside_share"])
    assert share == pytest.approx(0.5, abs=0.07)
    assert float((dropped.index < 0).float().mean()) == pytest.approx(share)
    assert (kept.index >= 0).all()
    assert torch.equal(dropped.valid(), dropped.index >= 0)


def test_grids_too_small_to_match_are_refused_and_coarse_ones_named():
    from pretrain.config import grid_note
    with pytest.raises(ConfigError, match="INPUT.SIZE 30 gives a 1 x 1 C5 grid"):
        load_config("", ["INPUT.SIZE", 30])
    load_config("", ["INPUT.SIZE", 30, "MODEL.LOSS_LAMBDA", 0.0])  # MoCo-v2 has no dense matching
    assert "2 x 2 C5 grid" in grid_note(load_config("", ["INPUT.SIZE", 64]))
    assert grid_note(load_config("", ["INPUT.SIZE", 224])) == ""
