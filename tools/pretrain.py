#!/usr/bin/env python
"""Pretrain a ResNet with HoughCL, DenseCL, MoCo-v2 or PixPro-style matching.

    tools/pretrain.py --config-file configs/pretrain/tiny_r18_cpu.yaml DATA.ROOT photos/ OUTPUT_DIR output/x
    torchrun --nproc_per_node 8 tools/pretrain.py --config-file configs/pretrain/houghcl_coco_800ep_8x32.yaml
    srun tools/pretrain.py --config-file ...        (SLURM: one task per GPU)
"""
import os
import sys

# Python puts this script's folder first on sys.path, where this file would shadow the `pretrain` package.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]

from pretrain.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
