"""The Detectron2 v0.6 source distribution on PyPI (``pb1-detectron2`` 0.6: upstream v0.6 byte for byte except the
package name, without the C++ sources of ``detectron2/_C``): finding it on a package index, checking its sha256,
and the patches that make it install and run here without a compiler toolchain (tools/install_detectron2.py).

Every patch asserts the text it replaces, so a different tarball fails loudly instead of half-working.
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from pretrain.runtime.files import sha256_of

PACKAGE, VERSION = "pb1-detectron2", "0.6"
SDIST = f"{PACKAGE}-{VERSION}.tar.gz"
SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
DEFAULT_INDEX = "https://pypi.org/simple"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "houghcl"

IMPORT_CHECK = (
    "import detectron2, detectron2.layers, detectron2.modeling, detectron2.evaluation, importlib, inspect, os;"
    "from detectron2 import model_zoo;"
    "launch = importlib.import_module('detectron2.engine.launch');"
    "model_zoo.get_config_file('COCO-Detection/faster_rcnn_R_50_C4_1x.yaml');"
    # An earlier install by this script (it has the _C stand-in) that predates a patch is redone.
    "standin = os.path.exists(os.path.join(os.path.dirname(detectron2.__file__), '_C.py'));"
    "defaults = importlib.import_module('detectron2.engine.defaults');"
    "assert not standin or 'is_cuda' in inspect.getsource(defaults.create_ddp_model), 'older patched install';"
    "print(detectron2.__version__, detectron2.__file__)"
)

C_STANDIN = '''"""Stand-in for detectron2's compiled ops, which this installation does not build.

ROIAlign and NMS come from torchvision. Rotated boxes, deformable convolution and the fast COCO evaluator
need the compiled module: install detectron2 from source (its INSTALL.md) to use them.
"""


def get_compiler_version():
    return "none: detectron2._C is a pure-Python stand-in (compiled ops not built)"


def get_cuda_version():
    return "none: compiled ops not built"


def has_cuda():
    return False


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)

    def unavailable(*args, **kwargs):
        raise RuntimeError(
            f"detectron2._C.{name} is not available: this detectron2 was installed without its compiled ops "
            "(rotated boxes, deformable conv, fast COCO eval). Install detectron2 from source to use them."
        )

    return unavailable
'''

NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|str)\b(?!_)")
NUMPY_FILES = [
    "detectron2/data/build.py",
    "detectron2/data/datasets/pascal_voc.py",
    "detectron2/evaluation/pascal_voc_evaluation.py",
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/structures/masks.py",
    "detectron2/utils/visualizer.py",
    "detectron2/utils/video_visualizer.py",
]

# (file, old text, new text, expected number of occurrences)
PATCHES = [
    ("setup.py", "ext_modules=get_extensions(),", "ext_modules=[],", 1),
    ("setup.py", 'cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},', "", 1),
    ("setup.py", 'find_packages(exclude=("configs", "tests*"))',
     'find_packages(exclude=("configs", "tests*", "tools", "tools.*"))', 1),
    ("setup.py", 'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
     'package_data={"detectron2.model_zoo": ["configs/*.yaml", "configs/**/*.yaml", "configs/**/*.py"]},', 1),
    ("setup.py", '"black==21.4b2",', '"black",', 1),
    ("detectron2/model_zoo/model_zoo.py", "import pkg_resources\n", "", 1),
    ("detectron2/model_zoo/model_zoo.py",
     'cfg_file = pkg_resources.resource_filename(\n        "detectron2.model_zoo", '
     'os.path.join("configs", config_path)\n    )',
     'cfg_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", config_path)', 1),
    ("detectron2/evaluation/coco_evaluation.py", "use_fast_impl=True,", "use_fast_impl=False,", 2),
    ("detectron2/data/transforms/transform.py", "interp=Image.LINEAR", "interp=Image.BILINEAR", 1),
    # Several processes without a GPU (as upstream does since v0.6): Gloo instead of asserting CUDA.
    ("detectron2/engine/launch.py",
     '    assert torch.cuda.is_available(), "cuda is not available. Please check your installation."\n',
     "    has_gpu = torch.cuda.is_available()\n", 1),
    ("detectron2/engine/launch.py", 'backend="NCCL",', 'backend="NCCL" if has_gpu else "GLOO",', 1),
    ("detectron2/engine/launch.py",
     "    assert num_gpus_per_machine <= torch.cuda.device_count()\n    torch.cuda.set_device(local_rank)\n",
     "    if has_gpu:\n        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
     "        torch.cuda.set_device(local_rank)\n", 1),
    # DistributedDataParallel takes device_ids only for GPU modules.
    ("detectron2/engine/defaults.py", '    if "device_ids" not in kwargs:\n',
     '    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:\n', 1),
]


class InstallError(RuntimeError):
    pass


def step(message):
    print(f"[install_detectron2] {message}", flush=True)


def existing_detectron2():
    """Version and path of an importable, working detectron2 in this Python, or None."""
    result = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def index_urls():
    urls = [os.environ.get("PIP_INDEX_URL")]
    result = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                            capture_output=True, text=True)
    urls.append(result.stdout.strip() if result.returncode == 0 else None)
    urls.append(DEFAULT_INDEX)
    return [u.rstrip("/") for u in dict.fromkeys(urls) if u and u.startswith("http")]


def download_sdist(destination):
    """Find the sdist on a package index's simple page and download it (pip download cannot: the sdist's
    metadata declares a direct URL dependency, which pip refuses for a PyPI distribution)."""
    errors = []
    for index in index_urls():
        page_url = f"{index}/{PACKAGE}/"
        try:
            with urllib.request.urlopen(page_url, timeout=60) as response:
                page = response.read().decode("utf-8", "replace")
            links = [href for href in re.findall(r'href="([^"]+)"', page) if SDIST in href]
            if not links:
                raise InstallError(f"{SDIST} is not listed on {page_url}")
            url = urllib.parse.urljoin(page_url, links[0].split("#")[0])
            step(f"downloading {url}")
            tmp = destination.with_suffix(".part")
            with urllib.request.urlopen(url, timeout=300) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
            os.replace(tmp, destination)
            return
        except (OSError, InstallError) as e:
            errors.append(f"{page_url}: {e}")
    raise InstallError("could not download the detectron2 sdist:\n  " + "\n  ".join(errors))


def fetch_sdist(sdist):
    if sdist is None:
        CACHE.mkdir(parents=True, exist_ok=True)
        sdist = CACHE / SDIST
        if not sdist.exists():
            download_sdist(sdist)
    sdist = Path(sdist)
    if not sdist.is_file():
        raise InstallError(f"{sdist}: no such file")
    actual = sha256_of(sdist)
    if actual != SHA256:
        raise InstallError(f"{sdist}: sha256 {actual} does not match the expected {SHA256}")
    step(f"sdist {sdist} verified (sha256 {SHA256[:12]}...)")
    return sdist


def replace_exactly(path, old, new, count):
    if not path.is_file():
        raise InstallError(f"patch target {path} is missing. Is this the pb1-detectron2 0.6 tarball?")
    text = path.read_text()
    found = text.count(old)
    if found != count:
        raise InstallError(f"patch target not found as expected in {path}: {old!r} occurs {found} times, "
                           f"expected {count}. Is this the pb1-detectron2 0.6 tarball?")
    path.write_text(text.replace(old, new))


def patch_tree(root):
    for relpath, old, new, count in PATCHES:
        replace_exactly(root / relpath, old, new, count)
    for relpath in NUMPY_FILES:
        path = root / relpath
        text, n = NUMPY_ALIAS.subn(lambda m: m.group(1), path.read_text())
        if n == 0:
            raise InstallError(f"patch target not found in {path}: no removed NumPy alias (np.int, ...) to fix")
        path.write_text(text)
    c_module = root / "detectron2" / "_C.py"
    if c_module.exists():
        raise InstallError(f"{c_module} already exists: unexpected tarball content")
    c_module.write_text(C_STANDIN)
    step(f"patched {len(PATCHES)} places, NumPy aliases in {len(NUMPY_FILES)} files, added the _C stand-in")


def extract_patched(sdist, folder):
    """The sdist's tree under ``folder``, patched; returns its root."""
    with tarfile.open(sdist) as tar:
        tar.extractall(folder, filter="data")
    root = Path(folder) / f"{PACKAGE}-{VERSION}"
    patch_tree(root)
    return root


def install(sdist):
    with tempfile.TemporaryDirectory(prefix="detectron2-") as tmp:
        root = extract_patched(sdist, tmp)
        step("pip install --no-build-isolation (pure Python, no compiled ops)")
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation", str(root)])
        if result.returncode != 0:
            raise InstallError(f"pip install of the patched tree failed (exit {result.returncode})")
