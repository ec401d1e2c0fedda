#!/usr/bin/env python
"""Speed, measured as ratios within one run: the pretraining step, the matchers, the data pipeline.

    tools/benchmark.py step --depth 18 --size 224 --batch 8 --json out.json
    tools/benchmark.py match --json match.json
    tools/benchmark.py data --images datasets/photos --json data.json

Variants are interleaved (warm-up, then repetitions in turn) so that drifts of the machine hit all of them;
each reports the median and the spread (min, max); ratios are medians of same-round ratios. Targets (goals,
not tests): hough/argmax (HoughCL/DenseCL) step <= 1.02 at R18 and R50 (224 px, batch 8; 1.01 on GPU),
hough/floor <= 1.10, Hough at grid 28 within 2x argmax, data >= 1.0x the plain pipeline.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD, resnet_features
from pretrain.builder import ContrastiveModel
from pretrain.config import get_cfg
from pretrain.engine import amp_dtype, autocast_context, train_step
from pretrain.files import atomic_write
from pretrain.hough_transform import VOTE_LAYERS
from pretrain.matching import MATCHERS, list_matchers
from pretrain.timing import interleaved, paired_ratio, peak_memory, sync

# MoCo-v2 (no dense branch), then one step variant per registered matcher, named after it.
STEP_VARIANTS = {"mocov2": ["MODEL.LOSS_LAMBDA", 0.0], **{name: ["MODEL.MATCHER", name] for name in list_matchers()}}


def step_cfg(args, opts):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEPTH", args.depth, "INPUT.SIZE", args.size, "SOLVER.BATCH_SIZE", args.batch,
                         "MODEL.QUEUE_SIZE", 4096, "SOLVER.AMP", "bf16" if args.amp else "off", *opts])
    return cfg


def random_batch(args, batch_size, device, channels_last):
    g = torch.Generator().manual_seed(0)
    n, s = batch_size, args.size
    views = [torch.randn(n, 3, s, s, generator=g) for _ in range(2)]
    if channels_last:
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    boxes = torch.tensor([[0.0, 0.0, 2.0 * s, 2.0 * s]]).repeat(n, 1)
    batch = {"view_q": views[0], "view_k": views[1], "box_q": boxes, "box_k": boxes * 0.8,
             "flip_q": torch.zeros(n, dtype=torch.bool), "flip_k": torch.arange(n) % 2 == 0}
    return {k: v.to(device) for k, v in batch.items()}


def step_function(args, opts, batch, device, channels_last):
    """One training step of a method (``opts``), as the training loop runs it; the floor when ``opts`` is None:
    the bare backbone, forward+backward of the query view and forward of the key view."""
    cfg = step_cfg(args, opts or STEP_VARIANTS["mocov2"])
    torch.manual_seed(0)
    model = ContrastiveModel(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model.encoder_q.compile()
        model.encoder_k.compile()
    autocast, scaler = autocast_context(amp_dtype(cfg, device))
    if opts is None:
        backbone, key_backbone = model.encoder_q.backbone, model.encoder_k.backbone
        optimizer = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)

        def floor():
            with autocast():
                loss = resnet_features(backbone, batch["view_q"]).float().mean()
                with torch.no_grad():
                    resnet_features(key_backbone, batch["view_k"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return floor
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    return lambda: train_step(model, batch, optimizer, scaler, autocast, 0.5)


def first_call_seconds(fn, device) -> float:
    """The first call's time: with --compile, mostly compilation."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def largest_batch(args, device, channels_last, variant="hough") -> int:
    """The largest power-of-two batch (from --batch up) whose step fits in GPU memory."""
    batch_size, fits = args.batch, 0
    while batch_size <= args.max_batch_limit:
        try:
            batch = random_batch(args, batch_size, device, channels_last)
            step_function(args, STEP_VARIANTS[variant], batch, device, channels_last)()
            sync(device)
            fits = batch_size
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        batch_size *= 2
    return fits


def bench_step(args):
    device = torch.device(args.device)
    channels_last = device.type == "cuda" and not args.no_channels_last
    batch = random_batch(args, args.batch, device, channels_last)
    # A matcher that refuses views of this size (too few voters for hough_transform) is left out, and said so.
    refused = {name: MATCHERS[name].input_problem(args.size, MATCHERS[name].default_options()) for name in MATCHERS}
    refused = {name: why for name, why in refused.items() if why}
    functions = {name: step_function(args, opts, batch, device, channels_last) for name, opts in STEP_VARIANTS.items()
                 if name not in refused}
    functions["floor"] = step_function(args, None, batch, device, channels_last)
    first_call = {name: first_call_seconds(fn, device) for name, fn in functions.items()}
    timing = interleaved(functions, args.warmup, args.repeats, device)
    step = {name: t["median"] for name, t in timing.items()}
    ratios = {**{f"{name}/argmax": paired_ratio(timing, name, "argmax") for name in list_matchers()
                 if name != "argmax" and name not in refused},
              "hough/floor": paired_ratio(timing, "hough", "floor"),
              "argmax/mocov2": paired_ratio(timing, "argmax", "mocov2")}
    images_per_s = {name: args.batch / t for name, t in step.items()}
    result = {"step": step, "ratios": ratios, "spread": timing, "images_per_s": images_per_s, "not_run": refused,
              "first_call_s": first_call,
              "settings": {"depth": args.depth, "size": args.size, "batch": args.batch, "device": str(device),
                           "amp": args.amp, "channels_last": channels_last, "compile": args.compile}}
    if device.type == "cuda":
        result["peak_memory_bytes"] = {name: peak_memory(fn, (), device) for name, fn in functions.items()}
        if args.max_batch:
            del functions, batch
            torch.cuda.empty_cache()
            result["largest_batch"] = {"hough": largest_batch(args, device, channels_last)}
    return result


def bench_match(args):
    """Every appearance-based matcher with its default options on random feature grids. A matcher that reads a
    finer backbone stage gets the grid's features at twice the resolution with a quarter of the channels as that
    stage (ResNet-50's layer3 against C5: 2x, half the channels; layer2: 4x, a quarter)."""
    device = torch.device(args.device)
    result = {}
    names = list_matchers(from_geometry=False)
    for grid in args.grids:
        fq = torch.randn(args.match_batch, args.channels, grid, grid, device=device)
        fk = torch.randn(args.match_batch, args.channels, grid, grid, device=device)
        finer_q, finer_k = (F.interpolate(f[:, :args.channels // 4], scale_factor=2.0) for f in (fq, fk))
        views = {"stages_q": dict.fromkeys(VOTE_LAYERS, finer_q), "stages_k": dict.fromkeys(VOTE_LAYERS, finer_k)}
        functions = {name: (lambda m=MATCHERS[name]: m(fq, fk, views)) for name in names}
        timing = interleaved(functions, 1, args.match_repeats, device)
        result[str(grid)] = {
            name: {"seconds": t["median"], "min": t["min"], "max": t["max"],
                   "peak_bytes": peak_memory(functions[name], (fq, fk), device)}
            for name, t in timing.items()}
        for name in names[1:]:
            result[str(grid)][f"ratio_{name}/argmax"] = timing[name]["median"] / timing["argmax"]["median"]
        result[str(grid)]["bytes_of_N_Lq_Lk_slices_tensor"] = args.match_batch * grid ** 4 * 10 * 4
    return {"match": result, "settings": {"batch": args.match_batch, "channels": args.channels,
                                          "device": str(device)}}


def bench_data(args):
    import torchvision.transforms as T
    from PIL import Image, ImageFilter
    from torch.utils.data import DataLoader, Dataset

    from pretrain.data import EpochSampler, TwoViewDataset
    from pretrain.device_views import DecodedDataset
    from pretrain.transforms import TwoViewTransform

    ours = TwoViewDataset(args.images, TwoViewTransform(args.size))

    class Blur:
        def __call__(self, img):
            import random
            return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))

    plain_transform = T.Compose([
        T.RandomResizedCrop(args.size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([Blur()], p=0.5), T.RandomHorizontalFlip(), T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    class Plain(Dataset):  # MoCo-v2's TwoCropsTransform over an image list
        def __len__(self):
            return len(ours.paths)

        def __getitem__(self, i):
            with Image.open(ours.paths[i]) as img:
                img = img.convert("RGB")
            return plain_transform(img), plain_transform(img)

    decoded = DecodedDataset(args.images, TwoViewTransform(args.size))

    def epochs(dataset, workers, collate=None):
        """``args.data_epochs`` epochs from one loader (persistent workers: started once, as in training)."""
        sampler = EpochSampler(dataset, 1, 0, seed=0)
        loader = DataLoader(dataset, batch_size=args.data_batch, sampler=sampler, num_workers=workers,
                            drop_last=True, collate_fn=collate, persistent_workers=workers > 0)
        for epoch in range(args.data_epochs):
            sampler.set_epoch(epoch)
            yield from loader

    def plain_epochs(workers):
        loader = DataLoader(Plain(), batch_size=args.data_batch, shuffle=True, num_workers=workers, drop_last=True,
                            persistent_workers=workers > 0)
        for _ in range(args.data_epochs):
            yield from loader

    result = {}
    for workers in args.workers:
        loaders = {
            "ours": lambda w=workers: epochs(ours, w),
            "plain": lambda w=workers: plain_epochs(w),
            "device_workers": lambda w=workers: epochs(decoded, w, DecodedDataset.collate),
        }

        def consume(make):
            count = 0
            for batch in make():
                count += len(batch["index"] if isinstance(batch, dict) else batch[0])
            return count

        times = {name: [] for name in loaders}
        counts = {}
        for _ in range(args.data_repeats):
            for name, make in loaders.items():
                start = time.perf_counter()
                counts[name] = consume(make)
                times[name].append(time.perf_counter() - start)
        ips = {name: counts[name] / statistics.median(t) for name, t in times.items()}
        cores = max(1, workers)  # workers == 0: the main process does the work on one core
        result[f"workers_{workers}"] = {"images_per_s": ips, "images_per_s_per_core": {
            name: v / cores for name, v in ips.items()}, "ratio_ours/plain": ips["ours"] / ips["plain"],
            "ratio_device_workers/ours": ips["device_workers"] / ips["ours"]}
    out = {"data": result, "device_side": bench_device_side(decoded, args),
           "settings": {"images": len(ours), "size": args.size, "batch": args.data_batch, "epochs": args.data_epochs}}
    if args.decode:
        out["decode"] = bench_decode(ours.paths, args)
    return out


def bench_device_side(decoded, args):
    """The device side of DATALOADER.VIEWS device: seconds per image to make both views of a batch already on
    the device (crop-resize, jitter, grey, blur, flip, normalisation), on the CPU and on a GPU when present."""
    from pretrain.device_views import DecodedDataset, DeviceViews
    batch = DecodedDataset.collate([decoded[(i % len(decoded), 0)] for i in range(args.data_batch)])
    views = DeviceViews(args.size, IMAGENET_MEAN, IMAGENET_STD)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {}
    for name in devices:
        on = {k: v.to(name) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        timing = interleaved({"views": lambda on=on: views(on)}, 1, args.data_repeats, torch.device(name))
        out[name] = {"seconds_per_image": timing["views"]["median"] / args.data_batch}
    return out


def bench_decode(paths, args):
    """JPEG decoding alone, images/s: Pillow (what the pipeline uses, one core), torchvision.io on the CPU, and
    torchvision.io on the GPU in batches (nvjpeg), to tell whether decoding could limit the pipeline."""
    from PIL import Image
    from torchvision.io import decode_jpeg, read_file
    jpegs = [p for p in paths if p.lower().endswith((".jpg", ".jpeg"))][:args.decode]
    data = [read_file(p) for p in jpegs]

    def pillow():
        for p in jpegs:
            with Image.open(p) as img:
                img.convert("RGB")

    functions = {"pillow": pillow, "torchvision_cpu": lambda: [decode_jpeg(d) for d in data]}
    if torch.cuda.is_available():
        functions["torchvision_cuda"] = lambda: decode_jpeg(data, device="cuda")
    timing = interleaved(functions, 1, args.data_repeats, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return {"images": len(jpegs), "images_per_s": {name: len(jpegs) / t["median"] for name, t in timing.items()}}


def print_table(result):
    if "step" in result:
        s = result["settings"]
        print(f"step: ResNet-{s['depth']}, {s['size']} px, batch {s['batch']}, {s['device']}"
              f"{', bf16' if s['amp'] else ''}")
        print("| variant | median s/step | min | max | images/s |\n|---|---|---|---|---|")
        for name, t in result["spread"].items():
            print(f"| {name} | {t['median']:.4f} | {t['min']:.4f} | {t['max']:.4f} | "
                  f"{result['images_per_s'][name]:.1f} |")
        for name, r in result["ratios"].items():
            print(f"{name}: {r:.4f}")
        for name, why in result["not_run"].items():
            print(f"{name}: not run ({why})")
        for name, b in result.get("peak_memory_bytes", {}).items():
            print(f"peak memory {name}: {b / 2 ** 30:.2f} GiB")
        if "largest_batch" in result:
            print(f"largest batch (hough): {result['largest_batch']['hough']}")
    if "match" in result:
        print("| grid | matcher | median s | peak MiB |\n|---|---|---|---|")
        for grid, row in result["match"].items():
            for name in list_matchers(from_geometry=False):
                print(f"| {grid} | {name} | {row[name]['seconds']:.4f} | {row[name]['peak_bytes'] / 2 ** 20:.0f} |")
            for key in (k for k in row if k.startswith("ratio_")):
                print(f"| {grid} | {key[6:]} | {row[key]:.2f} | |")
            print(f"| {grid} | (a [N,Lq,Lk,slices] tensor would need) | | "
                  f"{row['bytes_of_N_Lq_Lk_slices_tensor'] / 2 ** 20:.0f} |")
    if "decode" in result:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in result["decode"]["images_per_s"].items())
        print(f"JPEG decoding, images/s ({result['decode']['images']} files): {rates}")
    if "data" in result:
        print("| workers | pipeline | images/s | per core |\n|---|---|---|---|")
        for key, row in result["data"].items():
            for name, ips in row["images_per_s"].items():
                print(f"| {key[8:]} | {name} | {ips:.1f} | {row['images_per_s_per_core'][name]:.1f} |")
            print(f"{key}: ours / plain {row['ratio_ours/plain']:.3f}, device workers / ours "
                  f"{row['ratio_device_workers/ours']:.2f}")
        for device, row in result.get("device_side", {}).items():
            print(f"device side on {device}: {1000 * row['seconds_per_image']:.2f} ms per image (both views)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("step", "match", "data"))
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (GPU)")
    parser.add_argument("--no-channels-last", action="store_true", help="GPU: keep NCHW (channels-last is default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders (first_call_s: compile)")
    parser.add_argument("--max-batch", action="store_true", help="GPU: also find the largest batch that fits")
    parser.add_argument("--max-batch-limit", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--grids", type=int, nargs="+", default=[7, 14, 28])
    parser.add_argument("--match-batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=2048, help="feature width (C5 of ResNet-50: 2048)")
    parser.add_argument("--match-repeats", type=int, default=10)
    parser.add_argument("--images", default="datasets/photos")
    parser.add_argument("--data-batch", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--data-repeats", type=int, default=3)
    parser.add_argument("--data-epochs", type=int, default=3, help="data: epochs per measurement, from one loader")
    parser.add_argument("--decode", type=int, default=0, metavar="N", help="data: also time JPEG decoding of N files")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = {"step": bench_step, "match": bench_match, "data": bench_data}[args.part](args)
    result["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                         "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                         "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print_table(result)
    if args.json:
        atomic_write(args.json, lambda f: f.write(json.dumps(result, indent=2).encode()))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
