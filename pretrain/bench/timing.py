"""Timing and memory of competing functions, for tools/benchmark.py: interleaved runs, same-round ratios."""
import statistics
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(functions, warmup, repeats, device):
    """Median and spread of each function's time, run in turn."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t), "n": len(t), "times": t}
            for name, t in times.items()}


def paired_ratio(timing, a, b):
    """Median over rounds of a's time / b's time in the same round: drifts of the machine cancel out."""
    return statistics.median(x / y for x, y in zip(timing[a]["times"], timing[b]["times"]))


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of tensor storage alive at once among the tensors created inside this context (CPU or GPU),
    counting each storage once however many views share it; storages of ``existing`` tensors do not count."""

    def __init__(self, existing=()):
        super().__init__()
        self.live = {t.untyped_storage().data_ptr(): [0, 1 << 60] for t in existing}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out

    def track(self, t):
        ptr = t.untyped_storage().data_ptr()
        entry = self.live.get(ptr)
        if entry is None:
            entry = self.live[ptr] = [t.untyped_storage().nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self.release, ptr)

    def release(self, ptr):
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]


def peak_memory(fn, inputs, device):
    """Peak memory of one call of ``fn``: CUDA's allocator counter on GPU, live tensor bytes on CPU."""
    fn()  # warm the index caches first: they are built once per shape, not per call
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return torch.cuda.max_memory_allocated() - base
    with LiveTensorBytes(existing=inputs) as tracker:
        fn()
    return tracker.peak
