"""Images for pretraining: where they come from, which of them can be read, and the order they are seen in.

Sources (``DATA.ROOT``, several joined with ``os.pathsep``): a folder tree of images searched recursively
(ImageNet-style class folders or a flat COCO ``train2017/`` alike), or a text file listing one image path
per line (relative paths are taken from the list's folder).
"""
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

from pretrain.data.transforms import TwoViewTransform

logger = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Smaller images are skipped: the smallest crop (20% of the area) of a 32 px image is about 14 px wide, already
# upsampled 16 times to a 224 px view; a 1 x 1 image is a constant colour field with no structure to match.
MIN_IMAGE_SIDE = 32


class DataError(RuntimeError):
    """No usable image: raised before any training work."""


def list_images(root: str) -> List[str]:
    """Every image path named by ``root`` (folders recursive, list files line by line), sorted per source."""
    paths: List[str] = []
    for source in [s for s in root.split(os.pathsep) if s]:
        if os.path.isdir(source):
            found = []
            for folder, dirs, files in os.walk(source, followlinks=True):
                # A folder named like an image (x.png/) is listed too, so that it is reported, not ignored.
                names = files + [d for d in dirs if d.lower().endswith(IMAGE_EXTENSIONS)]
                found.extend(os.path.join(folder, f) for f in names if f.lower().endswith(IMAGE_EXTENSIONS))
            paths.extend(sorted(found))
        elif os.path.isfile(source) and source.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"DATA.ROOT: {source!r} is a single image; give the folder that holds the images, or a "
                            "text file with one image path per line")
        elif os.path.isfile(source):
            base = os.path.dirname(os.path.abspath(source))
            try:
                with open(source, encoding="utf-8") as f:
                    lines = [line.strip() for line in f]
            except UnicodeDecodeError:
                raise DataError(f"DATA.ROOT: {source!r} is neither a folder of images nor a text file listing "
                                "image paths (it is not UTF-8 text)") from None
            paths.extend(os.path.join(base, p) for p in lines if p and not p.startswith("#"))
        else:
            raise DataError(f"DATA.ROOT: {source!r} is neither a folder of images nor a list file")
    return paths


def check_image(path: str) -> Optional[str]:
    """Why ``path`` cannot be used as an image (None if it can). Cheap: header and end markers only."""
    try:
        if os.path.isdir(path):
            return "is a directory"
        size = os.path.getsize(path)
        if size == 0:
            return "is empty (0 bytes)"
        with Image.open(path) as img:
            fmt, (width, height) = img.format, img.size
            img.verify()
        if min(width, height) < MIN_IMAGE_SIDE:
            return f"is too small ({width} x {height}; at least {MIN_IMAGE_SIDE} px on each side are needed)"
        with open(path, "rb") as f:
            f.seek(max(0, size - 12))
            tail = f.read()
        # A cut-off download still has a valid header; its end marker is missing.
        if fmt == "JPEG" and b"\xff\xd9" not in tail:
            return "is truncated (no JPEG end marker)"
        if fmt == "PNG" and b"IEND" not in tail:
            return "is truncated (no PNG end chunk)"
    except PermissionError:
        return "cannot be read (permission denied)"
    except OSError as e:
        return f"is not a readable image ({e.__class__.__name__}: {e})"
    except Exception as e:  # PIL raises many types for broken files
        return f"is not a readable image ({e.__class__.__name__}: {e})"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from what files hold: 16- and 32-bit grey scaled (Pillow's convert clips them to white),
    transparency composited over white (palette and grey images included), CMYK through Pillow's conversion."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max() <= 65535 else 2.0 ** 31 - 1
        return Image.fromarray(np.round(values.clip(0, top) * 255.0 / top).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0
        return Image.fromarray(np.round(values.clip(0, top) * 255.0 / top).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def readable_images(paths: Sequence[str], workers: int = 8) -> List[str]:
    """Keep the images that can be read; warn once per skipped file, then give the count."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = list(pool.map(check_image, paths))
    kept = [p for p, problem in zip(paths, problems) if problem is None]
    skipped = [(p, problem) for p, problem in zip(paths, problems) if problem is not None]
    for path, problem in skipped:
        logger.warning("skipping %s: it %s", path, problem)
    if skipped:
        logger.warning("skipped %d of %d files that are not readable images", len(skipped), len(paths))
    return kept


class TwoViewDataset(Dataset):
    """Two augmented views and their geometry per image. Items are addressed by ``(index, epoch)`` so that
    the augmentation of a sample is fixed by (seed, epoch, index) whatever worker draws it."""

    def __init__(self, root: str, transform: TwoViewTransform, seed: int = 0, check: bool = True):
        paths = list_images(root)
        if not paths:
            raise DataError(f"DATA.ROOT {root!r}: no image files found (extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.paths = readable_images(paths) if check else paths
        if not self.paths:
            raise DataError(f"DATA.ROOT {root!r}: none of the {len(paths)} files is a readable image")
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        # Pillow raises on truncated data by default; a file that passed the cheap check but still fails to
        # decode is replaced by the next image rather than stopping a days-long run.
        for attempt in range(len(self.paths)):
            path = self.paths[(index + attempt) % len(self.paths)]
            try:
                with Image.open(path) as img:
                    return to_rgb(img)
            except Exception as e:
                logger.warning("skipping %s while loading: %s", path, e)
        raise DataError("no image of the dataset can be decoded")

    def __getitem__(self, key: Tuple[int, int]):
        index, epoch = key
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        sample = self.transform(self.load(index), rng)
        sample["index"] = index
        return sample


class EpochSampler(DistributedSampler):
    """torch's DistributedSampler (shuffled, drop_last) that yields ``(index, epoch)`` and can start in the
    middle of an epoch, so that a resumed run sees exactly the samples the uninterrupted run would."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int, epoch: int = 0, start: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        for position, index in enumerate(super().__iter__()):
            if position >= self.start:
                yield index, self.epoch

    def __len__(self) -> int:
        return self.num_samples - self.start
