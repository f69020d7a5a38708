"""One training step, six ways: chainrule eager, captured and jit, PyTorch eager, JAX eager and jit.

Run with ``python benchmarks/bench_step_peers.py [--quick]``. For each MLP (ReLU hidden layers,
mean softmax cross-entropy, float32) and each optimizer (plain SGD, Adam) it times one step:
loss, gradient and update of a params dict, returning the new params and the loss, written

* by hand in NumPy (forward and backward derived on paper, the floor);
* with chainrule eager: ``value_and_grad`` of the loss and ``chainrule.optim``'s update;
* with the same step under ``chainrule.capture``, replayed;
* with the same step under ``chainrule.jit``, staged once (the update too), replayed;
* with PyTorch eager (``torch.func.grad_and_value`` and the same update written in torch);
* with JAX, eager (op by op) and under ``jax.jit`` (XLA fuses the step);

PyTorch and JAX are optional peers (``make bench-peers``); without them their columns read "-".
Method: one thread everywhere (``bench_engine`` pins the core and sets the thread variables
before NumPy loads; torch and XLA are told one thread too), contenders interleaved in every
repetition, figures are medians, ratios are medians of per-repetition ratios. Every contender's
new params after one step are checked against the hand-written step first.
"""

from __future__ import annotations

import argparse
import os
import sys

# isort: off
import bench_engine  # noqa: F401  (first: it sets one thread and pins a core before NumPy loads)

# isort: on
import numpy as np

import chainrule as cr
import chainrule.numpy as cnp
from bench_engine import (
    allocator_description,
    blas_description,
    measure,
    median,
    named_mlp_logits,
    paired_ratio,
    print_table,
    torch,
)
from chainrule import optim
from chainrule.backend.capture import capture

try:  # JAX is an optional peer, like PyTorch
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None

MLPS = {  # name: (layer widths, batch size)
    "tiny 64-32-10 b32": ((64, 32, 10), 32),
    "digits 64-256-256-10 b128": ((64, 256, 256, 10), 128),
}
LR = {"sgd": 0.01, "adam": 1e-3}
B1, B2, EPS = 0.9, 0.999, 1e-8


def make_problem(sizes, batch, seed=0):
    rng = np.random.default_rng(seed)
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        scale = np.float32(1 / np.sqrt(fan_in))
        params[f"w{i}"] = rng.standard_normal((fan_in, fan_out)).astype(np.float32) * scale
        params[f"b{i}"] = np.zeros(fan_out, np.float32)
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return params, x, y


# -- by hand -------------------------------------------------------------------------------------


def hand_loss_and_grads(params, x, y):
    layers = len(params) // 2
    activations, h = [x], x
    for i in range(layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i < layers - 1:
            h = np.maximum(h, 0)
        activations.append(h)
    shifted = h - h.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, y])
    delta = exp / total
    delta[rows, y] -= 1
    delta /= len(y)
    grads = {}
    for i in reversed(range(layers)):
        grads[f"w{i}"] = activations[i].T @ delta
        grads[f"b{i}"] = delta.sum(axis=0)
        if i:
            delta = (delta @ params[f"w{i}"].T) * (activations[i] > 0)
    return loss, grads


def hand_step(optimizer):
    def sgd(params, state, x, y):
        loss, grads = hand_loss_and_grads(params, x, y)
        return {k: params[k] - LR["sgd"] * grads[k] for k in params}, state, loss

    def adam(params, state, x, y):
        loss, grads = hand_loss_and_grads(params, x, y)
        step = state["step"] + 1
        c1, c2 = 1 - B1**step, 1 - B2**step
        new, m, v = {}, {}, {}
        for k in params:
            m[k] = B1 * state["m"][k] + (1 - B1) * grads[k]
            v[k] = B2 * state["v"][k] + (1 - B2) * grads[k] * grads[k]
            new[k] = params[k] - LR["adam"] * (m[k] / c1) / (np.sqrt(v[k] / c2) + EPS)
        return new, {"step": step, "m": m, "v": v}, loss

    return sgd if optimizer == "sgd" else adam


def hand_state(params):
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    return {"step": 0, "m": zeros, "v": {k: np.zeros_like(v) for k, v in params.items()}}


# -- chainrule -----------------------------------------------------------------------------------


def chainrule_loss(params, x, y):
    h = named_mlp_logits(params, x, cnp.relu)
    return cnp.mean(cnp.softmax_cross_entropy(h, y))


def chainrule_step(optimizer):
    update = optim.SGD(LR["sgd"]) if optimizer == "sgd" else optim.Adam(LR["adam"], B1, B2, EPS)
    value_and_grad = cr.value_and_grad(chainrule_loss)

    def step(params, state, x, y):
        loss, grads = value_and_grad(params, x, y)
        params, state = update.update(grads, state, params)
        return params, state, loss

    return step, update.init


# -- PyTorch -------------------------------------------------------------------------------------


def torch_step(optimizer):
    def loss_of(params, x, y):
        h = named_mlp_logits(params, x, torch.relu)
        return torch.nn.functional.cross_entropy(h, y)

    grad_and_value = torch.func.grad_and_value(loss_of)

    def step(params, state, x, y):
        with torch.no_grad():
            grads, loss = grad_and_value(params, x, y)
            if optimizer == "sgd":
                return {k: params[k] - LR["sgd"] * grads[k] for k in params}, state, loss
            t = state["step"] + 1
            c1, c2 = 1 - B1**t, 1 - B2**t
            new, m, v = {}, {}, {}
            for k in params:
                m[k] = B1 * state["m"][k] + (1 - B1) * grads[k]
                v[k] = B2 * state["v"][k] + (1 - B2) * grads[k] * grads[k]
                new[k] = params[k] - LR["adam"] * (m[k] / c1) / (torch.sqrt(v[k] / c2) + EPS)
            return new, {"step": t, "m": m, "v": v}, loss

    return step


# -- JAX -----------------------------------------------------------------------------------------


def jax_step(optimizer, jit):
    def loss_of(params, x, y):
        h = named_mlp_logits(params, x, jax.nn.relu)
        log_probs = jax.nn.log_softmax(h)
        return -jnp.mean(jnp.take_along_axis(log_probs, y[:, None], axis=1))

    value_and_grad = jax.value_and_grad(loss_of)

    def step(params, state, x, y):
        loss, grads = value_and_grad(params, x, y)
        if optimizer == "sgd":
            return {k: params[k] - LR["sgd"] * grads[k] for k in params}, state, loss
        t = state["step"] + 1
        c1, c2 = 1 - B1**t, 1 - B2**t
        new, m, v = {}, {}, {}
        for k in params:
            m[k] = B1 * state["m"][k] + (1 - B1) * grads[k]
            v[k] = B2 * state["v"][k] + (1 - B2) * grads[k] * grads[k]
            new[k] = params[k] - LR["adam"] * (m[k] / c1) / (jnp.sqrt(v[k] / c2) + EPS)
        return new, {"step": t, "m": m, "v": v}, loss

    if not jit:
        return step
    jitted = jax.jit(step)

    def run(params, state, x, y):
        new, state, loss = jitted(params, state, x, y)
        jax.block_until_ready(loss)  # the work itself, not JAX's asynchronous dispatch
        return new, state, loss

    return run


# -- the run -------------------------------------------------------------------------------------


def contenders_for(optimizer, params, x, y):
    """{name: (step, its params, its state, its x, its y)}, each on its own library's arrays."""
    step, init = chainrule_step(optimizer)
    state = init(params)
    contenders = {
        "hand NumPy": (hand_step(optimizer), params, hand_state(params), x, y),
        "chainrule eager": (step, params, state, x, y),
        "chainrule captured": (capture(step, (params, state, x, y)), params, state, x, y),
        "chainrule jit": (cr.jit(step), params, state, x, y),
    }
    if torch is not None:
        tp = {k: torch.tensor(v) for k, v in params.items()}
        zeros = {k: torch.zeros_like(v) for k, v in tp.items()}
        t_state = {"step": 0, "m": zeros, "v": {k: torch.zeros_like(v) for k, v in tp.items()}}
        tx, ty = torch.tensor(x), torch.tensor(y)
        contenders["PyTorch eager"] = (torch_step(optimizer), tp, t_state, tx, ty)
    if jax is not None:
        jp = {k: jnp.asarray(v) for k, v in params.items()}
        zeros = {k: jnp.zeros_like(v) for k, v in jp.items()}
        j_state = {"step": 0, "m": zeros, "v": {k: jnp.zeros_like(v) for k, v in jp.items()}}
        if optimizer == "adam":
            j_state["step"] = jnp.asarray(0, jnp.int32)  # an array: jit traces it, never retraces
        jx, jy = jnp.asarray(x), jnp.asarray(y)
        contenders["JAX eager"] = (jax_step(optimizer, jit=False), jp, j_state, jx, jy)
        contenders["JAX jit"] = (jax_step(optimizer, jit=True), jp, j_state, jx, jy)
    return contenders


def check_one_step(contenders, optimizer):
    """Every contender's params after one step match the hand-written step's. Adam's first step
    is lr times about sign(g), so a gradient entry near zero may flip in float32: there the
    check allows a few percent of lr."""
    atol = 2e-6 if optimizer == "sgd" else 0.05 * LR["adam"]
    hand, params, state, x, y = contenders["hand NumPy"]
    expected = hand(params, state, x, y)[0]
    for name, (step, p, s, cx, cy) in contenders.items():
        got = step(p, s, cx, cy)[0]
        for key in expected:
            np.testing.assert_allclose(
                np.asarray(got[key]), expected[key], rtol=2e-4, atol=atol, err_msg=name
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = parser.parse_args(argv)
    repeats, budget = (3, 0.05) if args.quick else (9, 0.2)
    print(f"NumPy {np.__version__}: {blas_description()} | {allocator_description()}")
    if torch is not None:
        torch.set_num_threads(1)
    names, rows = None, []
    for mlp, (sizes, batch) in MLPS.items():
        params, x, y = make_problem(sizes, batch)
        for optimizer in ("sgd", "adam"):
            contenders = contenders_for(optimizer, params, x, y)
            check_one_step(contenders, optimizer)
            # Each call starts from the same params and state: steady-state work, no drift.
            calls = {
                name: (lambda c=c: c[0](c[1], c[2], c[3], c[4])) for name, c in contenders.items()
            }
            samples = measure(calls, repeats, budget)
            names = list(calls)
            row = [f"{mlp}, {optimizer}"]
            for name in names:
                row.append(f"{median(samples[name]) * 1e3:.3f}")
            for name in names[1:]:
                row.append(f"{paired_ratio(samples, name, 'hand NumPy'):.2f}")
            rows.append(row)
    header = ["step", *(f"{n} ms" for n in names), *(f"{n} ÷ hand" for n in names[1:])]
    print_table(
        f"One training step, float32, one thread (medians of {repeats} interleaved repetitions)",
        header,
        rows,
    )
    print(
        "\ntargets: chainrule captured at most as slow as JAX jit; chainrule eager at most "
        "2.0x hand (tiny) and 1.05x (digits)"
    )
    if torch is None or jax is None:
        print("(PyTorch or JAX not installed: `make bench-peers` adds them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
