#!/usr/bin/env python
"""The GPU path in one prepared run (at most about 8 minutes on one GPU, nothing from the network).

    tools/gpu_check.sh                 # on a machine with CUDA: results in output/gpu_check/
    tools/gpu_check.sh --cpu-smoke     # the same steps, shrunk, on the CPU in about a minute (part of make test)

Steps: the tests marked ``gpu`` (AMP against fp32, positives, DDP over NCCL through torchrun at world size 1 and
2 where two GPUs exist, resume on the GPU); the pretraining step benchmark (ResNet-50, 224 px, batch 64, bf16,
channels-last) with the largest batch that fits; the portable numerics mode on the GPU (deterministic algorithms,
``CUBLAS_WORKSPACE_CONFIG``): its step time against fast (ResNet-50, batch 32, fp32) and whether a second portable
process ends with the same weights to the bit; the matchers at grid 28 on the device; 20 iterations of
Detectron2 Faster R-CNN R50-C4 on the device (ROIAlign and NMS from torchvision). Prints one JSON and a short
table; writes OUT/result.json. Exit status 1 if a step failed.
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import argparse
import json
import os
import sys

from transfer.pipeline.gpu_check import ROOT, print_table, run_check


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the same steps, shrunk, on the CPU")
    parser.add_argument("--out", default=os.path.join(ROOT, "output", "gpu_check"))
    args = parser.parse_args(argv)
    import torch
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --cpu-smoke to check the plumbing on the CPU", file=sys.stderr)
        return 1
    report = run_check(args.cpu_smoke, args.out, "cpu" if args.cpu_smoke else torch.cuda.get_device_name())
    print(json.dumps({k: v for k, v in report.items() if k != "steps"} |
                     {"steps": {k: v["status"] for k, v in report["steps"].items()}}))
    print_table(report)
    return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
