"""Imported first by every tool: run outside the environment that `make setup` builds, a tool says how to enter
it in one line instead of failing on its first import (``ModuleNotFoundError: No module named 'pretrain'``)."""
import importlib.util
import os
import sys

if any(importlib.util.find_spec(name) is None for name in ("torch", "pretrain", "transfer")):
    venv = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv")
    sys.exit(f"error: {os.path.basename(sys.argv[0])} runs in the toolkit's environment, which this Python "
             f"({sys.executable}) is not: run `make setup` once, then `source {venv}/bin/activate` (or call "
             f"{venv}/bin/python {sys.argv[0]})")
