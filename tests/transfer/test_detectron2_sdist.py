"""The patches that install Detectron2 v0.6 here: each asserts the text it replaces, and the installed Detectron2
carries every one of them."""
import os
from pathlib import Path

import pytest

from transfer import detectron2_sdist as sdist


def fake_tree(root: Path, skip=None) -> Path:
    """A tree holding exactly the texts the patches expect (each as often as expected), and the NumPy aliases."""
    texts = {}
    for relpath, old, _, count in sdist.PATCHES:
        if (relpath, old) != skip:
            texts.setdefault(relpath, []).extend([old] * count)
    for relpath in sdist.NUMPY_FILES:
        texts.setdefault(relpath, []).append("x = np.int(3) + np.float(1.0)\ny = np.int64(3)\n")
    for relpath, parts in texts.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n# between\n".join(parts))
    return root


def test_every_patch_applies_to_the_text_it_expects(tmp_path):
    root = fake_tree(tmp_path)
    sdist.patch_tree(root)
    for relpath, old, new, count in sdist.PATCHES:
        text = (root / relpath).read_text()
        assert text.count(new) >= count if new else old not in text
    numpy_file = (root / sdist.NUMPY_FILES[0]).read_text()
    assert "x = int(3) + float(1.0)" in numpy_file and "np.int64(3)" in numpy_file  # only the removed aliases
    assert "def __getattr__" in (root / "detectron2" / "_C.py").read_text()


def test_a_tarball_without_an_expected_text_or_file_fails_naming_it(tmp_path):
    relpath, old, _, _ = sdist.PATCHES[0]  # setup.py: other patches keep the file there
    with pytest.raises(sdist.InstallError, match=rf"{relpath}.*occurs 0 times, expected 1.*pb1-detectron2 0.6"):
        sdist.patch_tree(fake_tree(tmp_path / "text", skip=(relpath, old)))
    relpath, old, _, _ = sdist.PATCHES[-1]  # the only patch of detectron2/engine/defaults.py: no such file
    with pytest.raises(sdist.InstallError, match=rf"{relpath} is missing"):
        sdist.patch_tree(fake_tree(tmp_path / "file", skip=(relpath, old)))


def test_an_sdist_with_another_sha256_is_refused(tmp_path):
    wrong = tmp_path / sdist.SDIST
    wrong.write_bytes(b"not the tarball")
    with pytest.raises(sdist.InstallError, match=r"sha256 .* does not match the expected"):
        sdist.fetch_sdist(wrong)
    with pytest.raises(sdist.InstallError, match="no such file"):
        sdist.fetch_sdist(tmp_path / "missing.tar.gz")


def test_the_installed_detectron2_carries_every_patch_of_its_package():
    detectron2 = pytest.importorskip("detectron2")
    site = Path(os.path.dirname(detectron2.__file__)).parent
    if not (site / "detectron2" / "_C.py").exists():
        pytest.skip("detectron2 here was not installed by tools/install_detectron2.py (it has compiled ops)")
    patched = [(relpath, new) for relpath, _, new, _ in sdist.PATCHES if relpath.startswith("detectron2/") and new]
    assert len(patched) >= 7
    missing = [f"{relpath}: {new!r}" for relpath, new in patched if new not in (site / relpath).read_text()]
    assert missing == []
    for relpath in sdist.NUMPY_FILES:
        assert sdist.NUMPY_ALIAS.search((site / relpath).read_text()) is None, relpath


def test_the_installed_detectron2_is_the_patched_sdist_file_for_file(tmp_path):
    detectron2 = pytest.importorskip("detectron2")
    site = Path(os.path.dirname(detectron2.__file__)).parent
    cached = sdist.CACHE / sdist.SDIST
    if not cached.exists() or not (site / "detectron2" / "_C.py").exists():
        pytest.skip("no cached sdist, or detectron2 here was not installed by tools/install_detectron2.py")
    root = sdist.extract_patched(sdist.fetch_sdist(cached), tmp_path)
    files = sorted({relpath for relpath, *_ in sdist.PATCHES if relpath.startswith("detectron2/")}
                   | set(sdist.NUMPY_FILES) | {"detectron2/_C.py"})
    assert [f for f in files if (root / f).read_bytes() != (site / f).read_bytes()] == []
