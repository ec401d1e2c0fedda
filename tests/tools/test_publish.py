"""The release step: content-addressed file name, sidecar beside it, and a model card with recipe and results."""
import hashlib
import json

import pytest
import torch

from transfer.data.synthetic import resnet_state


@pytest.fixture
def publish(run_tool):
    return lambda *args: run_tool("publish", *args)


def pretrained_and_converted(tmp_path, convert):
    run = tmp_path / "pretrain_run"
    run.mkdir()
    torch.save(resnet_state(18), run / "backbone.pth")
    (run / "config.yaml").write_text("MODEL:\n  METHOD: houghcl\nSOLVER:\n  MAX_ITER: 200\n")
    assert convert(run / "backbone.pth", tmp_path / "houghcl.pkl").returncode == 0
    results = tmp_path / "voc" / "seed_0"
    results.mkdir(parents=True)
    bbox = {"AP": 41.5, "AP50": 70.25, "AP75": 44.0}
    (results / "final_results.json").write_text(json.dumps({"results": {"bbox": bbox}, "seed": 0,
                                                            "weights": str(tmp_path / "houghcl.pkl")}))
    dense = tmp_path / "dense" / "seed_0"  # the dense probe reads the checkpoint the .pkl was converted from
    dense.mkdir(parents=True)
    (dense / "final_results.json").write_text(json.dumps({"results": {"dense": {"AP": 40.0}}, "seed": 0,
                                                          "weights": str(run / "backbone.pth")}))
    return tmp_path / "houghcl.pkl", tmp_path / "voc"


def test_publish_names_the_file_by_its_hash_and_writes_the_card(tmp_path, convert, publish):
    pkl, voc = pretrained_and_converted(tmp_path, convert)
    result = publish(pkl, "--name", "houghcl_r18", "--out", tmp_path / "release", "--results", voc,
                     tmp_path / "dense")
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(pkl.read_bytes()).hexdigest()
    stem = tmp_path / "release" / f"houghcl_r18-{digest[:8]}"
    assert sorted(p.name for p in (tmp_path / "release").iterdir()) == sorted(
        f"{stem.name}{ext}" for ext in (".pkl", ".pkl.json", ".md"))
    assert stem.with_suffix(".pkl").read_bytes() == pkl.read_bytes()
    assert json.loads((tmp_path / "release" / f"{stem.name}.pkl.json").read_text()) == \
        json.loads((tmp_path / "houghcl.pkl.json").read_text())
    card = stem.with_suffix(".md").read_text()
    assert f"sha256: `{digest}`" in card and "METHOD: houghcl" in card and "MAX_ITER: 200" in card
    source_digest = hashlib.sha256((tmp_path / "pretrain_run" / "backbone.pth").read_bytes()).hexdigest()
    assert source_digest in card and "MODEL.RESNETS.DEPTH 18" in card
    assert "| voc | 1 | 0 | 41.50 | 70.25 | 44.00 |" in card
    assert f"Fine-tuning (`{voc}`)" in card and f"Dense linear probe (frozen backbone) (`{tmp_path / 'dense'}`)" in card


def test_publish_refuses_before_writing_anything(tmp_path, convert, publish):
    pkl, voc = pretrained_and_converted(tmp_path, convert)
    release = tmp_path / "release"
    cases = [
        ((pkl, "--name", "bad name"), "use letters, digits"),
        ((tmp_path / "pretrain_run" / "backbone.pth", "--name", "x"), "publish a converted Detectron2 .pkl"),
        ((pkl, "--name", "x", "--results", tmp_path / "nowhere"), "no final_results.json"),
        ((pkl, "--name", "x", "--recipe", tmp_path / "missing.yaml"), "--recipe"),
    ]
    other = tmp_path / "other" / "seed_0"
    other.mkdir(parents=True)
    (other / "final_results.json").write_text(json.dumps({"results": {"bbox": {"AP": 1.0}}, "seed": 0,
                                                          "weights": str(tmp_path / "densecl.pkl")}))
    cases.append(((pkl, "--name", "x", "--results", voc, tmp_path / "other"),
                  f"seed 0 was trained from '{tmp_path / 'densecl.pkl'}', not from {pkl}"))
    # the same path, other bytes: a run that records the sha256 it started from is held to it, not to the path
    replaced = tmp_path / "replaced" / "seed_0"
    replaced.mkdir(parents=True)
    (replaced / "final_results.json").write_text(json.dumps({"results": {"bbox": {"AP": 1.0}}, "seed": 0,
                                                             "weights": str(pkl), "weights_sha256": "ab" * 32}))
    cases.append(((pkl, "--name", "x", "--results", tmp_path / "replaced"),
                  "with sha256 abababababab, not"))
    for args, expected in cases:
        result = publish(*args, "--out", release)
        assert result.returncode == 1 and expected in result.stderr, (args, result.stderr)
    (tmp_path / "houghcl.pkl.json").unlink()
    result = publish(pkl, "--name", "x", "--out", release)
    assert result.returncode == 1 and "no converter sidecar" in result.stderr
    assert not release.exists()


def test_the_card_of_an_intermediate_checkpoint_gives_its_own_config_and_iteration(tmp_path, convert, publish):
    """A run that changed its matcher on resume: the card of its iteration-40 checkpoint says what trained it."""
    run = tmp_path / "pretrain_run"
    run.mkdir()
    state = resnet_state(18)
    torch.save({"model": {f"encoder_q.{k}": v for k, v in state.items()}, "iteration": 40,
                "cfg": "MODEL:\n  MATCHER: argmax\nSOLVER:\n  MAX_ITER: 100\n"}, run / "model_0000040.pth")
    (run / "config.yaml").write_text("MODEL:\n  MATCHER: hough\nSOLVER:\n  MAX_ITER: 200\n")  # the final one
    result = convert(run / "model_0000040.pth", tmp_path / "early.pkl")
    assert result.returncode == 0, result.stderr
    assert publish(tmp_path / "early.pkl", "--name", "early", "--out", tmp_path / "release").returncode == 0
    card, = (tmp_path / "release").glob("early-*.md")
    text = card.read_text()
    assert "MATCHER: argmax" in text and "MAX_ITER: 100" in text and "at iteration 40" in text
    assert "MATCHER: hough" not in text
