"""The backend layer: devices, the matmul precision policy, the simulated CUDA device, the CUDA
pieces (cuBLAS, graphs) and step capture.

Its modules load on first use (``chainrule.backend.device`` after ``import chainrule`` works as
it did when the root imported them eagerly), so asking for one never loads the others.
"""

from __future__ import annotations

import importlib

_SUBMODULES = frozenset({"capture", "cuda", "device", "errors", "precision", "simulated_cuda"})


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")  # importing binds it here too
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES)
