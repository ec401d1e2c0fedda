"""pretrain/config.py: the _BASE_ chain and its errors (shared with the transfer config), and flags that may
stand anywhere among KEY VALUE overrides."""
import argparse
import os

import pytest

from pretrain.config import ConfigError, load_config, overrides_after_flags


def test_a_base_chain_merges_and_a_missing_base_names_the_file_that_names_it(tmp_path):
    (tmp_path / "base.yaml").write_text("SEED: 7\nMODEL:\n  DEPTH: 18\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nSEED: 3\n")
    cfg = load_config(str(tmp_path / "sub" / "child.yaml"), ["SOLVER.MAX_ITER", "5"])
    assert (cfg.SEED, cfg.MODEL.DEPTH, cfg.SOLVER.MAX_ITER) == (3, 18, 5)
    (tmp_path / "sub" / "orphan.yaml").write_text("_BASE_: ../gone.yaml\n")
    (tmp_path / "grandchild.yaml").write_text("_BASE_: sub/orphan.yaml\n")
    with pytest.raises(ConfigError) as error:
        load_config(str(tmp_path / "grandchild.yaml"))
    assert str(error.value) == f"{tmp_path / 'sub' / 'orphan.yaml'}: its _BASE_ {tmp_path / 'sub' / '../gone.yaml'} " \
                               "does not exist"
    with pytest.raises(ConfigError, match="nothing.yaml: no such config file"):
        load_config(str(tmp_path / "nothing.yaml"))


def test_the_transfer_config_names_a_missing_base_the_same_way(tmp_path):
    pytest.importorskip("detectron2")
    from transfer.finetune.config import TransferConfigError, setup_cfg
    (tmp_path / "child.yaml").write_text("_BASE_: Base-Gone.yaml\n")
    with pytest.raises(TransferConfigError, match=r"child.yaml: its _BASE_ .*Base-Gone.yaml does not exist"):
        setup_cfg(str(tmp_path / "child.yaml"))


def test_errors_name_the_key_or_the_file(tmp_path):
    (tmp_path / "typo.yaml").write_text("SOLVER:\n  MAX_ITERS: 5\n")
    with pytest.raises(ConfigError, match="typo.yaml: .*Non-existent config key: SOLVER.MAX_ITERS"):
        load_config(str(tmp_path / "typo.yaml"))
    with pytest.raises(ConfigError, match="command-line override: .*SOLVER.NOPE"):
        load_config("", ["SOLVER.NOPE", "1"])


def test_flags_are_taken_wherever_they_stand_and_keep_their_values():
    parser = argparse.ArgumentParser()
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--voc", nargs=3, action="append", default=[])
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    argv = ["SOLVER.MAX_ITER", "5", "--resume", "--voc", "a", "VOC2007", "test", "OUTPUT_DIR", "o"]
    assert overrides_after_flags(argv, parser) == ["--resume", "--voc", "a", "VOC2007", "test",
                                                   "SOLVER.MAX_ITER", "5", "OUTPUT_DIR", "o"]
    args = parser.parse_args(overrides_after_flags(argv, parser))
    assert args.resume and args.voc == [["a", "VOC2007", "test"]]
    assert args.opts == ["SOLVER.MAX_ITER", "5", "OUTPUT_DIR", "o"]


def test_a_run_saved_before_a_key_existed_resumes_while_the_key_keeps_its_default(tmp_path):
    from pretrain.config import check_resume_config
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = load_config(os.path.join(root, "configs/pretrain/tiny_r18_cpu.yaml"), ["OUTPUT_DIR", str(tmp_path)])
    older = cfg.clone()
    older.defrost()
    del older.MODEL["DENSE_NEGATIVES"]  # a config.yaml written before the key was added
    (tmp_path / "config.yaml").write_text(older.dump())
    check_resume_config(str(tmp_path / "config.yaml"), cfg)  # the default is the computation the run ran
    changed = load_config(os.path.join(root, "configs/pretrain/tiny_r18_cpu.yaml"),
                          ["OUTPUT_DIR", str(tmp_path), "MODEL.DENSE_NEGATIVES", "view"])
    with pytest.raises(ConfigError, match="MODEL.DENSE_NEGATIVES: None -> 'view'"):
        check_resume_config(str(tmp_path / "config.yaml"), changed)
