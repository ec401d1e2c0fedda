"""Small generated datasets for plumbing checks (the tests, ``tools/gpu_check.py``): a PASCAL VOC layout, a COCO
json with masks, images with label maps, smooth colour images for pretraining. Never used for a number that is
reported."""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from transfer.data.voc_layout import make_layout, write_annotation, write_splits


def _scene(rng, size, count):
    """A background with ``count`` filled rectangles; returns the image and boxes (x0, y0, x1, y1)."""
    w, h = size
    img = Image.fromarray((rng.random((h // 8, w // 8, 3)) * 120 + 60).astype("uint8")).resize((w, h))
    draw = ImageDraw.Draw(img)
    boxes = []
    for _ in range(count):
        bw, bh = rng.integers(w // 5, w // 2), rng.integers(h // 5, h // 2)
        x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        boxes.append((int(x0), int(y0), int(x0 + bw), int(y0 + bh)))
    return img, boxes


def write_voc(root, year=2007, classes=("person", "car"), train=4, test=2, size=(128, 96), seed=0):
    """``root/VOC{year}`` with JPEGImages, Annotations and ImageSets/Main/{trainval,test}.txt."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, f"VOC{year}")
    make_layout(base)
    splits = {"trainval": [], "test": []}
    for i in range(train + test):
        name = f"{i:06d}"
        img, boxes = _scene(rng, size, 2)
        img.save(os.path.join(base, "JPEGImages", name + ".jpg"))
        write_annotation(os.path.join(base, "Annotations", name + ".xml"), name + ".jpg", size,
                         [(classes[k % len(classes)], box) for k, box in enumerate(boxes)])
        splits["trainval" if i < train else "test"].append(name)
    write_splits(base, splits)
    return base


def write_sem_seg(root, classes=2, train=4, test=2, size=(96, 64), seed=0):
    """``root/images/*.png``, ``root/labels/*.png`` (class indices: 0 background, rectangles of classes 1..K-1,
    a 255 frame around each) and ``root/{train,test}.txt``."""
    rng = np.random.default_rng(seed)
    for folder in ("images", "labels"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    splits = {"train": [], "test": []}
    for i in range(train + test):
        name = f"{i:04d}"
        img, boxes = _scene(rng, size, max(1, classes - 1))
        labels = np.zeros(size[::-1], np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            labels[y0:y1 + 1, x0:x1 + 1] = 255
            labels[y0 + 1:y1, x0 + 1:x1] = 1 + k % max(1, classes - 1)
        img.save(os.path.join(root, "images", name + ".png"))
        Image.fromarray(labels).save(os.path.join(root, "labels", name + ".png"))
        splits["train" if i < train else "test"].append(name)
    for split, names in splits.items():
        with open(os.path.join(root, split + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return root


def write_coco(folder, count=4, size=(128, 96), seed=0, classes=("box", "blob")):
    """``folder/images/*.jpg`` and ``folder/annotations.json`` with boxes and polygon masks."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, boxes = _scene(rng, size, 2)
        file_name = f"{i:04d}.jpg"
        img.save(os.path.join(folder, "images", file_name))
        images.append({"id": i + 1, "file_name": file_name, "width": size[0], "height": size[1]})
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": k % len(classes) + 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            })
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(classes)]}
    path = os.path.join(folder, "annotations.json")
    with open(path, "w") as f:
        json.dump(data, f)
    return path, os.path.join(folder, "images")


def write_images(folder, count=12, seed=0, scale=1):
    """Smooth random colour fields (not white noise, so that features have structure), various sizes (about
    72-96 px times ``scale``)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = (72 + 4 * (i % 5)) * scale, (96 - 4 * (i % 3)) * scale
        small = rng.random((6, 8, 3)) * 255
        img = Image.fromarray(small.astype("uint8")).resize((w, h), Image.BICUBIC)
        path = os.path.join(folder, f"img_{i:02d}.{'jpg' if i % 2 else 'png'}")
        img.save(path)
        paths.append(path)
    return paths


def resnet_state(depth, seed=0):
    """A torchvision ResNet state_dict with randomised BN statistics (so that a swapped tensor shows)."""
    import torch
    import torchvision
    torch.manual_seed(seed)
    model = torchvision.models.__dict__[f"resnet{depth}"]()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    return model.state_dict()


def write_broken_files(folder):
    """One good image and the four kinds of bad file a crawl leaves behind."""
    os.makedirs(folder, exist_ok=True)
    good = write_images(os.path.join(folder, "good"), count=2)
    with open(good[1], "rb") as src, open(os.path.join(folder, "truncated.jpg"), "wb") as dst:
        dst.write(src.read()[:300])  # a cut-off download: valid header, no end marker
    os.unlink(good[1])
    open(os.path.join(folder, "empty.png"), "wb").close()
    with open(os.path.join(folder, "text.jpg"), "w") as f:
        f.write("this is not an image\n")
    os.makedirs(os.path.join(folder, "x.png"))
