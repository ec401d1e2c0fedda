"""Scale-out without GPUs, as users grow past one machine: two torchrun nodes on localhost (c10d rendezvous, Gloo)
for pretraining, two Detectron2 machines for fine-tuning, a lost node, and the SLURM requeue path of submit.py."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pretrain.runtime.files import read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable
TINY = os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml")
TORCHRUN = [PYTHON, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node(port, rdzv_id, *args):
    """One node of two: its own torchrun agent and one worker process."""
    command = TORCHRUN + ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                          f"127.0.0.1:{port}", "--rdzv-id", rdzv_id, "--max-restarts", "0",
                          os.path.join(TOOLS, "pretrain_net.py"), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_torchrun_nodes_pretrain_agree_survive_a_lost_node_and_resume(image_folder, tmp_path):
    out = tmp_path / "two_nodes"
    common = ["--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.BATCH_SIZE", 2,
              "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", out]
    # Both nodes finish, the checkpoint is written once, every rank ends with the same weights.
    port = free_port()
    nodes = [node(port, "finish", *common, "SOLVER.MAX_ITER", 4) for _ in range(2)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert "parameters identical on all 2 processes" in (out / "log.txt").read_text()
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000002.pth", "model_0000004.pth"]
    assert [r["iteration"] for r in read_jsonl(str(out / "metrics.jsonl"))] == [1, 2, 3, 4]
    # A node killed (-9, agent and worker): the other stops within a bounded time, with one clear line.
    port = free_port()
    nodes = [node(port, "lost", "--resume", *common, "SOLVER.MAX_ITER", 400) for _ in range(2)]
    deadline = time.time() + 300
    while time.time() < deadline and max(r["iteration"] for r in read_jsonl(str(out / "metrics.jsonl"))) < 8:
        time.sleep(0.2)
    for pid in children(nodes[1].pid) + [nodes[1].pid]:  # the whole node: its agent and its worker
        os.kill(pid, signal.SIGKILL)
    started = time.time()
    survivor = nodes[0].communicate(timeout=180)[0]
    nodes[1].wait()
    assert time.time() - started < 120 and nodes[0].returncode != 0
    assert "error: another process of this job stopped" in survivor and "start the job again with --resume" in survivor
    # No traceback from the worker; torchrun's agent prints its own summary (and its own traceback when the
    # node it lost held the rendezvous store).
    assert "pretrain/main.py" not in survivor and "pretrain/engine.py" not in survivor
    done = max(r["iteration"] for r in read_jsonl(str(out / "metrics.jsonl")))
    # --resume continues from the last checkpoint on both nodes.
    port = free_port()
    nodes = [node(port, "again", "--resume", *common, "SOLVER.MAX_ITER", done + 2) for _ in range(2)]
    logs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(log[-2000:] for log in logs)
    rows = [r["iteration"] for r in read_jsonl(str(out / "metrics.jsonl"))]
    assert rows == list(range(1, done + 3)) and "resumed from" in (out / "log.txt").read_text()


def children(pid: int):
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.slow
def test_submit_requeues_a_timed_out_job_and_it_resumes(image_folder, tmp_path):
    import submitit

    from transfer.pipeline.jobs import ResumableCommand
    out = tmp_path / "requeued"
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    executor.update_parameters(timeout_min=30, gpus_per_node=0, nodes=1, tasks_per_node=1)
    job = executor.submit(ResumableCommand("pretrain", [
        "--config-file", TINY, "DATA.ROOT", image_folder, "SOLVER.MAX_ITER", 60, "SOLVER.CHECKPOINT_PERIOD", 1000,
        "OUTPUT_DIR", str(out)]))
    deadline = time.time() + 300
    while time.time() < deadline and not job.done() and len(read_jsonl(str(out / "metrics.jsonl"))) < 3:
        time.sleep(0.2)
    # What the local controller (and SLURM) does before the time limit: the job's task gets USR2.
    for pid in children(job._process.pid):
        os.kill(pid, signal.SIGUSR2)
    job.result()  # requeued, resumed, finished
    log = (out / "log.txt").read_text()
    assert "stopped by signal" in log and "resumed from" in log
    rows = [r["iteration"] for r in read_jsonl(str(out / "metrics.jsonl"))]
    assert rows == list(range(1, 61))


def machine(rank, port, tmp_path, *opts):
    """One of two Detectron2 machines on localhost (one process each), fine-tuning on a small VOC set."""
    voc = os.path.join(str(tmp_path), "VOC2007")
    command = [PYTHON, os.path.join(TOOLS, "train_net.py"), "--config-file",
               os.path.join(ROOT, "configs/transfer/tiny/trees_R_18_FPN_cpu.yaml"), "--num-machines", "2",
               "--machine-rank", str(rank), "--dist-url", f"tcp://127.0.0.1:{port}", "--voc", "two_train", voc,
               "trainval", "--voc", "two_test", voc, "test", "DATASETS.TRAIN", "('two_train',)", "DATASETS.TEST",
               "('two_test',)", "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.WEIGHTS", str(tmp_path / "r18.pkl"),
               "SEED", "0", *map(str, opts)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_detectron2_machines_fine_tune_agree_and_survive_a_lost_machine(tmp_path, convert):
    import torch

    from transfer.data.synthetic import resnet_state, write_voc
    write_voc(str(tmp_path), classes=("person", "car"), train=4, test=2)
    torch.save(resnet_state(18), tmp_path / "r18.pth")
    assert convert(tmp_path / "r18.pth", tmp_path / "r18.pkl").returncode == 0
    out = tmp_path / "ft"
    port = free_port()
    machines = [machine(rank, port, tmp_path, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out) for rank in (0, 1)]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert "parameters identical on all 2 processes" in (out / "log.txt").read_text()
    assert sorted(p.name for p in out.glob("*.pth")) == ["model_final.pth"]  # written once, by rank 0
    assert (out / "final_results.json").exists()
    # A machine lost mid-training: the other stops within a bounded time with one line; --resume continues.
    out = tmp_path / "lost"
    port = free_port()
    opts = ("SOLVER.MAX_ITER", 16, "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", out)
    machines = [machine(rank, port, tmp_path, *opts) for rank in (0, 1)]
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "model_0000003.pth").exists():
        time.sleep(0.2)
    for pid in children(machines[1].pid) + [machines[1].pid]:  # the whole machine: launcher and its worker
        os.kill(pid, signal.SIGKILL)
    started = time.time()
    survivor = machines[0].communicate(timeout=180)[0]
    machines[1].wait()
    assert time.time() - started < 120 and machines[0].returncode == 1
    assert "error: another process of this job stopped" in survivor and "Traceback" not in survivor
    port = free_port()
    machines = [machine(rank, port, tmp_path, "--resume", *opts) for rank in (0, 1)]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], "\n".join(log[-2000:] for log in logs)
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 0" in log and log.count("Starting training from iteration") == 2
    assert "parameters identical on all 2 processes" in log and (out / "final_results.json").exists()
