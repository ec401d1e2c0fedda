"""``tools/benchmark.py retrieval``: the dense retrieval's throughput, patches per second, to build a memory bank
(the backbone's forward over views, then faiss's add) and to query it (faiss's exact search of the k + 8 best
candidates and their float64 re-ranking), at a bank of ``--bank-patches`` (10^6 by default)."""
import time

import torch

from transfer.readout.retrieval import NeighbourIndex, bank_bytes, patch_features
from transfer.readout.retrieval_eval import channels_of, load_backbone


def median(values):
    return sorted(values)[len(values) // 2]


def bench_retrieval(args) -> dict:
    model = load_backbone(None, args.depth, seed=0)
    dim = channels_of(model, "layer3")
    views = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    forward = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        cells = patch_features(model, views, "layer3").shape[1:3].numel()
        if i >= args.warmup:
            forward.append(time.perf_counter() - start)
    gen = torch.Generator().manual_seed(1)
    keys = torch.nn.functional.normalize(torch.randn(args.bank_patches, dim, generator=gen), dim=1)
    print(f"memory bank: {args.bank_patches:,} patches x {dim} dimensions x 4 bytes = "
          f"{bank_bytes(args.bank_patches, dim) / 2 ** 20:.0f} MiB")
    start = time.perf_counter()
    index = NeighbourIndex(keys)
    added = time.perf_counter() - start
    queries = torch.nn.functional.normalize(torch.randn(args.queries, dim, generator=gen), dim=1)
    searched = []
    for _ in range(max(1, args.repeats // 5)):
        start = time.perf_counter()
        index.search(queries, args.neighbours)
        searched.append(time.perf_counter() - start)
    patches_per_view = cells * args.batch
    return {"retrieval": {
        "build_forward_patches_per_s": patches_per_view / median(forward),
        "build_add_patches_per_s": args.bank_patches / added,
        "query_patches_per_s": args.queries / median(searched)},
        "settings": {"depth": args.depth, "size": args.size, "batch": args.batch, "dim": dim,
                     "cells_per_view": cells, "bank_patches": args.bank_patches, "queries": args.queries,
                     "neighbours": args.neighbours, "threads": torch.get_num_threads()}}
