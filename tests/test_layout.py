"""The repository as a user meets it: the entry points the README calls run as commands."""
import glob
import os

from .conftest import ROOT


def test_every_tool_with_a_shebang_is_executable():
    tools = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "tools", "*.sh")))
    with_shebang = []
    for path in tools:
        with open(path, "rb") as f:
            if f.read(2) == b"#!":
                with_shebang.append(path)
    assert len(with_shebang) >= 10
    assert [os.path.relpath(p, ROOT) for p in with_shebang if not os.access(p, os.X_OK)] == []
