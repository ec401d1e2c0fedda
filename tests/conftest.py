import importlib.util
import os
import sys

import pytest

from transfer.data.synthetic import write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
PYTHON = sys.executable


_TOOLS = {}


def load_tool(name):
    """A script of tools/ as a module, to call its main() in this process (interpreter start-up dominates a
    subprocess); the scripts import installed packages and tools/_env.py, found as a script finds it."""
    if TOOLS not in sys.path:
        sys.path.append(TOOLS)
    if name in _TOOLS:
        return _TOOLS[name]
    spec = importlib.util.spec_from_file_location(f"tools_{name}", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _TOOLS[name] = module
    return module


def run_main(tool, *args):
    """A tool's ``main(argv)`` run in this process, its stdout and stderr captured: a CompletedProcess (an argparse
    error's exit status included)."""
    import contextlib
    import io
    import subprocess
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = tool.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


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


@pytest.fixture(scope="session")
def run_tool():
    """``run_tool(name, *args)``: tools/NAME.py's ``main(argv)`` in this process, output captured."""
    return lambda name, *args: run_main(load_tool(name), *args)


@pytest.fixture(scope="session")
def convert(run_tool):
    """``convert(*args)``: tools/convert.py in this process."""
    return lambda *args: run_tool("convert", *args)


@pytest.fixture(scope="session")
def run_script():
    """``run_script(name, *args, env=None, timeout=900)``: tools/NAME as a user runs it, in a new process."""
    import subprocess

    def run(name, *args, env=None, timeout=900):
        return subprocess.run([PYTHON, os.path.join(TOOLS, name), *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, timeout=timeout, env={**os.environ, **(env or {})})
    return run
