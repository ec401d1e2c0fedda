#!/usr/bin/env python
"""Pretrain a ResNet with HoughCL, DenseCL, MoCo-v2 or PixPro-style matching (the twin of train_net.py).

    tools/pretrain_net.py --config-file configs/pretrain/tiny_r18_cpu.yaml DATA.ROOT photos/ OUTPUT_DIR output/x
    torchrun --nproc_per_node 8 tools/pretrain_net.py --config-file configs/pretrain/houghcl_r50_coco_800ep_8x32.yaml
    srun tools/pretrain_net.py --config-file ...        (SLURM: one task per GPU)
"""
import _env  # noqa: F401  isort: skip  (first: outside the environment, one line on how to enter it)
import sys

from pretrain.main import main
from pretrain.runtime import numerics

if __name__ == "__main__":
    numerics.reexec_if_needed()  # NUMERICS portable: the variables libraries read at load time
    sys.exit(main())
