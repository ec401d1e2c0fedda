import importlib.util
import os
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


def load_tool(name):
    """A script of tools/ as a module, to call its main() in this process (interpreter start-up dominates a
    subprocess); the scripts import only installed packages, so nothing about sys.path changes."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(tool, *args):
    """A tool's ``main(argv)`` run in this process, its stdout and stderr captured: a CompletedProcess."""
    import contextlib
    import io
    import subprocess
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = tool.main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def write_images(folder, count=12, seed=0):
    """Smooth random colour fields (not white noise, so that features have structure), various sizes."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = 72 + 4 * (i % 5), 96 - 4 * (i % 3)
        small = rng.random((6, 8, 3)) * 255
        img = Image.fromarray(small.astype("uint8")).resize((w, h), Image.BICUBIC)
        path = os.path.join(folder, f"img_{i:02d}.{'jpg' if i % 2 else 'png'}")
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("images"))
    write_images(folder)
    return folder


@pytest.fixture
def tiny_cfg(image_folder, tmp_path):
    from pretrain.config import load_config
    return load_config(os.path.join(ROOT, "configs/pretrain/tiny_r18_cpu.yaml"),
                       ["DATA.ROOT", image_folder, "OUTPUT_DIR", str(tmp_path / "out")])
