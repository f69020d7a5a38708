"""The backend's error types, in a module of their own: step capture
(:mod:`chainrule.backend.capture`) and its CUDA-graph branch (:mod:`chainrule.backend.cuda.graph`)
both raise :class:`CaptureError`, and each imports it from here rather than from the other, so
neither module imports the one that imports it.
"""

from __future__ import annotations

__all__ = ["CaptureError"]


class CaptureError(RuntimeError):
    """A step cannot be replayed faithfully (nested capture, a tracer as input, a replay that
    disagrees with the eager step)."""
