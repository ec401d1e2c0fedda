"""PASCAL VOC files without Detectron2: reading annotations strictly (one clear line per bad file), writing them
(the fetched tree tiles, the synthetic sets), and the split lists."""
import os
from collections import Counter
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple
from xml.etree import ElementTree as ET

Box = Tuple[float, float, float, float]  # xmin, ymin, xmax, ymax as written: 1-based, inclusive


class VOCError(ValueError):
    """A VOC file that cannot be used as given; the message names the file and what to do."""


class VOCObject(NamedTuple):
    name: str
    box: Box
    difficult: bool


def split_ids(dirname: str, split: str) -> List[str]:
    path = os.path.join(dirname, "ImageSets", "Main", split + ".txt")
    if not os.path.exists(path):
        raise VOCError(f"{dirname}: not a VOC layout for split {split!r}, {path} is missing")
    with open(path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise VOCError(f"{path}: lists no image; write the split's image ids, one per line")
    twice = sorted(image_id for image_id, n in Counter(ids).items() if n > 1)
    if twice:  # Detectron2 would train on it twice and score it twice (a perfect detector: AP below 100)
        raise VOCError(f"{path}: lists {len(twice)} image ids more than once, e.g. {', '.join(twice[:3])}; "
                       "list each image once")
    return ids


def read_annotation(path: str, need_size: bool = True) -> Tuple[Optional[Tuple[int, int]], List[VOCObject]]:
    """``((width, height), objects)`` of one annotation file; a malformed file is a VOCError naming it. Detectron2
    reads ``<size>`` of every annotation; raw files read only for their boxes may lack it (``need_size``)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise VOCError(f"{path}: not a valid XML file ({e}); fix or remove the annotation") from None
    except FileNotFoundError:
        raise VOCError(f"{path}: no such annotation file (its image is listed in the split file)") from None
    try:
        size = tuple(int(float(root.find("size").find(t).text)) for t in ("width", "height"))
    except (AttributeError, TypeError, ValueError):
        if need_size:
            raise VOCError(f"{path}: no <size> with <width> and <height>; every VOC annotation needs one") from None
        size = None
    if size is not None and min(size) <= 0:
        raise VOCError(f"{path}: <size> says {size[0]} x {size[1]}; write the image's width and height there")
    objects = []
    for k, obj in enumerate(root.findall("object")):
        try:
            name = obj.find("name").text.strip()
            b = obj.find("bndbox")
            box = tuple(float(b.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise VOCError(f"{path}: object {k + 1} has no <name> or no numeric <bndbox> "
                           "(xmin, ymin, xmax, ymax)") from None
        difficult = obj.find("difficult")
        objects.append(VOCObject(name, box, difficult is not None and (difficult.text or "0").strip() == "1"))
    return size, objects


def box_problem(box: Box, size: Tuple[int, int]) -> str:
    """Why a box cannot be trusted ('' if it can): inverted, or beyond the image. VOC boxes are 1-based and
    inclusive (1 <= xmin <= xmax <= width); one pixel of slack either way, for files written 0-based."""
    xmin, ymin, xmax, ymax = box
    width, height = size
    if xmax < xmin or ymax < ymin:
        return "inverted"
    if xmin < 0 or ymin < 0 or xmax > width + 1 or ymax > height + 1:
        return f"outside the {width} x {height} image"
    return ""


def scan_split(dirname: str, split: str) -> List[str]:
    """The sorted class names of a split, after checking every annotation it lists. Boxes that are inverted or
    outside their image are refused (Detectron2 would train on them as written and the VOC evaluator would score
    against them, which moves the AP): the error counts them and names the first files."""
    names, bad = set(), []
    for image_id in split_ids(dirname, split):
        path = os.path.join(dirname, "Annotations", image_id + ".xml")
        size, objects = read_annotation(path)
        names.update(o.name for o in objects)
        bad += [f"{path} ({o.name} {o.box}: {why})" for o in objects for why in [box_problem(o.box, size)] if why]
    if bad:
        raise VOCError(f"{dirname} split {split}: {len(bad)} boxes are inverted or outside their image, e.g. "
                       f"{'; '.join(bad[:3])}; fix the annotations (clip them to the image or delete them)")
    return sorted(names)


def voc_records(dirname: str, split: str, classes: Sequence[str], box_mode=0) -> List[Dict]:
    """The records Detectron2's ``load_voc_instances`` makes (boxes as ``xmin - 1, ymin - 1, xmax, ymax``, every
    object, difficult ones too), read strictly, and for a split of one image too (Detectron2 0.6 fails on it).
    Objects of classes not in ``classes`` are left out. ``box_mode``: Detectron2's ``BoxMode.XYXY_ABS``."""
    records = []
    for image_id in split_ids(dirname, split):
        (width, height), objects = read_annotation(os.path.join(dirname, "Annotations", image_id + ".xml"))
        records.append({
            "file_name": os.path.join(dirname, "JPEGImages", image_id + ".jpg"), "image_id": image_id,
            "height": height, "width": width,
            "annotations": [{"category_id": list(classes).index(o.name), "bbox": [x0 - 1, y0 - 1, x1, y1],
                             "bbox_mode": box_mode}
                            for o in objects if o.name in classes for x0, y0, x1, y1 in [o.box]]})
    return records


def write_annotation(path: str, filename: str, size: Tuple[int, int], objects: Iterable[Tuple[str, Box]]) -> None:
    """One annotation file; ``objects`` are (name, (x0, y0, x1, y1)) in 0-based pixel edges, written the VOC
    way (1-based inclusive indices: Detectron2 subtracts 1 from xmin and ymin when it reads them)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = filename
    s = ET.SubElement(ann, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(s, tag).text = str(value)
    for name, (x0, y0, x1, y1) in objects:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = name
        # The VOC evaluator reads all of pose, truncated and difficult.
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        b = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ET.SubElement(b, tag).text = str(int(round(value)))
    ET.ElementTree(ann).write(path)


def make_layout(base: str) -> None:
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)


def write_splits(base: str, splits: Dict[str, Sequence[str]]) -> None:
    for split, ids in splits.items():
        with open(os.path.join(base, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")
