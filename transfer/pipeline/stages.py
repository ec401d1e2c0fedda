"""Long pipelines of tool runs (the demo, the study): one line per stage with elapsed time and ETA, a progress
bar inside the long stages, each stage's full output in its own log file, and stages already done skipped.
A stage is done when its output exists and its inputs are those it was run with: the command, the bytes of
every file the command reads (a YAML config with its ``_BASE_`` chain, weights, the tool script), the source of
the project's packages the tool imports (directly or through each other) and the versions of the packages that
decide its numbers are recorded in ``LOG_DIR/stages.json``; a change to any of them reruns the stage.

A stage's progress is read from the files the tool writes anyway: ``metrics.jsonl`` of a pretraining run,
``metrics.json`` of a Detectron2 run (both one JSON object per line with the iteration).
"""
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Set

import yaml
from tqdm import tqdm

from pretrain.runtime.files import atomic_write_json, read_jsonl
from pretrain.runtime.provenance import KERNEL_VARIABLES, versions_line

OUTPUT_FLAGS = ("--out", "OUTPUT_DIR")  # the argument after these is written, not read


def last_iteration(path: str, offset: int = 0) -> int:
    """The last ``iteration`` in a JSON-lines metrics file (0 if none yet); ``offset`` 1 for Detectron2's
    0-based iterations."""
    done = [int(row["iteration"]) + offset for row in read_jsonl(path) if "iteration" in row]
    return done[-1] if done else 0


def input_files(path: str) -> List[str]:
    """``path`` and, for a YAML config, the files of its ``_BASE_`` chain."""
    files = [path]
    if path.endswith((".yaml", ".yml")):
        with open(path) as f:
            base = (yaml.safe_load(f) or {}).get("_BASE_")
        if base:
            files += input_files(os.path.join(os.path.dirname(path), base))
    return files


def imported_names(path: str) -> Set[str]:
    """The top-level names of every module a Python file imports (at any depth of its code)."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def package_files(cwd: str, package: str) -> List[str]:
    return sorted(os.path.join(root, name) for root, _, names in os.walk(os.path.join(cwd, package))
                  for name in names if name.endswith(".py"))


def library_files(script: str, cwd: str) -> List[str]:
    """The source files of the project's packages (folders of ``cwd`` with an ``__init__.py``) that ``script``
    imports, directly or through those packages."""
    def local(names: Iterable[str]) -> Set[str]:
        return {n for n in names if os.path.isfile(os.path.join(cwd, n, "__init__.py"))}
    seen, todo = set(), local(imported_names(script))
    while todo:
        package = todo.pop()
        seen.add(package)
        for path in package_files(cwd, package):
            todo |= local(imported_names(path)) - seen
    return [path for package in sorted(seen) for path in package_files(cwd, package)]


def fingerprint(command: Sequence[str], cwd: str, output: Optional[str] = None,
                env: Optional[Dict[str, str]] = None) -> str:
    """sha256 of the command's arguments, of the bytes of every existing file among them that it reads (not
    ``output``, not the argument of an output flag), of the project's library code a Python script among them
    imports, of the versions of the packages that decide the numbers, and of the variables that choose the CPU
    kernels (oneDNN and MKL instruction sets, MKL_CBWR, thread counts) in the environment ``env`` the command
    runs in (default: this process's); the numerics mode is one of the command's arguments."""
    env = os.environ if env is None else env
    kernels = " ".join(f"{k}={env.get(k, '')}" for k in KERNEL_VARIABLES)
    digest = hashlib.sha256(versions_line().encode() + b"\0" + kernels.encode() + b"\0")
    for i, arg in enumerate(command):
        digest.update(arg.encode() + b"\0")
        path = os.path.join(cwd, arg)
        written = (i > 0 and command[i - 1] in OUTPUT_FLAGS) or (output is not None and os.path.abspath(
            path) == os.path.abspath(os.path.join(cwd, output)))
        if i == 0 or written or not os.path.isfile(path):
            continue
        library = library_files(path, cwd) if path.endswith(".py") else []
        for name in input_files(path) + library:
            with open(name, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def clock(seconds: float) -> str:
    return time.strftime("%M:%S" if seconds < 3600 else "%H:%M:%S", time.gmtime(max(0.0, seconds)))


class Stages:
    """Run planned stages in order. ``plan``: the expected seconds of every stage, for the ETA (scaled by how
    the stages so far compared with their plan). ``env``: every stage's environment (default: this process's),
    e.g. the variables of a numerics mode, which libraries read when a stage's process starts."""

    def __init__(self, plan: Sequence[float], log_dir: str, cwd: str, env: Optional[Dict[str, str]] = None):
        self.plan, self.log_dir, self.cwd = list(plan), log_dir, cwd
        self.env = dict(os.environ if env is None else env)
        self.number, self.started, self.spent_planned = 0, time.time(), 0.0
        self.done: List[dict] = []
        os.makedirs(log_dir, exist_ok=True)
        self.record_path = os.path.join(log_dir, "stages.json")
        self.records = {}
        if os.path.exists(self.record_path):
            with open(self.record_path) as f:
                self.records = json.load(f)

    def record(self, title: str, inputs: str, seconds: Optional[float]) -> None:
        self.records[title] = {"inputs": inputs, "seconds": seconds}
        atomic_write_json(self.record_path, self.records, indent=1)

    def eta(self) -> float:
        elapsed = time.time() - self.started
        pace = elapsed / self.spent_planned if self.spent_planned else 1.0
        return pace * sum(self.plan[self.number:])

    def run(self, title: str, command: Sequence[str], done_when: Optional[str] = None, force: bool = False,
            progress: Optional[Callable[[], int]] = None, total: int = 0, clear: Sequence[str] = ()) -> None:
        """Run ``command`` unless ``done_when`` exists and the inputs are unchanged. ``clear``: what the stage
        writes, removed before it is redone, so that no tool resumes from the previous run."""
        self.number += 1
        name = f"{self.number:02d}_" + "".join(c if c.isalnum() else "_" for c in title.lower())[:60].strip("_")
        log = os.path.join(self.log_dir, name + ".log")
        head = f"[{self.number}/{len(self.plan)} {clock(time.time() - self.started)}, ETA {clock(self.eta())}]"
        planned = self.plan[self.number - 1]
        inputs = fingerprint(command, self.cwd, done_when, self.env)
        recorded = self.records.get(title) or {}
        if isinstance(recorded, str):  # the first format: the inputs only
            recorded = {"inputs": recorded, "seconds": None}
        # Only a stage recorded as finished, with these inputs, is skipped: an output without that record is what
        # a killed stage leaves (a converted file not yet verified, say), and is redone.
        if done_when and os.path.exists(done_when) and not force and recorded.get("inputs") == inputs:
            print(f"{head} {title}: already done ({done_when})", flush=True)
            self.plan[self.number - 1] = 0.0  # skipped: no time of its own, and the pace is unchanged
            self.done.append({"title": title, "command": list(command), "log": None, "seconds": 0.0,
                              "earlier_seconds": recorded.get("seconds")})
            return
        redo = bool(done_when and os.path.exists(done_when))
        why = ("" if not redo or force else " (its inputs changed since it ran)" if recorded else
               " (its output exists but it never finished: redone)")
        print(f"{head} {title}{why} (log: {log})", flush=True)
        if redo:
            for path in clear:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        start = time.time()
        with open(log, "w") as out:
            out.write("$ " + " ".join(command) + "\n")
            out.flush()
            process = subprocess.Popen(list(command), cwd=self.cwd, env=self.env, stdout=out,
                                       stderr=subprocess.STDOUT)
            bar = tqdm(total=total, unit="it", leave=False, dynamic_ncols=True, file=sys.stdout) if total else None
            while process.poll() is None:
                time.sleep(1.0)
                if bar is not None and progress is not None:
                    bar.update(max(0, min(total, progress()) - bar.n))
            if bar is not None:
                bar.close()
        seconds = time.time() - start
        self.spent_planned += planned
        self.done.append({"title": title, "command": list(command), "log": log, "seconds": seconds})
        if process.returncode != 0:
            with open(log) as f:
                tail = f.read().splitlines()[-15:]
            print("\n".join("    " + line for line in tail), file=sys.stderr)
            sys.exit(f"stage {self.number} ({title}) failed with exit status {process.returncode}; full log: {log}")
        self.record(title, inputs, seconds)
        print(f"    done in {clock(seconds)}", flush=True)
