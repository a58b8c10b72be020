"""Compiled kernels (Cython) and their plain-Python reference twins.

Each hot component has ``<name>.pyx`` (+ ``.pxd``) compiled by the package build and a
``<name>_py.py`` twin that is its executable specification. :func:`load` picks the compiled one,
unless ``SMG_NO_EXTENSIONS=1`` asks for the twins; a missing compiled kernel is an ImportError,
never a silent fall-back to the slow code.
"""
from __future__ import annotations

import importlib
import os
from types import ModuleType

#: True when SMG_NO_EXTENSIONS=1 forces the pure-Python twins (used by `make test-pure`).
USE_TWINS = os.environ.get("SMG_NO_EXTENSIONS", "") not in ("", "0")


def load(name: str) -> ModuleType:
    """Return the kernel module ``name``: compiled, or its twin when SMG_NO_EXTENSIONS=1."""
    if USE_TWINS:
        return importlib.import_module(f"smg._ext.{name}_py")
    try:
        return importlib.import_module(f"smg._ext.{name}")
    except ImportError as exc:  # pragma: no cover - exercised by a broken build only
        raise ImportError(
            f"smg's compiled kernel smg._ext.{name} is not built ({exc}). Rebuild the package "
            "(`pip install -e .` or `make compile`), or set SMG_NO_EXTENSIONS=1 to run the "
            "pure-Python twins knowingly."
        ) from exc
