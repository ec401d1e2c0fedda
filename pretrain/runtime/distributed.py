"""One process, torchrun or SLURM: one entry point, and collectives that are no-ops at world size 1."""
import logging
import os
import subprocess

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def _slurm_master_addr() -> str:
    nodes = os.environ.get("SLURM_JOB_NODELIST", os.environ.get("SLURM_NODELIST", "127.0.0.1"))
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return nodes.split(",")[0]


def init_distributed_mode(device: str = "auto") -> torch.device:
    """Join the process group described by the environment and return this process's device.

    torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a SLURM task (srun, submitit) sets SLURM_PROCID/SLURM_NTASKS/
    SLURM_LOCALID. With neither, or a world of one, no process group is created.
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank_, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    elif "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank_, world, local = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        env.setdefault("MASTER_ADDR", _slurm_master_addr())
        env.setdefault("MASTER_PORT", str(29500 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(rank_), str(world), str(local)
    else:
        rank_, world, local = 0, 1, 0
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not is_distributed():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", world_size=world, rank=rank_,
                                device_id=dev if use_cuda else None)
        logger.info("process group: %s, rank %d of %d, device %s", backend, rank_, world, dev)
    return dev


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """All processes' tensors concatenated along dim 0 (no gradient); the tensor itself at world size 1."""
    if world_size() == 1:
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    if world_size() > 1:
        dist.broadcast(tensor, src)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world_size()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@torch.no_grad()
def weights_agree(module: torch.nn.Module) -> bool:
    """Whether every process holds the same parameters (a fingerprint gathered from all; True at world size 1).
    Buffers are left out: BN running statistics are updated by each process's own last forward pass (DDP
    broadcasts rank 0's at the start of each forward), and the checkpoint keeps rank 0's, as MoCo and DenseCL do."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    tensors = [t.detach().double().flatten() for t in module.parameters()]
    fingerprint = torch.stack([torch.stack([t.sum(), (t * t).sum(), t.abs().max()]) for t in tensors]).flatten()
    gathered = [torch.empty_like(fingerprint) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, fingerprint.contiguous())
    return all(torch.equal(gathered[0], g) for g in gathered[1:])


def peer_failure(error: BaseException) -> bool:
    """Whether an error of a collective means another process of the job is gone (killed, crashed, its node
    lost), rather than a fault of this process."""
    if isinstance(error, getattr(dist, "DistError", ())) and not isinstance(error, ValueError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                  "gloo", "Gloo", "NCCL", "Socket Timeout", "recvBytes", "sendBytes"))
