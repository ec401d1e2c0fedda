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
    """Every module of the two packages, at every depth: ``transfer.data.prepare.voc`` as well as ``transfer``."""
    modules = {}
    for package in ("pretrain", "transfer"):
        for path in glob.glob(os.path.join(ROOT, package, "**", "*.py"), recursive=True):
            name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
            modules[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return modules


# The floors of the house, lowest first: a module imports from its own floor or below, never from above. Within a
# floor the packages do not lean on each other except as the cycle test allows. A new module must find its floor here.
FLOORS = [
    ("pretrain", "pretrain.runtime"),               # atomic files, lock, numerics, processes, provenance
    ("pretrain.backbone",),                         # the one ResNet forward and weights from any project
    ("pretrain.data",),                             # images -> views + geometry
    ("pretrain.matchers",),                         # the positive-selection table and its matchers
    ("pretrain.config", "pretrain.builder", "pretrain.checkpoint", "pretrain.run_folder"),  # the model and its run
    ("pretrain.engine", "pretrain.main"),           # the loop and the entry point
    ("pretrain.evaluation",),                       # matching accuracy on real view pairs
    ("pretrain.bench",),                            # timing
    ("transfer", "transfer.results", "transfer.weights", "transfer.release",  # the shared ground of the transfer
     "transfer.detectron2_sdist"),
    ("transfer.data",),                             # datasets, checks, layouts, preparation
    ("transfer.segmentation",),                     # the FCN-D8 model and its mapper
    ("transfer.finetune",),                         # Detectron2 fine-tuning and the frozen detection probe
    ("transfer.readout",),                          # frozen readouts without detection training
    ("transfer.pipeline",),                         # demo, study, GPU check, jobs
    ("transfer.bench",),                            # timing
]


def floor_of(module: str) -> int:
    best = None
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (level, prefix)
    assert best is not None, f"{module} has no floor in tests/test_layout.py FLOORS: place it"
    return best[0]


def import_graph() -> dict:
    modules = project_modules()
    return {m: {i for i in module_imports(path, m) if i in modules and i != m} for m, path in modules.items()}


def test_module_discovery_reaches_every_depth():
    modules = project_modules()
    assert "transfer.data.prepare.voc" in modules and "pretrain.matchers.hough" in modules
    assert "transfer.data.prepare" in modules and "pretrain" in modules


def test_no_import_runs_up_a_floor():
    upward = [f"{m} (floor {floor_of(m)}) imports {n} (floor {floor_of(n)})"
              for m, deps in sorted(import_graph().items()) for n in sorted(deps) if floor_of(n) > floor_of(m)]
    assert upward == []


def test_no_module_holds_two_jobs():
    long = [f"{os.path.relpath(p, ROOT)}: {sum(1 for _ in open(p))} lines" for p in project_modules().values()
            if sum(1 for _ in open(p)) > 300]
    assert long == []


def test_no_tool_holds_two_jobs():
    """tools/ holds entry points that wire library code: one past 100 lines holds a second job (library code)."""
    long = [f"{os.path.relpath(p, ROOT)}: {sum(1 for _ in open(p))} lines"
            for p in glob.glob(os.path.join(ROOT, "tools", "*.py")) if sum(1 for _ in open(p)) > 100]
    assert long == []


def test_no_import_cycle_between_project_modules_even_inside_functions():
    graph = import_graph()
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
    assert "pretrain.matchers.hough" in graph["pretrain.matchers"]  # the walk sees real edges


def test_conversion_tables_and_probes_import_without_detectron2():
    import subprocess
    import sys
    blocker = ("import importlib.abc, sys\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path, target=None):\n"
               "        if name.split('.')[0] == 'detectron2':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r} (blocked)')\n"
               "sys.meta_path.insert(0, Block())\n")
    free = ["transfer", "transfer.detectron2_sdist", "transfer.weights", "transfer.results",
            "transfer.readout.dense_probe", "transfer.pipeline.stages", "transfer.readout.correspondence",
            "transfer.release", "transfer.pipeline.demo", "transfer.pipeline.plan", "transfer.pipeline.schedule",
            "transfer.pipeline.readouts", "transfer.pipeline.report"]
    free += [m for m in project_modules() if m.startswith("pretrain")]
    check = blocker + "".join(f"import {m}\n" for m in free) + (
        "try:\n    import transfer.finetune.trainer\n"
        "except ModuleNotFoundError as e:\n    print('trainer needs it:', e)\n")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trainer needs it: No module named 'detectron2" in result.stdout  # the blocker works


def test_the_readme_map_lists_every_package_once():
    """The README's map of the code has one row per package (a folder with ``__init__.py``), each one job."""
    import re
    with open(os.path.join(ROOT, "README.md")) as f:
        listed = re.findall(r"^\| `((?:pretrain|transfer)(?:/[a-z_]+)*/)` \| [^|]+ \|$", f.read(), flags=re.M)
    on_disk = [os.path.relpath(os.path.dirname(p), ROOT) + "/" for package in ("pretrain", "transfer")
               for p in glob.glob(os.path.join(ROOT, package, "**", "__init__.py"), recursive=True)]
    assert sorted(listed) == sorted(set(listed)), "a package is listed twice"
    assert sorted(listed) == sorted(on_disk)


def test_the_getting_started_page_lists_every_tool_once():
    import re
    with open(os.path.join(ROOT, "docs", "getting-started.md")) as f:
        listed = re.findall(r"^\| `(tools/[a-z_0-9]+\.(?:py|sh))` \| [^|]+ \|$", f.read(), flags=re.M)
    on_disk = [os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "tools", "*.*"))
               if p.endswith((".py", ".sh"))]
    assert sorted(listed) == sorted(set(listed)), "a tool is listed twice"
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
