"""Portable numerics (pretrain/numerics.py): the same pretraining bits with the machine's default kernels and with
oneDNN, MKL and ATen held to AVX2 and another thread count (a stand-in for another x86-64 machine); leaving out
oneDNN's switch or MKL_CBWR breaks it, on this machine."""
import hashlib
import os
import subprocess
import sys

import pytest

from pretrain import numerics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OTHER_MACHINE = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OMP_NUM_THREADS": "1",
                 "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"}


def pretrain_hash(out, image_folder, mode, extra_env):
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV and k != "NUMERICS_OMIT"}
    env.update(extra_env)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "pretrain_net.py"), "--config-file",
                           os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml"), "DATA.ROOT", image_folder,
                           "SOLVER.MAX_ITER", "2", "NUMERICS", mode, "OUTPUT_DIR", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(out, "backbone.pth"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.slow
def test_portable_pretraining_is_bit_identical_under_another_machines_kernels(image_folder, tmp_path):
    here = pretrain_hash(tmp_path / "a", image_folder, "portable", {})
    assert pretrain_hash(tmp_path / "b", image_folder, "portable", OTHER_MACHINE) == here
    # Each of these settings matters: without it, the two "machines" disagree.
    for setting in ("mkldnn", "MKL_CBWR"):
        omit = {"NUMERICS_OMIT": setting}
        assert pretrain_hash(tmp_path / f"c{setting}", image_folder, "portable", omit) != \
            pretrain_hash(tmp_path / f"d{setting}", image_folder, "portable", {**omit, **OTHER_MACHINE}), setting


def test_portable_refuses_a_process_without_its_variables(monkeypatch):
    for key in numerics.PORTABLE_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(numerics.NumericsError, match="MKL_CBWR=AVX2,STRICT"):
        numerics.apply("portable")
    with pytest.raises(numerics.NumericsError, match="not one of"):
        numerics.apply("exact")
    monkeypatch.setenv("NUMERICS_OMIT", "nope")
    with pytest.raises(numerics.NumericsError, match="NUMERICS_OMIT"):
        numerics.missing("portable")


def test_the_mode_is_read_from_a_command_line():
    assert numerics.requested_mode(["--config-file", "x.yaml", "NUMERICS", "portable"]) == "portable"
    assert numerics.requested_mode(["--numerics", "portable", "x"]) == "portable"
    assert numerics.requested_mode(["--numerics=portable"]) == "portable"
    assert numerics.requested_mode(["x", "y"]) == "fast"
    env = numerics.environment("portable", {"PATH": "/bin"})
    assert env["MKL_CBWR"] == "AVX2,STRICT" and env["PATH"] == "/bin"
    assert numerics.environment("fast", {"PATH": "/bin"}) == {"PATH": "/bin"}
