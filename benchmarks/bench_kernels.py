"""Kernel launches per training step, counted without a GPU: chainrule eager against CuPy by hand.

On a GPU a small network's step is bound by kernel launches (each costs microseconds of host time
whatever its size), not by arithmetic. This counts them on the simulated CUDA device
(:func:`chainrule.backend.simulated_cuda.count_kernels`), for the same steps ``bench_gpu.py`` times:
the SGD step of each MLP of the GPU issue written with chainrule (``value_and_grad`` of the fused
cross-entropy, then the update) and written by hand with CuPy calls. The counts depend on the number
of layers, not their widths, so the wide MLPs are counted at width 64 (same depth).

Run: ``python benchmarks/bench_kernels.py`` (no GPU needed; a second, no timing involved). What a
launch costs is the GPU's business: at the 5-10 µs per launch usual for CuPy on a recent NVIDIA
GPU, the difference in launches is the difference in host time per eager step.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections import Counter

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import bench_gpu  # noqa: E402  (the same steps and problems as the GPU benchmark)
from chainrule.backend.simulated_cuda import count_kernels, simulate_cuda  # noqa: E402

COUNTED_WIDTH = 64  # wide MLPs are counted at this width: launches depend on depth only


def counted_sizes(sizes):
    return tuple(size if size <= 256 else COUNTED_WIDTH for size in sizes[:-1]) + (
        min(sizes[-1], 10),
    )


def kernels_per_step(build, cp, sizes, batch):
    """The launches of one step after a first (warm-up) one, by operation."""
    params, x, y = bench_gpu.make_problem(sizes, min(batch, 64), np.float32)
    step = build(cp, params, x, y, [])
    step()
    with count_kernels() as kernels:
        step()
    return kernels


def operation(name):
    """One name per operation, however it was reached: ``numpy.add.reduce``, ``cupy.sum`` and
    ``ndarray.sum`` are all "sum"."""
    name = name.split(" ")[0].removeprefix("numpy.").removeprefix("cupy.").removeprefix("ndarray.")
    return {"add.reduce": "sum", "maximum.reduce": "max", "multiply.reduce": "prod"}.get(name, name)


def by_operation(kernels):
    merged = Counter()
    for name, count in kernels.items():
        merged[operation(name)] += count
    return merged


def _format_breakdown(mine, theirs):
    mine, theirs = by_operation(mine), by_operation(theirs)
    lines = []
    for name in sorted(set(mine) | set(theirs), key=lambda n: (-(mine[n] - theirs[n]), n)):
        if mine[name] != theirs[name]:
            lines.append(f"    {name:<42} chainrule {mine[name]:>3}   by hand {theirs[name]:>3}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--breakdown", action="store_true", help="list the operations whose counts differ"
    )
    args = parser.parse_args(argv)
    print("kernel launches per SGD step, counted on the simulated CUDA device (no timing)")
    print(f"{'MLP':<28}{'chainrule eager':>16}{'CuPy by hand':>14}{'ratio':>8}")
    with simulate_cuda() as cp:
        for name, (sizes, batch) in bench_gpu.MLPS.items():
            shape = counted_sizes(sizes)
            mine = kernels_per_step(bench_gpu.build_chainrule_eager, cp, shape, batch)
            theirs = kernels_per_step(bench_gpu.build_cupy, cp, shape, batch)
            total_mine, total_theirs = sum(mine.values()), sum(theirs.values())
            print(f"{name:<28}{total_mine:>16}{total_theirs:>14}{total_mine / total_theirs:>7.2f}x")
            if args.breakdown:
                print("\n".join(_format_breakdown(mine, theirs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
