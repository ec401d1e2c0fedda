"""``tools/benchmark.py checks``: what the checks before a fine-tuning's first iteration cost on a large set
(``transfer/dataset_checks.check_image_files``: each file's existence and header size), against decoding the same
files, the work Detectron2's loader does for each image of an epoch. The files are written first (small JPEGs of
several sizes), so the page cache is warm: a cold network file system is slower than this."""
import os
import tempfile
import time

import numpy as np
from PIL import Image

from transfer.data.checks import check_image_files


def write_files(folder: str, count: int):
    """``count`` records of distinct JPEG files (64-128 px), as Detectron2's dataset dicts name them."""
    records, rng = [], np.random.default_rng(0)
    for i in range(count):
        width, height = 64 + i % 65, 64 + (i * 7) % 65
        path = os.path.join(folder, f"{i // 1000:03d}", f"{i:06d}.jpg")
        if i % 1000 == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, quality=50)
        records.append({"file_name": path, "width": width, "height": height})
    return records


def bench_checks(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
        start = time.perf_counter()
        records = write_files(folder, args.entries)
        written = time.perf_counter() - start
        checked = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            check_image_files("benchmark", records)
            checked.append(time.perf_counter() - start)
        sample = records[:: max(1, len(records) // args.decode_sample)]
        start = time.perf_counter()
        for record in sample:
            with Image.open(record["file_name"]) as img:
                img.convert("RGB").load()
        decode_per_file = (time.perf_counter() - start) / len(sample)
    check_s = sorted(checked)[len(checked) // 2]
    return {"checks": {"entries": args.entries, "check_s": check_s, "check_spread_s": [min(checked), max(checked)],
                       "entries_per_s": args.entries / check_s, "decode_s_per_file": decode_per_file,
                       "check/decode": check_s / (decode_per_file * args.entries), "write_s": written},
            "settings": {"entries": args.entries, "repeats": args.repeats, "decode_sample": len(sample),
                         "scratch": args.scratch or tempfile.gettempdir()}}
