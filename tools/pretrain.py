#!/usr/bin/env python
"""Pretrain a ResNet with HoughCL, DenseCL, MoCo-v2 or PixPro-style matching.

    tools/pretrain.py --config-file configs/pretrain/tiny_r18_cpu.yaml DATA.ROOT photos/ OUTPUT_DIR output/x
    torchrun --nproc_per_node 8 tools/pretrain.py --config-file configs/pretrain/houghcl_coco_800ep_8x32.yaml
    srun tools/pretrain.py --config-file ...        (SLURM: one task per GPU)
"""
import sys

import _bootstrap  # noqa: F401  isort:skip  (before the package import below)
from pretrain.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
