"""Portable numerics (pretrain/runtime/numerics.py): the same bits, pretraining, its dense probe and Detectron2
iterations, with the machine's default kernels and with oneDNN, MKL and ATen held to AVX2 (a stand-in for another
x86-64 machine); leaving out oneDNN's switch or MKL_CBWR breaks it, on a CPU whose own
kernels are wider than AVX2 (on an AVX2-only CPU the stand-in is the machine itself, and that half is skipped).
The evaluation's NumPy: Detectron2's VOC AP of detections with tied scores is NumPy's AVX2 number in portable
numerics, and another number with NumPy's AVX-512 kernels."""
import hashlib
import json
import os
import random
import subprocess
import sys

import pytest
import torch

from pretrain.runtime import numerics
from pretrain.runtime.provenance import cpu_description
from transfer.data.synthetic import write_voc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# What portable leaves to the machine, told to use AVX2 (portable sets the rest, threads included, itself), and a
# busy machine's passive threads.
OTHER_MACHINE = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                 "OMP_WAIT_POLICY": "PASSIVE"}


def run(tool, *args, extra_env=None):
    """A tool as a user runs it, in an environment without the mode's variables (the tool sets them) plus
    ``extra_env``."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV and k != "NUMERICS_OMIT"}
    env.update(extra_env or {})
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def pretrain_hash(out, image_folder, mode, extra_env):
    run("pretrain_net.py", "--config-file", os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml"), "DATA.ROOT",
        image_folder, "SOLVER.MAX_ITER", 2, "NUMERICS", mode, "OUTPUT_DIR", out, extra_env=extra_env)
    return file_hash(os.path.join(out, "backbone.pth"))


def weights_hash(path):
    """sha256 over a Detectron2 checkpoint's model tensors, in name order."""
    model = torch.load(path, map_location="cpu", weights_only=False)["model"]
    digest = hashlib.sha256()
    for name in sorted(model):
        digest.update(name.encode() + model[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def transfer_numbers(out, backbone, voc, extra_env):
    """The portable dense probe of ``backbone`` and two Detectron2 iterations of the frozen-backbone detection
    probe from it: (the probe's AP and test scores, the detector's weights and AP)."""
    run("dense_probe.py", voc, "--weights", backbone, "--seeds", 1, "--as-seed", 0, "--numerics", "portable",
        "--out", out / "dense", extra_env=extra_env)
    with open(out / "dense" / "seed_0" / "final_results.json") as f:
        dense = json.load(f)["results"]["dense"]["AP"]
    scores = [file_hash(os.path.join(out / "dense" / "seed_0", name))
              for name in sorted(os.listdir(out / "dense" / "seed_0")) if name.endswith(".pt")]
    run("convert.py", backbone, out / "r18.pkl", extra_env=extra_env)
    run("train_net.py", "--config-file", os.path.join(ROOT, "configs/transfer/tiny/trees_R_18_FPN_probe_cpu.yaml"),
        "--voc", "trees_train", voc, "train", "--voc", "trees_test", voc, "test", "--numerics", "portable",
        "MODEL.WEIGHTS", out / "r18.pkl", "SOLVER.MAX_ITER", 2, "SOLVER.WARMUP_ITERS", 1, "SOLVER.STEPS", "(1,)",
        "TRANSFER.PROBE.BN_ITERS", 2, "DATALOADER.NUM_WORKERS", 0, "SEED", 0, "OUTPUT_DIR", out / "detection",
        extra_env=extra_env)
    with open(out / "detection" / "final_results.json") as f:
        detection = json.load(f)["results"]
    return dense, scores, weights_hash(out / "detection" / "model_final.pth"), json.dumps(detection, sort_keys=True)


@pytest.mark.slow
def test_the_dense_probe_and_detectron2_iterations_are_bit_identical_under_another_machines_kernels(
        image_folder, tmp_path):
    voc = write_voc(str(tmp_path), classes=("box",), train=4, test=2, size=(96, 96))
    split_dir = os.path.join(voc, "ImageSets", "Main")
    os.rename(os.path.join(split_dir, "trainval.txt"), os.path.join(split_dir, "train.txt"))
    pretrain_hash(tmp_path / "pretrained", image_folder, "portable", {})
    backbone = tmp_path / "pretrained" / "backbone.pth"
    here = transfer_numbers(tmp_path / "here", backbone, voc, {})
    assert here == transfer_numbers(tmp_path / "there", backbone, voc, OTHER_MACHINE)


@pytest.mark.slow
def test_portable_pretraining_is_bit_identical_under_another_machines_kernels(image_folder, tmp_path):
    here = pretrain_hash(tmp_path / "a", image_folder, "portable", {})
    assert pretrain_hash(tmp_path / "b", image_folder, "portable", OTHER_MACHINE) == here


@pytest.mark.slow
@pytest.mark.skipif(not torch.backends.cpu.get_cpu_capability().startswith("AVX512"),
                    reason="this CPU's best kernels are AVX2 already: the AVX2 stand-in cannot differ from it, so "
                           "what each portable setting prevents cannot be shown here")
def test_each_portable_setting_matters_where_the_stand_in_differs_from_the_machine(image_folder, tmp_path):
    # Each of these settings matters: without it, the two "machines" disagree. On an AMD EPYC the stand-in agreed
    # without MKL_CBWR too (MKL's choice there does not follow MKL_ENABLE_INSTRUCTIONS): only an Intel CPU shows
    # here what it holds; between vendors it is what Intel documents it for.
    intel = cpu_description()["vendor"] == "GenuineIntel"
    for setting in ("mkldnn", "MKL_CBWR") if intel else ("mkldnn",):
        omit = {"NUMERICS_OMIT": setting}
        assert pretrain_hash(tmp_path / f"c{setting}", image_folder, "portable", omit) != \
            pretrain_hash(tmp_path / f"d{setting}", image_folder, "portable", {**omit, **OTHER_MACHINE}), setting


def write_tied_detections(folder, images=600, seed=0):
    """A VOC test set of one box per image and two detections per image, the box itself and a miss elsewhere,
    with scores of one decimal: true and false positives tie, and the order NumPy's unstable argsort gives the ties
    decides the AP (Detectron2's ``voc_eval``, as on a detector's scores, which its evaluator rounds to 3 digits)."""
    draw = random.Random(seed)
    os.makedirs(os.path.join(folder, "annotations"))
    obj = ("<object><name>box</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
           "<bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>50</ymax></bndbox></object>")
    with open(os.path.join(folder, "test.txt"), "w") as names, open(os.path.join(folder, "box.txt"), "w") as dets:
        for i in range(images):
            names.write(f"im{i}\n")
            with open(os.path.join(folder, "annotations", f"im{i}.xml"), "w") as f:
                f.write(f"<annotation>{obj}</annotation>")
            dets.write(f"im{i} {draw.randint(1, 9) / 10:.3f} 10.0 10.0 50.0 50.0\n"
                       f"im{i} {draw.randint(1, 9) / 10:.3f} 100.0 100.0 140.0 140.0\n")


def voc_ap(folder, env_changes):
    """Detectron2's VOC AP of ``write_tied_detections``, in a new process started in portable numerics with
    ``env_changes`` (None: leave the variable out)."""
    env = {**{k: v for k, v in os.environ.items() if k not in numerics.PORTABLE_ENV}, **numerics.PORTABLE_ENV}
    for key, value in env_changes.items():
        env.pop(key, None) if value is None else env.__setitem__(key, value)
    code = ("import sys; from detectron2.evaluation.pascal_voc_evaluation import voc_eval; "
            "print(repr(float(voc_eval(*sys.argv[1:4], 'box')[2])))")
    files = [os.path.join(folder, "{}.txt"), os.path.join(folder, "annotations", "{}.xml"),
             os.path.join(folder, "test.txt")]
    done = subprocess.run([sys.executable, "-c", code, *files], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.split()[-1])


def numpy_has_avx512():
    from numpy._core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("X86_V4"))


def test_the_evaluation_ranks_tied_scores_with_numpys_avx2_kernels_in_portable_numerics(tmp_path):
    pytest.importorskip("detectron2")
    write_tied_detections(tmp_path)
    portable = voc_ap(tmp_path, {})
    # NumPy told by its other switch to use the AVX2 level and nothing above: the kernels of an AVX2-only CPU.
    assert portable == voc_ap(tmp_path, {"NPY_DISABLE_CPU_FEATURES": None, "NPY_ENABLE_CPU_FEATURES": "X86_V3"})
    if not numpy_has_avx512():
        pytest.skip("NumPy has no AVX-512 kernels on this CPU: what holding them prevents cannot be shown here")
    # Without the hold, NumPy's AVX-512 sort orders the ties otherwise: another AP from the same detections.
    assert voc_ap(tmp_path, {"NPY_DISABLE_CPU_FEATURES": None}) != portable


def test_portable_refuses_a_process_without_its_variables(monkeypatch):
    for key in numerics.PORTABLE_ENV:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(numerics.NumericsError, match="MKL_CBWR=COMPATIBLE"):
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
    assert env["MKL_CBWR"] == "COMPATIBLE" and env["PATH"] == "/bin"
    assert numerics.environment("fast", {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_busy_machine_is_named_in_one_line_and_portable_threads_wait_passively(capsys):
    assert numerics.busy(load=0.6, cores=2) is None and numerics.busy(load=3.0, cores=16) is None
    note = numerics.busy(load=3.9, cores=2)
    assert note.startswith("note: this machine is busy (load 3.9 on 2 cores)") and "\n" not in note
    env = numerics.environment("portable", {"PATH": "/bin"}, load=3.9)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and capsys.readouterr().err.strip() == note
    assert "OMP_WAIT_POLICY" not in numerics.environment("portable", {"PATH": "/bin"}, load=0.0)
    assert capsys.readouterr().err == ""
    assert numerics.environment("portable", {"OMP_WAIT_POLICY": "ACTIVE"}, load=3.9)["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "OMP_WAIT_POLICY" not in numerics.environment("fast", {}, load=3.9)
