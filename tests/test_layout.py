"""The repository as a user meets it: the entry points the README calls run as commands."""
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_tool_with_a_shebang_is_executable():
    tools = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")) + glob.glob(os.path.join(ROOT, "tools", "*.sh")))
    with_shebang = []
    for path in tools:
        with open(path, "rb") as f:
            if f.read(2) == b"#!":
                with_shebang.append(path)
    assert len(with_shebang) >= 10
    assert [os.path.relpath(p, ROOT) for p in with_shebang if not os.access(p, os.X_OK)] == []


def module_imports(path: str, module: str) -> set:
    """The project modules (``pretrain.x``, ``transfer.y``) a file imports, at any depth of its code."""
    import ast
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import roi_heads` is a module
    return found


def project_modules() -> dict:
    modules = {}
    for package in ("pretrain", "transfer"):
        for path in glob.glob(os.path.join(ROOT, package, "*.py")):
            name = os.path.basename(path)[:-3]
            modules[package if name == "__init__" else f"{package}.{name}"] = path
    return modules


def test_no_import_cycle_between_project_modules_even_inside_functions():
    modules = project_modules()
    graph = {m: {i for i in module_imports(path, m) if i in modules and i != m} for m, path in modules.items()}
    state = {}

    def visit(m, trail):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", "import cycle: " + " -> ".join(trail[trail.index(m):] + [m])
        state[m] = "open"
        for n in sorted(graph[m]):
            visit(n, trail + [m])
        state[m] = "done"
    for m in sorted(graph):
        visit(m, [])
    assert "pretrain.hough" in graph["pretrain.matching"]  # the walk sees real edges


def test_conversion_tables_and_probes_import_without_detectron2():
    import subprocess
    import sys
    blocker = ("import importlib.abc, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] == 'detectron2':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r} (blocked)')\n"
               "sys.meta_path.insert(0, Block())\n")
    free = ["transfer", "transfer.weights", "transfer.results", "transfer.dense_probe", "transfer.stages",
            "transfer.release", "transfer.demo", "transfer.demo_plan", "transfer.demo_report"]
    free += [m for m in project_modules() if m.startswith("pretrain")]
    check = blocker + "".join(f"import {m}\n" for m in free) + (
        "try:\n    import transfer.trainer\nexcept ModuleNotFoundError as e:\n    print('trainer needs it:', e)\n")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainer needs it: No module named 'detectron2" in result.stdout  # the blocker works


def test_the_readme_layout_table_lists_every_module_once():
    import re
    with open(os.path.join(ROOT, "README.md")) as f:
        listed = re.findall(r"^\| `([a-z_]+/[a-z_0-9]+\.(?:py|sh))` \| [^|]+ \|$", f.read(), flags=re.M)
    on_disk = [os.path.relpath(p, ROOT) for folder in ("pretrain", "transfer", "tools")
               for p in glob.glob(os.path.join(ROOT, folder, "*.*")) if p.endswith((".py", ".sh"))
               and not p.endswith("__init__.py")]
    assert sorted(listed) == sorted(set(listed)), "a module is listed twice"
    assert sorted(listed) == sorted(on_disk)


def test_tools_start_without_a_third_party_deprecation_warning():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dense_probe.py"), "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0 and "usage:" in result.stdout
    assert "FutureWarning" not in result.stderr and "torch.jit.script" not in result.stderr


def test_a_tool_run_outside_the_environment_says_how_to_enter_it():
    import subprocess
    import sys
    # -S: no site-packages, as a Python without the environment's packages
    result = subprocess.run([sys.executable, "-S", os.path.join(ROOT, "tools", "convert.py"), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "convert.py runs in the toolkit's environment" in result.stderr and "bin/activate" in result.stderr
