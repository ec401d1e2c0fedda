"""Tiny detection datasets written by the tests: a PASCAL VOC layout and a COCO json with masks."""
import json
import os
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw


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
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    splits = {"trainval": [], "test": []}
    for i in range(train + test):
        name = f"{i:06d}"
        img, boxes = _scene(rng, size, 2)
        img.save(os.path.join(base, "JPEGImages", name + ".jpg"))
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = name + ".jpg"
        s = ET.SubElement(ann, "size")
        for tag, value in zip(("width", "height", "depth"), (*size, 3)):
            ET.SubElement(s, tag).text = str(value)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = classes[k % len(classes)]
            # The VOC evaluator reads all of pose, truncated and difficult.
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            box = ET.SubElement(obj, "bndbox")
            # VOC boxes are 1-based inclusive pixel indices.
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
                ET.SubElement(box, tag).text = str(value)
        ET.ElementTree(ann).write(os.path.join(base, "Annotations", name + ".xml"))
        splits["trainval" if i < train else "test"].append(name)
    for split, names in splits.items():
        with open(os.path.join(base, "ImageSets/Main", split + ".txt"), "w") as f:
            f.write("\n".join(names) + "\n")
    return base


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
