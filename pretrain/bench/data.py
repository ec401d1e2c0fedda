"""The data pipeline, timed for tools/benchmark.py ``data``: this toolkit's two-view pipeline against MoCo-v2's plain
one, the device-side views, JPEG decoding."""
import statistics
import time

import torch

from pretrain.backbone import IMAGENET_MEAN, IMAGENET_STD
from pretrain.bench.timing import interleaved


def bench_data(args):
    import torchvision.transforms as T
    from PIL import Image, ImageFilter
    from torch.utils.data import DataLoader, Dataset

    from pretrain.data.device_views import DecodedDataset
    from pretrain.data.images import EpochSampler, TwoViewDataset
    from pretrain.data.transforms import TwoViewTransform

    ours = TwoViewDataset(args.images, TwoViewTransform(args.size))
    if len(ours) < args.data_batch:  # every loader drops the last partial batch: nothing would be timed
        raise ValueError(f"{args.images}: {len(ours)} readable images, fewer than one batch of --data-batch "
                         f"{args.data_batch}; give more images or a smaller --data-batch")

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
    from pretrain.data.device_views import DecodedDataset, DeviceViews
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
