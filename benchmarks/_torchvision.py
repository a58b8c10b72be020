"""torchvision beside the CPU torch wheel, for the tests and benchmarks that compare with it.

PyPI's Linux torchvision wheels are CUDA builds; beside the CPU torch wheel their compiled library
does not load, and importing torchvision fails (``operator torchvision::nms does not exist``)
because its Python side registers fake kernels for operators that library would have declared.
Declaring the two operators' schemas first is enough for everything the image transforms use.
Test and benchmark scaffolding only: smg never imports torchvision.
"""
from __future__ import annotations

import importlib.util
import sys

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def import_torchvision(site: str | None = None) -> bool:
    """Make ``import torchvision`` work (from ``site`` when given); False when it is not installed."""
    if site and site not in sys.path:
        sys.path.insert(0, site)
    if importlib.util.find_spec("torchvision") is None:
        return False
    import torch

    for name in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{name}", _SCHEMA)
        except RuntimeError:
            pass  # declared already (by an earlier call, or by a working torchvision)
    import torchvision.transforms.v2.functional  # noqa: F401

    return True
