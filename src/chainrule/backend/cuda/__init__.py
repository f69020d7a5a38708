"""CUDA-only pieces: a cuBLAS binding that works inside CUDA-graph capture, and the graphs.

* :mod:`chainrule.backend.cuda.cublas`: a small ctypes binding to ``libcublas`` (the one the
  ``nvidia-cublas-cu12`` wheel ships, or the system's). CuPy refuses every cuBLAS call while a
  stream is being captured into a CUDA graph (cupy#6290); cuBLAS itself supports capture once its
  stream and workspace are set, which this binding does. Its ``matmul`` is what the ``matmul``
  primitive computes with on CuPy arrays during a capture, and under the ``"tf32"``/``"bf16"``
  modes of :mod:`chainrule.backend.precision`.
* :mod:`chainrule.backend.cuda.graph`: warm-up, stream capture and replay of a step function on CuPy
  arrays (the GPU branch of :func:`chainrule.backend.capture.capture`).

Nothing here imports CuPy or loads ``libcublas`` at import time: both happen at the first call
that needs them, so the CPU-only install never pays for them. The pure parts (the row-major to
column-major argument mapping, the library search) are tested on the CPU.
"""

from __future__ import annotations

from . import cublas, graph

__all__ = ["cublas", "graph"]
