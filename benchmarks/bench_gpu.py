"""MLP training steps on a GPU: chainrule on CuPy arrays against CuPy by hand, PyTorch and JAX.

Run on a machine with an NVIDIA GPU and CuPy (``pip install cupy-cuda12x``; PyTorch and JAX are
optional peers): ``python benchmarks/bench_gpu.py [--quick]``. Without CuPy or a device it says
so and exits 0, so that it can sit in any script.

Contenders, for each MLP (ReLU, fused softmax cross-entropy, SGD, float32 unless ``--dtype``):

* chainrule eager: ``chainrule.value_and_grad`` of the loss on CuPy arrays, then the update;
* CuPy by hand: forward and backward written out with CuPy calls;
* CuPy by hand, CUDA graph: the hand step captured once with CuPy's stream capture and replayed
  (static input buffers refreshed in place); reported as failed where CuPy refuses a call during
  capture (cuBLAS matmuls, cupy#6290);
* PyTorch eager (CUDA), and JAX ``jit`` (GPU), when installed.

Each step's time is the median of interleaved repetitions, every repetition synchronised with
the device; achieved TFLOP/s counts 6 x batch x sum(fan_in x fan_out) per step (forward 2, backward
4). Before timing, every contender's loss on the same parameters and batch is compared with the
CuPy-by-hand loss. A contender that fails prints its error in its column and the others go on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

MLPS = {  # name: (layer widths, batch size)
    "digits 64-256-256-10 b128": ((64, 256, 256, 10), 128),
    "wide 1024x4 b256": ((1024, 1024, 1024, 1024, 10), 256),
    "wider 4096x4 b1024": ((4096, 4096, 4096, 4096, 10), 1024),
}
LEARNING_RATE = 0.01


def step_flops(sizes, batch) -> int:
    return 6 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


def make_problem(sizes, batch, dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(dtype)
        params[f"b{i}"] = np.zeros(fan_out, dtype)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], batch).astype(np.int64)
    return params, x, y


# ------------------------------------------------------------------------------------------------
# Contenders: each is built from host arrays and returns (step() -> loss, synchronise())
# ------------------------------------------------------------------------------------------------


def build_chainrule(cp, params, x, y):
    import chainrule as cr
    import chainrule.numpy as cnp

    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    xd, yd = cp.asarray(x), cp.asarray(y)
    layers = len(p) // 2

    def loss(p, x, y):
        h = x
        for i in range(layers):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < layers - 1:
                h = cnp.maximum(h, 0)
        return cnp.mean(cnp.softmax_cross_entropy(h, y))

    def step():
        value, grads = cr.value_and_grad(loss)(p, xd, yd)
        for k in p:  # the update in place, as a training loop would keep its buffers
            p[k] -= LEARNING_RATE * grads[k]
        return value

    return step


def _hand_step(cp, p, x, y, layers):
    activations = [x]
    h = x
    for i in range(layers):
        h = h @ p[f"w{i}"] + p[f"b{i}"]
        if i < layers - 1:
            h = cp.maximum(h, 0)
        activations.append(h)
    shifted = h - h.max(axis=1, keepdims=True)
    exp = cp.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = cp.arange(y.shape[0])
    value = cp.mean(cp.log(total[:, 0]) - shifted[rows, y])
    grad_h = exp / total
    grad_h[rows, y] -= 1
    grad_h /= y.shape[0]
    for i in reversed(range(layers)):
        grad_w = activations[i].T @ grad_h
        grad_b = grad_h.sum(axis=0)
        if i:
            grad_h = (grad_h @ p[f"w{i}"].T) * (activations[i] > 0)
        p[f"w{i}"] -= LEARNING_RATE * grad_w
        p[f"b{i}"] -= LEARNING_RATE * grad_b
    return value


def build_cupy(cp, params, x, y):
    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    xd, yd = cp.asarray(x), cp.asarray(y)
    layers = len(p) // 2
    return lambda: _hand_step(cp, p, xd, yd, layers)


def build_cupy_graph(cp, params, x, y):
    """The hand step as one CUDA graph: static buffers, captured once, replayed per step.

    Each replay first copies the next batch into the static input buffers (here the same batch,
    from a second device buffer), as a training loop would. The warm-up and the captured run
    update the parameters too, so this contender's losses are not compared with the others'.
    """
    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    batch_x, batch_y = cp.asarray(x), cp.asarray(y)
    static_x, static_y = cp.empty_like(batch_x), cp.empty_like(batch_y)
    layers = len(p) // 2
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        static_x[...] = batch_x
        static_y[...] = batch_y
        _hand_step(cp, p, static_x, static_y, layers)  # warm-up: kernels compiled, pool filled
        stream.synchronize()
        stream.begin_capture()
        try:
            value = _hand_step(cp, p, static_x, static_y, layers)
        finally:
            graph = stream.end_capture()

    def step():
        with stream:
            static_x[...] = batch_x
            static_y[...] = batch_y
            graph.launch(stream)
        return value

    return step


def build_torch(params, x, y):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("PyTorch sees no CUDA device")
    dev = torch.device("cuda")
    p = {k: torch.tensor(v, device=dev, requires_grad=True) for k, v in params.items()}
    xd, yd = torch.tensor(x, device=dev), torch.tensor(y, device=dev)
    layers = len(p) // 2

    def step():
        h = xd
        for i in range(layers):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < layers - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.cross_entropy(h, yd)
        grads = torch.autograd.grad(loss, list(p.values()))
        with torch.no_grad():
            for tensor, grad in zip(p.values(), grads, strict=True):
                tensor -= LEARNING_RATE * grad
        return loss.detach()

    return step


def build_jax(params, x, y):
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "gpu":
        raise RuntimeError(f"JAX runs on {jax.default_backend()}, not the GPU")
    p = {k: jnp.asarray(v) for k, v in params.items()}
    xd, yd = jnp.asarray(x), jnp.asarray(y)
    layers = len(p) // 2

    def loss(p, x, y):
        h = x
        for i in range(layers):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < layers - 1:
                h = jax.nn.relu(h)
        logp = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(p, x, y):
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return {k: p[k] - LEARNING_RATE * grads[k] for k in p}, value

    state = {"p": p}

    def step():
        state["p"], value = update(state["p"], xd, yd)
        return value

    return step


# ------------------------------------------------------------------------------------------------


def _to_float(value):
    if hasattr(value, "get"):
        value = value.get()
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return float(np.asarray(value))


def time_interleaved(steps, sync, repetitions, calls):
    times = {name: [] for name in steps}
    for _ in range(repetitions):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                step()
            sync()
            times[name].append((time.perf_counter() - start) / calls)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, the first two MLPs")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = parser.parse_args(argv)
    try:
        import cupy as cp

        devices = cp.cuda.runtime.getDeviceCount()
    except Exception as error:  # no CuPy, or no driver/device
        print(f"bench_gpu: skipped, needs CuPy and a CUDA device ({type(error).__name__}: {error})")
        return 0
    if not devices:
        print("bench_gpu: skipped, CuPy sees no CUDA device")
        return 0
    props = cp.cuda.runtime.getDeviceProperties(0)
    print(f"bench_gpu: {props['name'].decode()}, CuPy {cp.__version__}, dtype {args.dtype}")
    dtype = np.dtype(args.dtype)
    repetitions, calls = (5, 20) if args.quick else (11, 50)
    mlps = list(MLPS.items())[:2] if args.quick else list(MLPS.items())
    builders = {
        "chainrule eager": lambda p, x, y: build_chainrule(cp, p, x, y),
        "cupy by hand": lambda p, x, y: build_cupy(cp, p, x, y),
        "cupy graph": lambda p, x, y: build_cupy_graph(cp, p, x, y),
        "torch eager": build_torch,
        "jax jit": build_jax,
    }

    def sync():
        cp.cuda.Device().synchronize()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()
        except ImportError:
            pass

    names = list(builders)
    header = f"{'MLP':28s}" + "".join(f"{n + ' ms':>18s}{'TFLOP/s':>9s}" for n in names)
    print(header)
    print("-" * len(header))
    for mlp_name, (sizes, batch) in mlps:
        params, x, y = make_problem(sizes, batch, dtype)
        reference = None
        steps, notes = {}, {}
        for name, build in builders.items():
            try:
                step = build(params, x, y)
                first = _to_float(step())
                if reference is None and name == "cupy by hand":
                    reference = first
                steps[name] = step
                notes[name] = first
            except Exception as error:  # a contender that cannot run reports why
                notes[name] = f"failed: {type(error).__name__}: {str(error)[:60]}"
        for _ in range(2):  # warm-up (JIT compilation, memory pools)
            for step in steps.values():
                step()
        times = time_interleaved(steps, sync, repetitions, calls)
        flops = step_flops(sizes, batch)
        cells = []
        for name in names:
            if name in times:
                median = statistics.median(times[name])
                cells.append(f"{median * 1e3:18.3f}{flops / median / 1e12:9.2f}")
            else:
                cells.append(f"{'-':>18s}{'-':>9s}")
        print(f"{mlp_name:28s}" + "".join(cells))
        for name in names:
            note = notes.get(name)
            if isinstance(note, str):
                print(f"    {name}: {note}")
            elif reference is not None and note is not None and name != "cupy by hand":
                if not np.isclose(note, reference, rtol=1e-3) and name != "cupy graph":
                    print(f"    {name}: first loss {note:.6f} differs from CuPy by hand {reference:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
