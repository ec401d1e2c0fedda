"""Imported first by the tools that use the project's packages.

Python puts a script's folder first on sys.path, and tools/pretrain.py would then shadow the `pretrain`
package for every script in tools/. Dropping the folder from sys.path lets the package win.
"""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.getcwd()) != _here]
