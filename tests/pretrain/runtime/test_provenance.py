"""Where a number came from (pretrain/runtime/provenance.py): the commit and whether the tree was clean, package
versions, the machine's CPU capability and threads, the process layout; written into every results file."""
import importlib.metadata
import json
import subprocess

import torch

from pretrain.runtime.provenance import git_state, provenance, provenance_lines
from transfer.results import RESULTS_FILE, write_final_results


def git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_git_state_follows_commits_and_changes(tmp_path):
    assert git_state(str(tmp_path)) == {"commit": None, "clean": None}  # not a git tree
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    state = git_state(str(tmp_path))
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert state == {"commit": head.strip(), "clean": True}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(str(tmp_path))["clean"] is False
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "untracked.txt").write_text("output\n")  # outputs beside the code do not make it dirty
    assert git_state(str(tmp_path))["clean"] is True


def test_the_record_names_packages_machine_and_layout(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    record = provenance(world_size=8, batch_per_process=32, device=torch.device("cpu"))
    assert record["packages"]["torch"] == importlib.metadata.version("torch")
    assert record["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["threads"] == torch.get_num_threads()
    assert (record["world_size"], record["batch_per_process"]) == (8, 32)
    assert record["kernel_variables"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    text = provenance_lines(record)
    assert "8 (batch per process: 32)" in text and "ONEDNN_MAX_CPU_ISA=AVX2" in text


def test_every_results_file_carries_it(tmp_path):
    write_final_results(str(tmp_path), {"bbox": {"AP": 1.0}}, 3, weights="w.pkl", config="")
    saved = json.loads((tmp_path / RESULTS_FILE).read_text())["provenance"]
    assert saved["packages"]["torch"] == importlib.metadata.version("torch")
    assert set(saved) >= {"commit", "clean", "packages", "device", "cpu_capability", "threads", "world_size"}
