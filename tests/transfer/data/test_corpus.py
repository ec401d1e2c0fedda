"""transfer/data/corpus.py on local fake packages (a .deb built here, a wheel): stills and every video frame stored
small and RGB, the list after the demo's, checksums, idempotence, and what a missing step says."""
import hashlib
import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from PIL import Image

from transfer.data import corpus
from transfer.data.fetch import FetchError


def write_video(path, frames, fourcc):
    import cv2
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10, (96, 64))
    assert writer.isOpened(), path
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
    writer.release()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def fake_sources(tmp_path, monkeypatch):
    """A .deb with a large photo, a grey photo, a drawing (not listed) and a 7-frame AVI; a wheel with a 5-frame
    MP4; both in the cache; the module's sources pointed at them."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed: the larger corpus is built from Debian packages")
    tree = tmp_path / "deb"
    data = tree / "usr/share/fake"
    data.mkdir(parents=True)
    Image.new("RGB", (1200, 800), (200, 100, 50)).save(data / "big.jpg")
    Image.new("L", (300, 200), 128).save(data / "grey.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(data / "logo.png")
    write_video(str(data / "street.avi"), 7, "MJPG")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text("Package: fake-photos\nVersion: 1.0-1\nArchitecture: all\n"
                                         "Maintainer: nobody <nobody@example.org>\nDescription: test photos\n")
    cache = tmp_path / "root" / "wheels"
    cache.mkdir(parents=True)
    deb = cache / "fake-photos_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True,
                   capture_output=True)
    write_video(str(tmp_path / "bikes.mp4"), 5, "mp4v")
    wheel = cache / "fake_video-2.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tmp_path / "bikes.mp4", "fakevideo/data/bikes.mp4")
    monkeypatch.setattr(corpus, "DEBIAN", [{
        "package": "fake-photos", "version": "1.0-1", "sha256": sha256(deb), "license": "test",
        "stills": ["./usr/share/fake/big.jpg", "./usr/share/fake/grey.png"],
        "videos": ["./usr/share/fake/street.avi"], "dest": "corpus/fake"}])
    monkeypatch.setattr(corpus, "WHEELS", [{
        "package": "fake-video", "version": "2.0", "sha256": sha256(wheel), "license": "test",
        "members": ["fakevideo/data/bikes.mp4"], "dest": "corpus/video"}])
    root = tmp_path / "root"
    (root / "pretrain_images.txt").write_text("photos/a b.jpg\nphotos/c.jpg\n")
    for name in ("a b.jpg", "c.jpg"):
        (root / "photos").mkdir(exist_ok=True)
        Image.new("RGB", (32, 32)).save(root / "photos" / name)
    return root, deb


def test_stills_and_every_frame_follow_the_demos_images_small_and_rgb(fake_sources):
    root, _ = fake_sources
    lines = corpus.fetch_corpus(str(root))
    assert lines[:2] == ["photos/a b.jpg", "photos/c.jpg"]  # names with spaces survive
    assert lines[2:4] == ["corpus/fake/big.jpg", "corpus/fake/grey.jpg"]  # listed stills only, not logo.png
    assert lines[4:] == [f"corpus/fake/street_{i:04d}.jpg" for i in range(7)] + \
        [f"corpus/video/bikes_{i:04d}.jpg" for i in range(5)]
    assert (root / corpus.LIST).read_text().splitlines() == lines
    for line in lines[2:]:
        with Image.open(root / line) as image:
            assert image.mode == "RGB" and min(image.size) <= corpus.SHORT_SIDE
    with Image.open(root / "corpus/fake/big.jpg") as image:
        assert image.size == (768, 512)  # 1200 x 800 scaled to a 512 px shorter side
    with Image.open(root / "corpus/fake/street_0000.jpg") as image:
        assert image.size == (96, 64)  # small frames are not enlarged


def test_a_second_call_changes_nothing(fake_sources, capsys):
    root, _ = fake_sources
    first = corpus.fetch_corpus(str(root))
    stamp = os.path.getmtime(root / corpus.LIST)
    assert corpus.fetch_corpus(str(root)) == first
    assert "up to date" in capsys.readouterr().out and os.path.getmtime(root / corpus.LIST) == stamp


def test_a_tampered_package_or_a_missing_demo_list_is_refused(fake_sources):
    root, deb = fake_sources
    with open(deb, "ab") as f:
        f.write(b"x")
    with pytest.raises(FetchError, match=r"fake-photos_1.0-1_all.deb: sha256 .* does not match the pinned"):
        corpus.fetch_corpus(str(root))
    assert not (root / corpus.LIST).exists()
    (root / "pretrain_images.txt").unlink()
    with pytest.raises(FetchError, match=r"pretrain_images.txt is missing: run tools/fetch_data.py without"):
        corpus.fetch_corpus(str(root))


def test_a_file_that_is_not_a_video_is_named(tmp_path):
    bad = tmp_path / "broken.avi"
    bad.write_bytes(b"not a video")
    with pytest.raises(FetchError, match="broken.avi: no frame could be decoded"):
        corpus.store_frames(str(bad), str(tmp_path / "out"))


def test_the_pinned_opencv_photos_are_named_once():
    assert len(corpus.OPENCV_PHOTOS) == len(set(corpus.OPENCV_PHOTOS))


def test_a_machine_without_debians_tools_is_told_so(fake_sources, monkeypatch):
    root, _ = fake_sources
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None if name == "apt-get" else "/usr/bin/" + name)
    with pytest.raises(FetchError, match="apt-get not found: the larger corpus comes from Debian packages"):
        corpus.fetch_corpus(str(root))
