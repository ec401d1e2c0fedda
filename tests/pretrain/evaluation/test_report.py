"""pretrain/evaluation/report.py: the ablation's variants are the registry's options with one change each."""
from pretrain.config import load_config
from pretrain.evaluation.accuracy import ABLATION
from pretrain.evaluation.report import ablation_markdown, ablation_rows, ablation_variants
from pretrain.matchers import options_from_cfg


def test_every_ablation_row_changes_exactly_its_overrides():
    variants, overrides = ablation_variants("", [])
    assert list(variants)[:len(ABLATION)] == list(ABLATION) and {"argmax", "threshold", "geometric"} <= set(variants)
    for name, (matcher, extra) in ABLATION.items():
        assert overrides[name] == extra
        expected = options_from_cfg(load_config("", extra).MODEL, matcher)
        assert variants[name] == (matcher, expected)
    default = variants["hough, reference (RHM at C5; default)"][1]
    assert default == options_from_cfg(load_config("", []).MODEL, "hough") and default.departures() == ()
    # Every other `hough` row departs from the reference in exactly the options it names.
    for name, (matcher, extra) in ABLATION.items():
        if matcher == "hough" and extra:
            assert variants[name][1].departures() and "(toolkit)" in name


def test_the_table_shows_each_row_with_its_overrides():
    variants = {"a": ("hough", None), "b": ("hough_transform", None)}
    overrides = {"a": [], "b": ["MODEL.HOUGH_TRANSFORM.OUTSIDE", "none"]}
    stats = {"a": {}, "b": {"outside_share": 0.25}}
    result = {"exact": {n: {"all": 0.5} for n in variants}, "within_one": {n: {"all": 0.75} for n in variants},
              "error": {"a": {"all": {"median": 0.5, "mean": 0.6}}, "b": {"all": None}}, "matcher_stats": stats,
              "counts": {"grid": [7, 7], "pairs": 4, "query_cells_with_partner": 90}, "settings": {"depth": 18}}
    table = ablation_markdown(ablation_rows(result, variants, overrides), result, None, "cmd").splitlines()
    assert table[0].startswith("ResNet-18, random init, C5 (7 x 7), 4 view pairs, 90 query cells")
    assert table[0].endswith("`cmd`")
    assert table[4] == "| a | 0.500 | 0.750 | 0.50 | 0.60 | - | (nothing) |"
    assert table[5] == "| b | 0.500 | 0.750 | nan | nan | 0.250 | MODEL.HOUGH_TRANSFORM.OUTSIDE none |"
