"""How fast is chainrule's reverse mode, next to the same work written by hand and to PyTorch?

Run with ``make bench`` (or ``python benchmarks/bench_engine.py [--quick]``). One run prints:

(a) microseconds per recorded elementwise op on a (4,) array (forward only, inputs that require
    grad), beside the floor of any Python-level operator (one that only runs the ufunc), and a
    100-op chain forward + backward, against PyTorch CPU eager;
(b) one SGD training step (forward, fused softmax cross-entropy, backward, update) of three
    ReLU MLPs, written with chainrule's eager Tensor API, with ``value_and_grad`` of the loss of
    a params list, by hand in NumPy (forward and backward derived on paper) and in PyTorch CPU
    eager;
(c) time(loss and gradient) / time(loss) for chainrule's ``value_and_grad`` and for the
    hand-written code;
(d) the peak memory (tracemalloc, which sees NumPy's allocations) of the widest step;

and a table of the targets, each marked met or not met.

Method: everything runs on one thread, pinned to one core where the OS allows it. The
contenders of a measurement are timed in interleaved repetitions (A, B, C, A, B, C, ...), so a
slow moment of the machine hits all of them alike; every figure is the median over repetitions
and every ratio is the median of the ratios within each repetition. Objects alive before timing
starts are frozen out of the cyclic garbage collector (``gc.freeze``), so that PyTorch's import
does not slow the contenders that make many Python objects. Before any timing, every contender's
loss and gradient are checked against the hand-written ones. PyTorch is an optional peer
(``make bench-peers`` installs the pinned CPU build); without it its columns read "-".
"""

from __future__ import annotations

import os

# One thread everywhere, set before NumPy (and its BLAS) is imported.
for _variable in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_variable] = "1"
if hasattr(os, "sched_setaffinity"):
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except OSError:  # pragma: no cover - some containers forbid it
        pass

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

import chainrule as cr  # noqa: E402
import chainrule.numpy as cnp  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # PyTorch is an optional peer
    torch = None

DTYPE = np.float32
LEARNING_RATE = 0.01
MLPS = {  # name: (layer widths, batch size)
    "tiny": ((64, 32, 10), 32),
    "digits": ((64, 256, 256, 10), 128),
    "wide": ((1024, 1024, 1024, 1024, 10), 256),
}


# ------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------


def _calibrate(fn, budget):
    """How many calls of ``fn`` fill about ``budget`` seconds (at least one)."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(budget / once))


def measure(contenders, repeats, budget):
    """Seconds per call of each contender: {name: [one figure per repetition]}, interleaved."""
    numbers = {name: _calibrate(fn, budget) for name, fn in contenders.items()}
    samples = {name: [] for name in contenders}
    # Objects that exist now (PyTorch's import alone brings ~150,000) are moved out of the cyclic
    # collector's sight: otherwise every full collection walks them, a cost that falls on the
    # contenders that allocate many Python objects and that a process without the peer never pays.
    gc.collect()
    gc.freeze()
    for _ in range(repeats):
        for name, fn in contenders.items():
            number = numbers[name]
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return samples


def median(values):
    return statistics.median(values)


def paired_ratio(samples, numerator, denominator):
    """Median over repetitions of numerator/denominator measured in the same repetition."""
    return median([a / b for a, b in zip(samples[numerator], samples[denominator], strict=True)])


# ------------------------------------------------------------------------------------------------
# (a) per-op overhead and a 100-op chain
# ------------------------------------------------------------------------------------------------
OPS_PER_CALL = 100


def unrolled(expression, **values):
    """A function that evaluates ``expression`` OPS_PER_CALL times, ten per turn of its loop (so
    the loop's own cost stays small); ``values`` become its local variables."""
    lines = [f"def run({', '.join(f'{name}={name}' for name in values)}):"]
    lines.append(f"    for _ in range({OPS_PER_CALL // 10}):")
    lines += [f"        result = {expression}"] * 10
    lines.append("    return result")
    namespace = dict(values)
    exec("\n".join(lines), namespace)  # a fixed template, filled in here
    return namespace["run"]


class _Floor:
    """The least any Python-level operator costs: ``__mul__`` runs the ufunc on the wrapped
    arrays and returns the bare result, recording nothing and building no object. A recorded op
    pays this, plus building its result tensor."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __mul__(self, other):
        return np.multiply(self.data, other.data)


def bench_ops(repeats, budget):
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, 4)
    b = rng.uniform(0.5, 1.0, 4)
    x = cr.Tensor(a, requires_grad=True)
    y = cr.Tensor(b, requires_grad=True)
    floor_x, floor_y = _Floor(a), _Floor(b)
    contenders = {
        "numpy x*y": unrolled("a * b", a=a, b=b),
        "floor x*y": unrolled("x * y", x=floor_x, y=floor_y),
        "chainrule x*y": unrolled("x * y", x=x, y=y),
        "chainrule x+1.0": unrolled("x + 1.0", x=x),
        "chainrule exp(x)": unrolled("exp(x)", exp=cnp.exp, x=x),
    }

    w = cr.Tensor(rng.uniform(0.5, 1.0, 4), requires_grad=True)
    bias = cr.Tensor(rng.uniform(-0.1, 0.1, 4), requires_grad=True)

    def chainrule_chain():
        out = x
        for _ in range(50):
            out = out * w
            out = out + bias
        out.sum().backward()
        x.grad = w.grad = bias.grad = None

    contenders["chainrule chain"] = chainrule_chain

    if torch is not None:
        tx = torch.tensor(a, requires_grad=True)
        ty = torch.tensor(b, requires_grad=True)
        tw = torch.tensor(np.array(w.data), requires_grad=True)
        tb = torch.tensor(np.array(bias.data), requires_grad=True)

        def torch_chain():
            out = tx
            for _ in range(50):
                out = out * tw
                out = out + tb
            out.sum().backward()
            tx.grad = tw.grad = tb.grad = None

        contenders.update(
            {
                "torch x*y": unrolled("x * y", x=tx, y=ty),
                "torch x+1.0": unrolled("x + 1.0", x=tx),
                "torch exp(x)": unrolled("exp(x)", exp=torch.exp, x=tx),
                "torch chain": torch_chain,
            }
        )

    # The chain's gradients must agree before its speed means anything.
    if torch is not None:
        chainrule_chain_check(x, w, bias, tx, tw, tb)

    return measure(contenders, repeats, budget)


def chainrule_chain_check(x, w, bias, tx, tw, tb):
    out, tout = x, tx
    for _ in range(50):
        out = out * w + bias
        tout = tout * tw + tb
    out.sum().backward()
    tout.sum().backward()
    for mine, theirs in ((x, tx), (w, tw), (bias, tb)):
        assert np.allclose(mine.grad, theirs.grad.numpy()), "chain gradients differ from PyTorch's"
        mine.grad = None
        theirs.grad = None


# ------------------------------------------------------------------------------------------------
# (b), (c), (d): MLP training steps
# ------------------------------------------------------------------------------------------------


def named_mlp_logits(params, x, relu):
    """The logits of an MLP whose ``params`` are named ``w0, b0, w1, ...`` (the benchmarks of
    steps, capture and vmap): one forward pass written once for every library, ``relu`` being
    that library's own."""
    layers = len(params) // 2
    h = x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = relu(h)
    return h


def init_mlp(widths, seed=0):
    """Weights as a list of (W, b) pairs of float32 arrays (Glorot-uniform W, zero b)."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params.append(
            (rng.uniform(-limit, limit, (fan_in, fan_out)).astype(DTYPE), np.zeros(fan_out, DTYPE))
        )
    return params


def make_batch(widths, batch, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, widths[0])).astype(DTYPE)
    labels = rng.integers(0, widths[-1], batch)
    return x, labels


# -- by hand in NumPy ------------------------------------------------------------------------------


def numpy_loss(params, x, labels):
    h = x
    for weight, bias in params[:-1]:
        h = np.maximum(h @ weight + bias, 0)
    weight, bias = params[-1]
    logits = h @ weight + bias
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return np.mean(log_norm - shifted[np.arange(len(labels)), labels])


def numpy_loss_and_grad(params, x, labels):
    """Forward keeping each layer's output, then the backward pass derived by hand."""
    batch = len(labels)
    rows = np.arange(batch)
    activations = [x]
    h = x
    for weight, bias in params[:-1]:
        h = np.maximum(h @ weight + bias, 0)
        activations.append(h)
    weight, bias = params[-1]
    logits = h @ weight + bias
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    delta = exp / total  # d loss / d logits = (softmax - onehot) / batch
    delta[rows, labels] -= 1
    delta /= batch
    grads = [None] * len(params)
    for layer in range(len(params) - 1, -1, -1):
        weight, _ = params[layer]
        h_in = activations[layer]
        grads[layer] = (h_in.T @ delta, delta.sum(axis=0))
        if layer:
            delta = (delta @ weight.T) * (h_in > 0)  # ReLU passes where its output is positive
    return loss, grads


def numpy_step(params, x, labels):
    loss, grads = numpy_loss_and_grad(params, x, labels)
    for (weight, bias), (d_weight, d_bias) in zip(params, grads, strict=True):
        weight -= LEARNING_RATE * d_weight
        bias -= LEARNING_RATE * d_bias
    return loss


# -- chainrule ------------------------------------------------------------------------------------


def chainrule_loss(params, x, labels):
    """The loss written once with chainrule.numpy: runs on arrays, Tensors or any tracer."""
    h = x
    for weight, bias in params[:-1]:
        h = cnp.relu(h @ weight + bias)
    weight, bias = params[-1]
    return cnp.mean(cnp.softmax_cross_entropy(h @ weight + bias, labels))


def chainrule_step(tensors, x, labels):
    loss = chainrule_loss(tensors, x, labels)
    loss.backward()
    with cr.no_grad():
        for pair in tensors:
            for tensor in pair:
                tensor -= LEARNING_RATE * tensor.grad
                tensor.grad = None
    return loss


def functional_step(value_and_grad, params, x, labels):
    """The same step through ``value_and_grad`` of the loss of a params list (plain arrays in,
    plain arrays out), updated in place as the hand-written step is."""
    loss, grads = value_and_grad(params, x, labels)
    for (weight, bias), (d_weight, d_bias) in zip(params, grads, strict=True):
        weight -= LEARNING_RATE * d_weight
        bias -= LEARNING_RATE * d_bias
    return loss


# -- PyTorch
# ----------------------------------------------------------------------------------------


def torch_loss(params, x, labels):
    h = x
    for weight, bias in params[:-1]:
        h = torch.relu(h @ weight + bias)
    weight, bias = params[-1]
    return torch.nn.functional.cross_entropy(h @ weight + bias, labels)


def torch_step(tensors, x, labels):
    loss = torch_loss(tensors, x, labels)
    loss.backward()
    with torch.no_grad():
        for pair in tensors:
            for tensor in pair:
                tensor -= LEARNING_RATE * tensor.grad
                tensor.grad = None
    return loss


def torch_loss_and_grad(params, x, labels):
    flat = [t for pair in params for t in pair]
    loss = torch_loss(params, x, labels)
    return loss, torch.autograd.grad(loss, flat)


def torch_loss_only(params, x, labels):
    with torch.no_grad():
        return torch_loss(params, x, labels)


def check_same_gradients(params, x, labels):
    """All contenders compute the same loss and gradient (else their timings mean nothing)."""
    loss, grads = numpy_loss_and_grad(params, x, labels)
    value, cr_grads = cr.value_and_grad(chainrule_loss)(params, x, labels)
    tolerance = dict(rtol=2e-3, atol=2e-5)
    assert np.allclose(value, loss, **tolerance), (value, loss)
    for mine, theirs in zip(cr_grads, grads, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert np.allclose(a, b, **tolerance), (
                "chainrule's gradient differs from the hand-written one"
            )
    if torch is not None:
        tparams = [tuple(torch.tensor(p, requires_grad=True) for p in pair) for pair in params]
        tloss, tgrads = torch_loss_and_grad(tparams, torch.tensor(x), torch.tensor(labels))
        assert np.allclose(tloss.item(), loss, **tolerance)
        flat = [g for pair in grads for g in pair]
        for a, b in zip(tgrads, flat, strict=True):
            assert np.allclose(a.numpy(), b, **tolerance), (
                "PyTorch's gradient differs from the hand-written one"
            )


def bench_mlp(name, repeats, budget):
    widths, batch = MLPS[name]
    params = init_mlp(widths)
    x, labels = make_batch(widths, batch)
    check_same_gradients(params, x, labels)

    # Each contender trains its own copy (the updates are tiny, the work per step the same).
    numpy_params = [(w.copy(), b.copy()) for w, b in params]
    cr_params = [
        (cr.Tensor(w.copy(), requires_grad=True), cr.Tensor(b.copy(), requires_grad=True))
        for w, b in params
    ]
    value_and_grad = cr.value_and_grad(chainrule_loss)
    functional_params = [(w.copy(), b.copy()) for w, b in params]
    steps = {
        "numpy": lambda: numpy_step(numpy_params, x, labels),
        "chainrule": lambda: chainrule_step(cr_params, x, labels),
        "chainrule value_and_grad": lambda: functional_step(
            value_and_grad, functional_params, x, labels
        ),
    }
    ratios = {
        "numpy loss": lambda: numpy_loss(params, x, labels),
        "numpy loss+grad": lambda: numpy_loss_and_grad(params, x, labels),
        "chainrule loss": lambda: chainrule_loss(params, x, labels),
        "chainrule loss+grad": lambda: value_and_grad(params, x, labels),
    }
    if torch is not None:
        torch_params = [tuple(torch.tensor(p, requires_grad=True) for p in pair) for pair in params]
        torch_step_params = [
            tuple(torch.tensor(p.copy(), requires_grad=True) for p in pair) for pair in params
        ]
        tx, tlabels = torch.tensor(x), torch.tensor(labels)
        steps["torch"] = lambda: torch_step(torch_step_params, tx, tlabels)
        ratios["torch loss"] = lambda: torch_loss_only(torch_params, tx, tlabels)
        ratios["torch loss+grad"] = lambda: torch_loss_and_grad(torch_params, tx, tlabels)
    step_samples = measure(steps, repeats, budget)
    ratio_samples = measure(ratios, repeats, budget)
    memory = peak_memory(numpy_params, cr_params, x, labels) if name == "wide" else None
    return step_samples, ratio_samples, memory


def _peak_of(fn):
    fn()  # warm up outside the measurement
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def peak_memory(numpy_params, cr_params, x, labels):
    return {
        "numpy": _peak_of(lambda: numpy_step(numpy_params, x, labels)),
        "chainrule": _peak_of(lambda: chainrule_step(cr_params, x, labels)),
    }


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def print_table(title, header, rows):
    print(f"\n{title}")
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells):  # first column left-aligned, the figures right-aligned
        return "  ".join(
            f"{cell:<{w}}" if i == 0 else f"{cell:>{w}}"
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(header))
    print("-" * len(line(header)))
    for row in rows:
        print(line(row))


def us(seconds):
    return f"{seconds * 1e6:.2f}"


def ms(seconds):
    return f"{seconds * 1e3:.3f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (fewer, shorter repetitions)"
    )
    args = parser.parse_args(argv)
    repeats, budget = (5, 0.02) if args.quick else (21, 0.1)

    cpu = _cpu_name()
    torch_version = torch.__version__ if torch is not None else "not installed"
    pinned = (
        f" (pinned to core {min(os.sched_getaffinity(0))})"
        if hasattr(os, "sched_getaffinity")
        else ""
    )
    print(
        f"chainrule {cr.__version__} | Python {platform.python_version()} | NumPy "
        f"{np.__version__} | "
        f"PyTorch {torch_version}\nCPU: {cpu} | {blas_description()} | 1 thread{pinned}"
        f" | {repeats} interleaved repetitions, medians | float32 MLPs\n{allocator_description()}"
    )
    targets = []  # (target, measured, limit, met)

    def per_torch(samples, key):
        return us(median(samples[key]) / OPS_PER_CALL) if key in samples else "-"

    # (a)
    samples = bench_ops(repeats, budget)
    rows = []
    for label, key in (("x * y", "x*y"), ("x + 1.0", "x+1.0"), ("cnp.exp(x)", "exp(x)")):
        rows.append(
            [
                label,
                us(median(samples[f"chainrule {key}"]) / OPS_PER_CALL),
                per_torch(samples, f"torch {key}"),
                us(median(samples["numpy x*y"]) / OPS_PER_CALL) if key == "x*y" else "",
            ]
        )
    print_table(
        "(a) microseconds per recorded op on a (4,) float64 array, inputs require grad (forward "
        "only)",
        ["op", "chainrule", "torch", "numpy (untracked)"],
        rows,
    )
    per_op_ratio = paired_ratio(samples, "chainrule x*y", "numpy x*y")
    print(
        "    floor of any Python-level operator (a __mul__ that only runs the ufunc, records "
        f"nothing): {paired_ratio(samples, 'floor x*y', 'numpy x*y'):.2f}x NumPy's x * y"
    )
    targets.append(
        (
            "recorded x * y vs NumPy's untracked x * y",
            f"{per_op_ratio:.2f}x",
            "<= 1.30x",
            per_op_ratio <= 1.3,
        )
    )
    chain = median(samples["chainrule chain"])
    chain_rows = [
        [
            "100-op chain forward+backward",
            us(chain),
            us(median(samples["torch chain"])) if torch else "-",
        ]
    ]
    if torch is not None:
        chain_ratio = paired_ratio(samples, "chainrule chain", "torch chain")
        chain_rows[0].append(f"{chain_ratio:.3f}")
        targets.append(
            ("100-op chain fwd+bwd vs torch", f"{chain_ratio:.3f}x", "<= 0.50x", chain_ratio <= 0.5)
        )
    else:
        chain_rows[0].append("-")
        targets.append(("100-op chain fwd+bwd vs torch", "torch not installed", "<= 0.50x", None))
    print_table(
        "    chain: y = y * w + b, 50 times, then sum().backward() (microseconds)",
        ["", "chainrule", "torch", "chainrule/torch"],
        chain_rows,
    )

    # (b), (c), (d)
    step_rows, ratio_rows = [], []
    memory = None
    step_limits = {"tiny": 2.0, "digits": 1.05, "wide": 1.02}
    for name in MLPS:
        widths, batch = MLPS[name]
        step_samples, ratio_samples, mem = bench_mlp(name, repeats, budget)
        if mem is not None:
            memory = mem
        label = f"{name} {'-'.join(map(str, widths))} b{batch}"
        step_ratio = paired_ratio(step_samples, "chainrule", "numpy")
        functional_ratio = paired_ratio(step_samples, "chainrule value_and_grad", "numpy")
        has_torch = "torch" in step_samples
        step_rows.append(
            [
                label,
                ms(median(step_samples["numpy"])),
                ms(median(step_samples["chainrule"])),
                ms(median(step_samples["chainrule value_and_grad"])),
                ms(median(step_samples["torch"])) if has_torch else "-",
                f"{step_ratio:.3f}",
                f"{functional_ratio:.3f}",
                f"{paired_ratio(step_samples, 'torch', 'numpy'):.3f}" if has_torch else "-",
            ]
        )
        limit = step_limits[name]
        for way, ratio in (("Tensor", step_ratio), ("value_and_grad", functional_ratio)):
            targets.append(
                (
                    f"{name} step ({way}) vs hand-written",
                    f"{ratio:.3f}x",
                    f"<= {limit:.2f}x",
                    ratio <= limit,
                )
            )

        hand = paired_ratio(ratio_samples, "numpy loss+grad", "numpy loss")
        mine = paired_ratio(ratio_samples, "chainrule loss+grad", "chainrule loss")
        relative = median(
            [
                (cg / cl) / (ng / nl)
                for cg, cl, ng, nl in zip(
                    ratio_samples["chainrule loss+grad"],
                    ratio_samples["chainrule loss"],
                    ratio_samples["numpy loss+grad"],
                    ratio_samples["numpy loss"],
                    strict=True,
                )
            ]
        )
        ratio_rows.append(
            [
                label,
                ms(median(ratio_samples["numpy loss"])),
                f"{hand:.2f}",
                ms(median(ratio_samples["chainrule loss"])),
                f"{mine:.2f}",
                f"{paired_ratio(ratio_samples, 'torch loss+grad', 'torch loss'):.2f}"
                if has_torch
                else "-",
                f"{relative:.3f}",
            ]
        )
        targets.append(
            (
                f"{name} grad/loss ratio vs hand-written",
                f"{relative:.3f}x",
                "0.95x .. 1.05x",
                abs(relative - 1) <= 0.05,
            )
        )
    print_table(
        "(b) one SGD step: forward, softmax cross-entropy, backward, update (milliseconds)",
        [
            "MLP",
            "by hand",
            "chainrule",
            "value_and_grad",
            "torch",
            "chainrule/hand",
            "value_and_grad/hand",
            "torch/hand",
        ],
        step_rows,
    )
    print_table(
        "(c) time(loss and gradient) / time(loss); chainrule: value_and_grad on arrays vs the "
        "loss on arrays",
        [
            "MLP",
            "hand loss ms",
            "hand ratio",
            "chainrule loss ms",
            "chainrule ratio",
            "torch ratio",
            "chainrule ratio / hand ratio",
        ],
        ratio_rows,
    )
    mem_ratio = memory["chainrule"] / memory["numpy"]
    print_table(
        "(d) peak memory of one wide step above what exists before it (tracemalloc, MiB)",
        ["", "by hand", "chainrule", "chainrule/hand"],
        [
            [
                "wide step",
                f"{memory['numpy'] / 2**20:.2f}",
                f"{memory['chainrule'] / 2**20:.2f}",
                f"{mem_ratio:.3f}",
            ]
        ],
    )
    targets.append(
        ("wide step peak memory vs hand-written", f"{mem_ratio:.3f}x", "<= 1.00x", mem_ratio <= 1.0)
    )

    print_table(
        "Targets",
        ["target", "measured", "goal", "status"],
        [
            [t, m, g, "n/a" if ok is None else ("met" if ok else "NOT MET")]
            for t, m, g, ok in targets
        ],
    )
    return 0


def blas_description():
    """NumPy's BLAS and the kernels it runs on this CPU. OpenBLAS picks its kernels from the CPU
    it detects, and ``OPENBLAS_CORETYPE`` overrides the choice: a virtual machine that forces
    ``Haswell`` (AVX2) kernels on an AVX-512 CPU runs float32 matmuls ~1.7x slower than the
    detected ``SkylakeX`` ones, while XLA (JAX) picks its own, so a ratio to JAX jit depends on
    this line."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # an old NumPy, or a build without the record
        name = "BLAS unknown"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        kernels = "kernels unknown (no threadpoolctl)"
    else:
        found = [i.get("architecture") for i in threadpool_info() if i.get("user_api") == "blas"]
        kernels = f"{found[0]} kernels" if found and found[0] else "kernels unknown"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return f"{name}, {kernels}" + (f" (OPENBLAS_CORETYPE={forced})" if forced else "")


def allocator_description():
    """Apply chainrule's host-allocator policy now (``chainrule.util.host_memory``: the engine
    applies it at its first backward pass), so that every contender, hand-written NumPy and
    PyTorch included, is measured under the same ``malloc`` from the first repetition, and say
    which it is. glibc's own self-adjusting thresholds put a step into a page-faulting mode or not
    depending on the order of earlier allocations (the digits step: 1.09x or 1.67x hand NumPy)."""
    from chainrule.util import host_memory

    host_memory.apply_default_policy()
    limit = host_memory.kept_limit()
    if limit is None:
        return "malloc as it is (chainrule.util.host_memory not applied)"
    return f"malloc keeps up to {limit / 2**30:.1f} GiB freed (chainrule.util.host_memory)"


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
