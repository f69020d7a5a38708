"""MLP training steps on a GPU: chainrule (eager and captured) against CuPy, PyTorch and JAX.

Run on a machine with an NVIDIA GPU, CuPy (``pip install cupy-cuda12x``) and the cuBLAS wheel
(``pip install nvidia-cublas-cu12``; PyTorch and JAX are optional peers):
``python benchmarks/bench_gpu.py [--quick]``. Without CuPy or a device it prints
``skipped: ...`` and exits 0, so that it can sit in any script.

The MLPs are the issue's: tiny 64-32-10 at batch 32, digits-size 64-256-256-10 at batch 128,
1024-wide 1024-1024-1024-1024-10 at batch 256, and 4096-wide 4096-4096-4096-4096-4096 at batch
4096 (batch 1024 with ``--quick``). Each step: ReLU hidden layers, softmax cross-entropy (mean over
the batch), backward, plain SGD; float32 (``--dtype float64`` for a check), TF32 off everywhere.

Contenders, timed in one interleaved run:

* chainrule eager: ``chainrule.value_and_grad`` on CuPy arrays, then the update in place;
* chainrule captured: the same step as a pure function under ``chainrule.backend.capture.capture``,
  a CUDA graph whose matmuls go through ``chainrule.backend.cuda.cublas`` (``copy_outputs=False``:
  the new parameters stay in the graph's output buffers and are fed back, one device copy per
  array);
* CuPy by hand: forward and backward written out with CuPy calls (``@`` is CuPy's cuBLAS);
* CuPy by hand, CUDA graph: the same hand step with its products through the cuBLAS binding,
  captured once with ``chainrule.backend.cuda.graph.capture_graph`` and replayed;
* PyTorch eager and PyTorch CUDA graph (``torch.cuda.graph`` with static inputs, the standard
  whole-step recipe: warm-up on a side stream, ``zero_grad(set_to_none=True)``, capture of
  forward, backward and ``optimizer.step()``), when PyTorch with CUDA is installed;
* JAX ``jit`` of the whole step (matmul precision "highest"), when JAX with a GPU is installed.

Each figure is the median over interleaved repetitions (each one synchronised with the device
before and after, and JAX's last result waited for); each contender runs enough steps per
repetition to last about 0.2 s. TFLOP/s counts the matrix products of a step: 2 x batch x
fan_in x fan_out each for the forward product and the weight gradient of every layer, and for
the input gradient of every layer but the first (no contender computes the gradient of the
data). Ratios are time / time of the PyTorch eager and
PyTorch graph steps of the same run. Before timing, every contender's first loss is compared with
CuPy by hand's. A contender that fails prints its error and the others go on.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

import numpy as np

MLPS = {  # name: (layer widths, batch size)
    "tiny 64-32-10 b32": ((64, 32, 10), 32),
    "digits 64-256-256-10 b128": ((64, 256, 256, 10), 128),
    "wide 1024x4-10 b256": ((1024, 1024, 1024, 1024, 10), 256),
    "big 4096x5 b4096": ((4096, 4096, 4096, 4096, 4096), 4096),
}
QUICK_BIG = ("big 4096x5 b1024 (--quick)", ((4096, 4096, 4096, 4096, 4096), 1024))

#: The issue's PyTorch CUDA-graph step times on an H100 (for reference next to this run's).
ISSUE_TORCH_GRAPH_MS = {
    "tiny 64-32-10 b32": 0.075,
    "digits 64-256-256-10 b128": 0.134,
    "wide 1024x4-10 b256": 0.332,
}
GRAPH_GOAL = 1.2  # captured chainrule within 1.2x of the PyTorch CUDA-graph step (small MLPs)
THROUGHPUT_GOAL = 0.97  # at least 0.97x PyTorch eager throughput (4096-wide)

LEARNING_RATE = 0.01
SECONDS_PER_REPETITION = 0.2

#: Contenders whose matrix products go through chainrule's cuBLAS binding.
THROUGH_BINDING = ("chainrule captured", "cupy graph (binding)")


def step_flops(sizes, batch) -> int:
    """Multiply-adds x 2 of one step's matrix products (see the module docstring)."""
    products = [a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)]
    return 2 * batch * (2 * sum(products) + sum(products[1:]))


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
# Contenders: each is built from host arrays and returns step() -> loss (any array kind)
# ------------------------------------------------------------------------------------------------


def _chainrule_loss(cp, params, x, y, fused_allowed=True):
    """chainrule's loss on CuPy arrays: the fused softmax cross-entropy when its value and
    gradient run on CuPy, else the same cross-entropy from one-hot labels (exp, log, sums and
    products only). Returns ``(loss function, labels argument, description)``."""
    import chainrule as cr
    import chainrule.numpy as cnp

    layers = len(params) // 2

    def logits(p, x):
        h = x
        for i in range(layers):
            h = h @ p[f"w{i}"] + p[f"b{i}"]
            if i < layers - 1:
                h = cnp.relu(h)
        return h

    def fused(p, x, labels):
        return cnp.mean(cnp.softmax_cross_entropy(logits(p, x), labels))

    def one_hot(p, x, onehot):
        h = logits(p, x)
        return cnp.mean(cnp.log(cnp.sum(cnp.exp(h), axis=1)) - cnp.sum(onehot * h, axis=1))

    onehot = cp.eye(params[f"w{layers - 1}"].shape[1], dtype=x.dtype)[y]
    if not fused_allowed:
        return one_hot, onehot, "one-hot cross-entropy"
    try:
        cr.value_and_grad(fused)(params, x, y)
        return fused, y, "fused softmax_cross_entropy"
    except Exception as error:  # the engine's fused op may not run on CuPy yet
        reason = f"{type(error).__name__}: {str(error)[:70]}"
        return one_hot, onehot, f"one-hot cross-entropy (the fused op failed on CuPy: {reason})"


def build_chainrule_eager(cp, params, x, y, notes):
    import chainrule as cr

    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    xd, yd = cp.asarray(x), cp.asarray(y)
    loss, labels, description = _chainrule_loss(cp, p, xd, yd)
    notes.append(f"chainrule loss: {description}")

    def step():
        value, grads = cr.value_and_grad(loss)(p, xd, labels)
        for k in p:  # the update in place, as a training loop would keep its buffers
            p[k] -= LEARNING_RATE * grads[k]
        return value

    return step


def build_chainrule_captured(cp, params, x, y, notes):
    import chainrule as cr
    from chainrule.backend.capture import CaptureError, capture

    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    xd, yd = cp.asarray(x), cp.asarray(y)

    def pure_step_of(loss):
        def pure_step(p, x, labels):
            value, grads = cr.value_and_grad(loss)(p, x, labels)
            return {k: p[k] - LEARNING_RATE * grads[k] for k in p}, value

        return pure_step

    loss, labels, _ = _chainrule_loss(cp, p, xd, yd)
    try:
        fast = capture(pure_step_of(loss), (p, xd, labels), copy_outputs=False)
    except CaptureError as error:  # e.g. the fused loss copies a host index array to the device
        loss, labels, description = _chainrule_loss(cp, p, xd, yd, fused_allowed=False)
        notes.append(
            f"chainrule captured: {description} (the fused loss did not capture: {str(error)[:90]})"
        )
        fast = capture(pure_step_of(loss), (p, xd, labels), copy_outputs=False)
    state = {"p": p}

    def step():
        state["p"], value = fast(state["p"], xd, labels)
        return value

    return step


def _hand_step(cp, p, x, y, layers, matmul):
    activations = [x]
    h = x
    for i in range(layers):
        h = matmul(h, p[f"w{i}"]) + p[f"b{i}"]
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
        grad_w = matmul(activations[i].T, grad_h)
        grad_b = grad_h.sum(axis=0)
        if i:
            grad_h = matmul(grad_h, p[f"w{i}"].T) * (activations[i] > 0)
        p[f"w{i}"] -= LEARNING_RATE * grad_w
        p[f"b{i}"] -= LEARNING_RATE * grad_b
    return value


def build_cupy(cp, params, x, y, notes):
    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    xd, yd = cp.asarray(x), cp.asarray(y)
    layers = len(p) // 2
    return lambda: _hand_step(cp, p, xd, yd, layers, cp.matmul)


def build_cupy_graph(cp, params, x, y, notes):
    """The hand step with its products through the binding, as one CUDA graph. Each replay first
    copies the batch into the static input buffers (here the same batch, from other buffers), as
    a training loop would. The eager warm-up updates the parameters once (a capture runs
    nothing), so the first loss reported is the warm-up's (the parameters' starting point)."""
    from chainrule.backend.cuda import cublas
    from chainrule.backend.cuda.graph import capture_graph

    p = {k: cp.array(v, copy=True) for k, v in params.items()}
    batch_x, batch_y = cp.asarray(x), cp.asarray(y)
    static_x, static_y = batch_x.copy(), batch_y.copy()
    layers = len(p) // 2
    graph, warm_value, static_value = capture_graph(
        lambda: _hand_step(cp, p, static_x, static_y, layers, cublas.matmul), what="the hand step"
    )
    state = {"first": warm_value}

    def step():
        static_x[...] = batch_x
        static_y[...] = batch_y
        graph.launch()
        if state["first"] is not None:
            first, state["first"] = state["first"], None
            return first
        return static_value

    return step


def _torch_setup(params, x, y):
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("PyTorch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = torch.device("cuda")
    p = [
        torch.tensor(params[k], device=device, requires_grad=True)
        for k in sorted(params, key=_layer_order)
    ]
    return torch, p, torch.tensor(x, device=device), torch.tensor(y, device=device)


def _layer_order(key):
    return int(key[1:]), key[0] != "w"  # w0, b0, w1, b1, ...


def _torch_loss(torch, p, x, y):
    h = x
    layers = len(p) // 2
    for i in range(layers):
        h = h @ p[2 * i] + p[2 * i + 1]
        if i < layers - 1:
            h = torch.relu(h)
    return torch.nn.functional.cross_entropy(h, y)


def build_torch(params, x, y, notes):
    torch, p, xd, yd = _torch_setup(params, x, y)
    optimizer = torch.optim.SGD(p, lr=LEARNING_RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = _torch_loss(torch, p, xd, yd)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def build_torch_graph(params, x, y, notes):
    torch, p, xd, yd = _torch_setup(params, x, y)
    optimizer = torch.optim.SGD(p, lr=LEARNING_RATE)
    static_x, static_y = xd.clone(), yd.clone()
    initial = [q.detach().clone() for q in p]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as the recipe asks
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            _torch_loss(torch, p, static_x, static_y).backward()
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    with torch.no_grad():  # back to the starting point, so that the first loss compares
        for q, start in zip(p, initial, strict=True):
            q.copy_(start)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    # thread_local: JAX's and CuPy's threads in this process are not the capture's business
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_loss = _torch_loss(torch, p, static_x, static_y)
        static_loss.backward()
        optimizer.step()

    def step():
        static_x.copy_(xd)
        static_y.copy_(yd)
        graph.replay()
        return static_loss

    return step


def build_jax(params, x, y, notes):
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "gpu":
        raise RuntimeError(f"JAX runs on {jax.default_backend()}, not the GPU")
    jax.config.update(
        "jax_default_matmul_precision", "highest"
    )  # no TF32 (JAX's default allows it)
    if x.dtype == np.float64:  # without x64, JAX would compute float64 inputs in float32
        jax.config.update("jax_enable_x64", True)
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
# Timing and reporting
# ------------------------------------------------------------------------------------------------


def _to_float(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "get"):
        value = value.get()
    return float(np.asarray(value))


def _make_sync(cp):
    try:
        import torch

        torch_sync = torch.cuda.synchronize if torch.cuda.is_available() else None
    except ImportError:
        torch_sync = None

    def sync():
        cp.cuda.Device().synchronize()
        if torch_sync is not None:
            torch_sync()

    return sync


def _wait_for(value):
    """Wait for a JAX result: JAX may queue its work after a device synchronisation has returned."""
    block = getattr(value, "block_until_ready", None)
    if block is not None:
        block()


def _calls_per_repetition(step, sync):
    sync()
    start = time.perf_counter()
    for _ in range(3):
        value = step()
    _wait_for(value)
    sync()
    per_step = max((time.perf_counter() - start) / 3, 1e-6)
    return int(min(max(SECONDS_PER_REPETITION / per_step, 3), 10_000))


def time_interleaved(steps, calls, sync, repetitions):
    times = {name: [] for name in steps}
    for _ in range(repetitions):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            for _ in range(calls[name]):
                value = step()
            _wait_for(value)
            sync()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(values) for name, values in times.items()}


def _print_environment(cp):
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"GPU: {name}; CuPy {cp.__version__}; CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}")
    override = os.environ.get("NVIDIA_TF32_OVERRIDE", "unset")
    print(
        "TF32: off (CuPy: CUPY_TF32=" + os.environ.get("CUPY_TF32", "unset") + "; chainrule: "
        "matmul_precision 'highest'; PyTorch: allow_tf32=False, float32 matmul precision "
        "'highest'; "
        "JAX: matmul precision 'highest', x64 only for --dtype float64; "
        f"NVIDIA_TF32_OVERRIDE={override})"
    )
    try:
        from chainrule.backend.cuda import cublas

        info = cublas.describe()
        routines = (
            cublas.gemm_routine("float32", "highest", False),
            cublas.gemm_routine("float32", "highest", True),
        )
        print(
            f"cuBLAS binding: {info['path']} (cuBLAS {info['version']}); float32 products through "
            f"{routines[0]} (ctypes Sgemm; {routines[1]} for batches; cublasGemmEx only for the "
            "tf32/bf16 "
            "precision modes)"
        )
    except Exception as error:
        print(
            f"cuBLAS binding: unavailable ({type(error).__name__}: {error}); its contenders will "
            "fail"
        )


def _report(mlp_name, sizes, batch, times, notes, first_losses, reference):
    flops = step_flops(sizes, batch)
    torch_eager, torch_graph = times.get("torch eager"), times.get("torch graph")
    print(f"\n== {mlp_name}: {flops / 1e9:.3f} GFLOP per step")
    print(
        f"{'contender':24s}{'ms':>10s}{'TFLOP/s':>9s}{'/torch eager':>14s}{'/torch graph':>14s}"
        f"{'first loss':>12s}"
    )
    for name, seconds in times.items():
        over_eager = f"{seconds / torch_eager:14.2f}" if torch_eager else f"{'-':>14s}"
        over_graph = f"{seconds / torch_graph:14.2f}" if torch_graph else f"{'-':>14s}"
        loss = first_losses.get(name)
        print(
            f"{name:24s}{seconds * 1e3:10.3f}{flops / seconds / 1e12:9.2f}{over_eager}{over_graph}"
            f"{loss:12.5f}"
        )
    for name, note in notes.items():
        print(f"    {name}: {note}")
    for name, loss in first_losses.items():
        if (
            reference is not None
            and name != "cupy by hand"
            and not np.isclose(loss, reference, rtol=1e-3)
        ):
            print(f"    {name}: first loss {loss:.6f} differs from CuPy by hand's {reference:.6f}")
    if times:
        fastest = min(times, key=times.get)
        via = (
            "through the cuBLAS binding"
            if fastest in THROUGH_BINDING
            else "not through the binding"
        )
        print(f"fastest: {fastest} ({via})")
    captured = times.get("chainrule captured")
    if mlp_name in ISSUE_TORCH_GRAPH_MS:
        issue = ISSUE_TORCH_GRAPH_MS[mlp_name]
        if captured and torch_graph:
            ratio = captured / torch_graph
            verdict = "met" if ratio <= GRAPH_GOAL else "NOT MET"
            print(
                f"goal: chainrule captured within {GRAPH_GOAL}x of the PyTorch CUDA graph: "
                f"{ratio:.2f}x, "
                f"{verdict} "
                f"(the issue's PyTorch graph: {issue * 1e3:.0f} us; this run's: "
                f"{torch_graph * 1e6:.0f} us)"
            )
        else:
            print(
                "goal: chainrule captured vs PyTorch CUDA graph: not measured (a contender failed)"
            )
    elif sizes[0] == 4096:
        best_name = min(
            ("chainrule captured", "chainrule eager"), key=lambda n: times.get(n, float("inf"))
        )
        if best_name in times and torch_eager:
            throughput = torch_eager / times[best_name]
            verdict = "met" if throughput >= THROUGHPUT_GOAL else "NOT MET"
            print(
                f"goal: at least {THROUGHPUT_GOAL}x PyTorch eager throughput: {best_name} "
                f"{throughput:.3f}x, {verdict}"
            )
        else:
            print("goal: throughput vs PyTorch eager: not measured (a contender failed)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="5 repetitions; the 4096-wide MLP at batch 1024"
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument(
        "--repetitions",
        type=int,
        default=None,
        help="interleaved repetitions (default 11, quick 5)",
    )
    parser.add_argument(
        "--only", default=None, help="run only the MLPs whose name contains this text"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault(
        "XLA_PYTHON_CLIENT_PREALLOCATE", "false"
    )  # JAX must not take the GPU's memory
    try:
        import cupy as cp

        devices = cp.cuda.runtime.getDeviceCount()
    except Exception as error:  # no CuPy, or no driver/device
        print(f"bench_gpu: skipped: needs CuPy and a CUDA device ({type(error).__name__}: {error})")
        return 0
    if not devices:
        print("bench_gpu: skipped: CuPy sees no CUDA device")
        return 0
    _print_environment(cp)
    dtype = np.dtype(args.dtype)
    repetitions = args.repetitions or (5 if args.quick else 11)
    mlps = dict(MLPS)
    if args.quick:
        del mlps["big 4096x5 b4096"]
        mlps[QUICK_BIG[0]] = QUICK_BIG[1]
    if args.only:
        mlps = {name: spec for name, spec in mlps.items() if args.only in name}
    builders = {
        "chainrule eager": lambda p, x, y, n: build_chainrule_eager(cp, p, x, y, n),
        "chainrule captured": lambda p, x, y, n: build_chainrule_captured(cp, p, x, y, n),
        "cupy by hand": lambda p, x, y, n: build_cupy(cp, p, x, y, n),
        "cupy graph (binding)": lambda p, x, y, n: build_cupy_graph(cp, p, x, y, n),
        "torch eager": build_torch,
        "torch graph": build_torch_graph,
        "jax jit": build_jax,
    }
    sync = _make_sync(cp)
    print(
        f"dtype {dtype.name}; {repetitions} interleaved repetitions of about "
        f"{SECONDS_PER_REPETITION} s "
        "per contender"
    )
    for mlp_name, (sizes, batch) in mlps.items():
        params, x, y = make_problem(sizes, batch, dtype)
        steps, notes, first_losses, build_notes = {}, {}, {}, []
        for name, build in builders.items():
            try:
                step = build(params, x, y, build_notes)
                first_losses[name] = _to_float(step())
                steps[name] = step
            except Exception as error:  # a contender that cannot run reports why
                notes[name] = f"failed: {type(error).__name__}: {str(error)[:300]}"
        for index, line in enumerate(dict.fromkeys(build_notes)):
            notes[f"note {index + 1}"] = line
        calls = {}
        for name, step in steps.items():  # warm-up, and as many calls as fit a repetition
            step()
            calls[name] = _calls_per_repetition(step, sync)
        times = time_interleaved(steps, calls, sync, repetitions)
        _report(
            mlp_name, sizes, batch, times, notes, first_losses, first_losses.get("cupy by hand")
        )
        del steps
        gc.collect()
        cp.get_default_memory_pool().free_all_blocks()
    return 0


if __name__ == "__main__":
    sys.exit(main())
