"""Data-parallel training on MPI: steps per second on 1 and 2 ranks, bytes all-reduced per step,
and the ring all-reduce cost model against what was measured.

Run with ``python benchmarks/bench_distributed.py [--repeats 5] [--quick] [--json FILE]`` after
``scripts/setup_mpi.sh``. One run prints:

(a) the all-reduce time of this machine's MPI for payloads from 8 B to 8 MB, the effective
    bandwidth at each size, and the latency α and bandwidth β of the ring model
    ``2(N-1)·α + 2(N-1)/N · bytes/β``;
(b) training steps per second of two MLPs (the digits MLP 64-128-64-10 of ``make run`` and a
    wide MLP 64-1024-1024-10 on synthetic data, in global batches of 256 and of 1024), by
    backprop and by SPSA (zeroth order), on one
    process and on ``mpirun -n 2``, the time the ranks spent in all-reduce calls and the bytes
    each rank all-reduces per step;
(b') the CPU time per step each configuration spends outside the all-reduce (the slowest rank's),
    which other processes on a shared machine do not inflate the way they inflate wall time, and
    the speed-up on two idle cores it projects next to the cost model's;
(c) for a cluster link (10 Gb/s Ethernet, 25 µs), the global batch above which N machines beat
    one, by network width, from the model and the FLOP rate measured in (b').

Method: every process runs NumPy on one BLAS thread (one rank per core, as MPI jobs are laid out),
so "1 proc" and "2 ranks" use one and two cores; "1 proc 2 thr" gives one process two BLAS
threads, the single-machine alternative. Waiting ranks yield their core (``--mca
mpi_yield_when_idle 1``). The configurations run in interleaved repetitions (A, B, C, A, B, C,
...) and each figure is the median over repetitions. Each run trains one warm-up epoch, then
times the following epochs with ``Trainer.fit``. The load average printed first says how busy
the machine was: the two-rank figures need two otherwise idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULT = "RESULT "
ROOT = Path(__file__).resolve().parents[1]

#: name -> (hidden widths, data, global batch, timed epochs)
MODELS = {
    "digits 64-128-64-10": ([128, 64], "digits", 128, 6),
    "wide 64-1024-1024-10": ([1024, 1024], "synthetic", 256, 2),
    "wide, batch 1024": ([1024, 1024], "synthetic", 1024, 1),
}
METHODS = ("backprop", "spsa")
#: A cluster link for part (c): 10 Gb/s Ethernet with MPI over TCP.
CLUSTER_BANDWIDTH = 1.25e9  # bytes/s
CLUSTER_LATENCY = 25e-6  # s per message


# ------------------------------------------------------------------------------------------------
# Workers (run under mpirun, or as one plain process)
# ------------------------------------------------------------------------------------------------


def _communicator(distributed: bool):
    if not distributed:
        return None
    from chainrule.distributed import MPICommunicator

    communicator = MPICommunicator()
    communicator.allreduce_seconds = 0.0  # wall time in all-reduce calls, waiting included
    communicator.allreduce_cpu_seconds = 0.0  # CPU time in them (a waiting rank polls)
    reduce = communicator.allreduce_sum

    def timed_allreduce_sum(array):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = reduce(array)
        communicator.allreduce_seconds += time.perf_counter() - started
        communicator.allreduce_cpu_seconds += time.process_time() - cpu_started
        return result

    communicator.allreduce_sum = (
        timed_allreduce_sum  # the time spent in (and waiting at) all-reduces
    )
    return communicator


def _emit(communicator, record: dict) -> None:
    if communicator is None or communicator.is_root:
        print(RESULT + json.dumps(record), flush=True)


def worker_allreduce(distributed: bool, quick: bool) -> None:
    """Median seconds of one all-reduce per payload size."""
    communicator = _communicator(distributed)
    sizes = [1, 128, 16_384, 131_072, 1_048_576]  # float64 elements: 8 B .. 8 MB
    times = {}
    for size in sizes:
        payload = np.ones(size)
        repeats = 5 if quick else (200 if size <= 16_384 else 30)
        samples = []
        for _ in range(repeats + 3):
            communicator.barrier()
            started = time.perf_counter()
            communicator.allreduce_sum(payload)
            samples.append(time.perf_counter() - started)
        times[size * 8] = statistics.median(samples[3:])
    _emit(communicator, {"kind": "allreduce", "ranks": communicator.size, "seconds": times})


def _dataset(data_name: str, batch: int, steps: int):
    from chainrule import data

    if data_name == "digits":
        return data.load("digits", seed=0).train
    rng = np.random.default_rng(0)
    features = rng.standard_normal((batch * steps, 64))
    labels = rng.integers(0, 10, size=batch * steps)
    return data.Dataset(features, labels, num_classes=10)


def worker_train(model_name: str, method: str, distributed: bool, quick: bool) -> None:
    from chainrule import nn, optim
    from chainrule.training import Trainer

    communicator = _communicator(distributed)
    hidden, data_name, batch, epochs = MODELS[model_name]
    if quick:
        epochs = 1
    train = _dataset(data_name, batch, steps=4)
    model = nn.MLP([train.num_features, *hidden, train.num_outputs], seed=0)
    lr = 0.1 if method == "backprop" else 0.01
    trainer = Trainer(
        model,
        optim.SGD(lr),
        batch_size=batch,
        seed=0,
        log=None,
        progress=False,
        method=method,
        communicator=communicator,
    )
    trainer.fit(train, epochs=1)  # warm-up
    if communicator is not None:
        communicator.barrier()
    steps_before = trainer.step
    bytes_before = 0 if communicator is None else communicator.bytes_reduced
    waiting_before = 0.0 if communicator is None else communicator.allreduce_seconds
    polling_before = 0.0 if communicator is None else communicator.allreduce_cpu_seconds
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.fit(train, epochs=1 + epochs)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    steps = trainer.step - steps_before
    bytes_per_step = (
        0 if communicator is None else (communicator.bytes_reduced - bytes_before) / steps
    )
    waiting = 0.0 if communicator is None else communicator.allreduce_seconds - waiting_before
    # CPU seconds of this rank's own work per step: unaffected by time slices lost to other
    # processes on a shared machine, so it shows what the split saves even when the wall clock
    # cannot. The slowest rank's figure is the one that sets the pace.
    compute = cpu_seconds - (
        0.0 if communicator is None else communicator.allreduce_cpu_seconds - polling_before
    )
    if communicator is not None:
        per_rank = np.zeros(communicator.size)
        per_rank[communicator.rank] = compute
        compute = float(communicator.allreduce_sum(per_rank).max())
    _emit(
        communicator,
        {
            "kind": "train",
            "model": model_name,
            "method": method,
            "ranks": 1 if communicator is None else communicator.size,
            "parameters": model.num_parameters(),
            "batch": batch,
            "steps": steps,
            "seconds_per_step": seconds / steps,
            "bytes_per_step": bytes_per_step,
            "allreduce_seconds_per_step": waiting / steps,
            "compute_cpu_seconds_per_step": compute / steps,
        },
    )


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _mpirun() -> list[str]:
    beside_python = Path(sys.executable).parent / "mpirun"
    found = str(beside_python) if beside_python.exists() else shutil.which("mpirun")
    if found is None:
        raise SystemExit("bench_distributed: no mpirun; run scripts/setup_mpi.sh first")
    # Waiting ranks yield the core instead of spinning: on a machine whose cores are shared with
    # other work, a spinning rank steals the time slice of the rank it is waiting for.
    command = [found, "--oversubscribe", "--mca", "mpi_yield_when_idle", "1"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-run-as-root")
    return command


def _launch(worker_args: list[str], ranks: int, blas_threads: int = 1) -> dict:
    threads = str(blas_threads)
    env = dict(
        os.environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MKL_NUM_THREADS=threads
    )
    script = [sys.executable, str(Path(__file__).resolve()), *worker_args]
    if ranks == 1:
        command = script  # the plain single-process path: no MPI at all
    else:
        command = [
            *_mpirun(),
            "-n",
            str(ranks),
            "-x",
            "OMP_NUM_THREADS",
            "-x",
            "OPENBLAS_NUM_THREADS",
            *script,
            "--distributed",
        ]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT)]
    if completed.returncode != 0 or not lines:
        raise SystemExit(
            f"bench_distributed: {' '.join(command)} failed:\n{completed.stdout}{completed.stderr}"
        )
    return json.loads(lines[-1][len(RESULT) :])


def fit_ring_model(seconds_by_bytes: dict, ranks: int) -> tuple[float, float]:
    """(latency α, bandwidth β) of ``2(N-1)·α + 2(N-1)/N · bytes/β``: α from the smallest
    payload, β from the largest (the regime of a θ-sized gradient)."""
    sizes = sorted(seconds_by_bytes)
    rounds = 2 * (ranks - 1)
    latency = seconds_by_bytes[sizes[0]] / rounds
    return latency, effective_bandwidth(sizes[-1], seconds_by_bytes[sizes[-1]], ranks, latency)


def effective_bandwidth(nbytes: float, seconds: float, ranks: int, latency: float) -> float:
    """The β that makes the ring model give ``seconds`` for ``nbytes``."""
    rounds = 2 * (ranks - 1)
    return rounds / ranks * nbytes / max(seconds - rounds * latency, 1e-12)


def interpolated_allreduce(seconds_by_bytes: dict, nbytes: float, ranks: int) -> float:
    """The measured all-reduce time at ``nbytes``, interpolated log-log between measured sizes
    (beyond the largest, extended at its bandwidth)."""
    sizes = np.array(sorted(seconds_by_bytes), dtype=float)
    seconds = np.array([seconds_by_bytes[size] for size in sorted(seconds_by_bytes)])
    if nbytes <= sizes[0]:
        return float(seconds[0])
    if nbytes >= sizes[-1]:
        return float(seconds[-1] * nbytes / sizes[-1])
    return float(np.exp(np.interp(np.log(nbytes), np.log(sizes), np.log(seconds))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=5, help="interleaved repetitions (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="one short repetition (a smoke test)")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    parser.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        if args.worker[0] == "allreduce":
            worker_allreduce(args.distributed, args.quick)
        else:
            worker_train(args.worker[0], args.worker[1], args.distributed, args.quick)
        return

    from chainrule.distributed import break_even_batch

    repeats = 1 if args.quick else max(1, args.repeats)
    quick = ["--quick"] if args.quick else []
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"bench_distributed: {os.cpu_count()} CPUs (load average {load}), {repeats} interleaved "
        "repetitions, one BLAS thread per rank"
    )

    # (a) the all-reduce itself
    runs = [_launch(["--worker", "allreduce", *quick], ranks=2) for _ in range(repeats)]
    sizes = sorted({int(size) for run in runs for size in run["seconds"]})
    allreduce = {
        size: statistics.median(run["seconds"][str(size)] for run in runs) for size in sizes
    }
    latency, bandwidth = fit_ring_model(allreduce, ranks=2)
    print("\n(a) MPI all-reduce on this machine, 2 ranks (median)")
    print(f"{'bytes':>10} {'measured µs':>12} {'effective GB/s':>15}")
    for size in sizes:
        effective = (
            effective_bandwidth(size, allreduce[size], 2, latency) if size > sizes[0] else None
        )
        shown = "-" if effective is None else f"{effective / 1e9:.2f}"
        print(f"{size:>10} {allreduce[size] * 1e6:>12.1f} {shown:>15}")
    print(
        f"ring model: latency α = {latency * 1e6:.1f} µs (smallest payload), bandwidth β = "
        f"{bandwidth / 1e9:.2f} GB/s (largest; smaller payloads stay in cache and go faster)"
    )

    # (b) training steps
    contenders = [(1, 1), (1, 2), (2, 1)]  # (ranks, BLAS threads per rank)
    samples: dict = {}
    waits: dict = {}
    computes: dict = {}
    records: dict = {}
    for _ in range(repeats):
        for model_name in MODELS:
            for method in METHODS:
                for ranks, threads in contenders:
                    record = _launch(["--worker", model_name, method, *quick], ranks, threads)
                    key = (model_name, method, ranks, threads)
                    samples.setdefault(key, []).append(record["seconds_per_step"])
                    waits.setdefault(key, []).append(record["allreduce_seconds_per_step"])
                    computes.setdefault(key, []).append(record["compute_cpu_seconds_per_step"])
                    records[key] = record
    table = []
    for model_name in MODELS:
        for method in METHODS:

            def median(values, ranks, threads, model_name=model_name, method=method):
                return statistics.median(values[(model_name, method, ranks, threads)])

            record = records[(model_name, method, 2, 1)]
            one, one_two_threads, two = (
                median(samples, 1, 1),
                median(samples, 1, 2),
                median(samples, 2, 1),
            )
            cpu_one, cpu_two = median(computes, 1, 1), median(computes, 2, 1)
            # The step's all-reduce as measured in (a), at the bytes this step sends.
            reduce_seconds = interpolated_allreduce(allreduce, record["bytes_per_step"], 2)
            table.append(
                {
                    "model": model_name,
                    "method": method,
                    "parameters": record["parameters"],
                    "batch": record["batch"],
                    "bytes_per_step": record["bytes_per_step"],
                    "steps_per_second_1": 1 / one,
                    "steps_per_second_1_two_threads": 1 / one_two_threads,
                    "steps_per_second_2": 1 / two,
                    "speedup": one / two,
                    "allreduce_wall_seconds_per_step": median(waits, 2, 1),
                    "cpu_seconds_per_step_1": cpu_one,
                    "cpu_seconds_per_step_2": cpu_two,
                    "allreduce_seconds_model": reduce_seconds,
                    "projected_speedup": cpu_one / (cpu_two + reduce_seconds),
                    # u/2 + p of the cost model: a rank's work beyond half of the one-process step
                    "serial_seconds_per_step": max(cpu_two - cpu_one / 2, 0.0),
                    "model_speedup": cpu_one / (cpu_one / 2 + reduce_seconds),
                }
            )
    print(
        "\n(b) wall clock: training steps per second (median), 2 ranks over 1 process; ms per "
        "step the\n"
        "    ranks spent in all-reduce calls (waiting for the other rank included); bytes each "
        "rank\n"
        "    all-reduces per step"
    )
    header = (
        f"{'model':<22} {'method':<9} {'params':>9} {'batch':>5} {'1 proc':>8} "
        f"{'1 proc 2 thr':>12} "
        f"{'2 ranks':>8} {'speed-up':>8} {'ms in AR':>8} {'bytes/step':>11}"
    )
    print(header)
    print("-" * len(header))
    for row in table:
        print(
            f"{row['model']:<22} {row['method']:<9} {row['parameters']:>9,} {row['batch']:>5} "
            f"{row['steps_per_second_1']:>8.1f} {row['steps_per_second_1_two_threads']:>12.1f} "
            f"{row['steps_per_second_2']:>8.1f} {row['speedup']:>7.2f}x "
            f"{row['allreduce_wall_seconds_per_step'] * 1e3:>8.2f} {row['bytes_per_step']:>11,.0f}"
        )
    print(
        "\n(b') CPU time per step outside all-reduce (median; the slowest rank), which time "
        "slices lost\n"
        "    to other processes do not inflate; the all-reduce time measured in (a) for the "
        "step's bytes;\n"
        "    the speed-up on two idle cores these project, and the cost model's with no serial "
        "part\n"
        "    (half the step + AR); u/2+p ms = CPU ms 2 ranks - CPU ms 1 proc / 2, the per-step "
        "work\n"
        "    that did not split (u: repeated by every rank; p: the all-reduce bookkeeping)"
    )
    header = (
        f"{'model':<22} {'method':<9} {'CPU ms 1 proc':>13} {'CPU ms 2 ranks':>14} {'AR ms':>7} "
        f"{'projected':>9} {'model':>6} {'u/2+p ms':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in table:
        print(
            f"{row['model']:<22} {row['method']:<9} {row['cpu_seconds_per_step_1'] * 1e3:>13.2f} "
            f"{row['cpu_seconds_per_step_2'] * 1e3:>14.2f} "
            f"{row['allreduce_seconds_model'] * 1e3:>7.3f} "
            f"{row['projected_speedup']:>8.2f}x {row['model_speedup']:>5.2f}x "
            f"{row['serial_seconds_per_step'] * 1e3:>9.2f}"
        )

    # (c) when do N machines pay off? Per-example time from the measured FLOP rate of the wide MLP.
    wide = next(
        r for r in table if r["model"] == "wide 64-1024-1024-10" and r["method"] == "backprop"
    )
    flops_per_second = 6 * wide["parameters"] * wide["batch"] / wide["cpu_seconds_per_step_1"]
    print(
        f"\n(c) global batch above which N machines beat one, backprop, float64, "
        f"{CLUSTER_BANDWIDTH * 8 / 1e9:.0f} Gb/s and {CLUSTER_LATENCY * 1e6:.0f} µs links, "
        f"{flops_per_second / 1e9:.1f} GFLOP/s per machine (CPU time measured in (b'), 6·P FLOPs "
        "per example)"
    )
    widths = [128, 512, 2048, 8192]
    machine_counts = [2, 8, 32]
    print(
        f"{'hidden width':>12} {'params':>12} "
        + " ".join(f"{'N=' + str(n):>8}" for n in machine_counts)
    )
    for width in widths:
        parameters = 64 * width + width * width + width * 10 + 2 * width + 10
        per_example = 6 * parameters / flops_per_second
        cells = [
            break_even_batch(per_example, 8 * parameters, n, CLUSTER_BANDWIDTH, CLUSTER_LATENCY)
            for n in machine_counts
        ]
        print(f"{width:>12} {parameters:>12,} " + " ".join(f"{cell:>8.0f}" for cell in cells))
    print(
        "bandwidth bound alone: 8F/(3β) = "
        f"{8 * flops_per_second / (3 * CLUSTER_BANDWIDTH):.0f} examples, whatever the width"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "allreduce_seconds": allreduce,
                    "latency": latency,
                    "bandwidth": bandwidth,
                    "training": table,
                    "flops_per_second": flops_per_second,
                },
                indent=1,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
