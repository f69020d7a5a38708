"""What does one backward pass cost in nested AD, next to PyTorch and JAX?

Run with ``python benchmarks/bench_nested.py [--quick]``. gradbench's saddle and particle evals
take tens of thousands of small gradients inside gradients; there the arithmetic is nothing and
the bookkeeping of each pass (recording, the reverse sweep, the rules' dispatch) is everything.
For a small function f(x) = sum(sin(x) * x + x * x), x of shape (4,), float64, this prints the
time per call of

* ``grad``: one reverse pass;
* ``grad of grad`` (the gradient of sum(grad f)): the inner pass is recorded, then pulled back
  through, so two passes;
* ``hvp``: forward over reverse, the JVP of grad f along v: one reverse pass carrying tangents;
* ``hessian``: ``jacfwd(jacrev(f))``, one reverse pass pushing all 4 directions at once;

for chainrule eager, chainrule jit (each function staged once by ``cr.jit`` into a flat program of
primitives, replayed one primitive application per equation: no tracer levels, no graph, no
reverse sweep), chainrule captured (each function recorded once by ``cr.capture`` and
replayed as one tape of NumPy calls), hand-written NumPy (the arithmetic floor: the same
derivatives written out), and,
when installed (``make bench-peers``), PyTorch eager (``create_graph=True`` double backward,
``torch.func``) and JAX eager and ``jax.jit``. The bookkeeping per pass is
(time - hand time) / passes.

Method: one thread, pinned to one core; the contenders interleaved (A, B, C, A, B, C, ...);
each figure the median over repetitions, each ratio the median of the per-repetition ratios.
Every contender's result is checked against the hand-written one before timing.
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
from bench_engine import blas_description, measure, median, paired_ratio, print_table, torch, us

try:  # JAX is an optional peer, like PyTorch
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
except ImportError:
    jax = None

SIZE = 4
#: Reverse passes per call of each case (the hessian's one pass carries SIZE directions).
PASSES = {"grad": 1, "grad of grad": 2, "hvp": 1, "hessian": 1}


def chainrule_functions(v):
    """Each case as a function of the point ``a`` (the tangent ``v`` fixed for hvp)."""

    def f(a):
        return cnp.sum(cnp.sin(a) * a + a * a)

    grad_f = cr.grad(f)
    return {
        "grad": grad_f,
        "grad of grad": cr.grad(lambda a: cnp.sum(grad_f(a))),
        "hvp": lambda a: cr.jvp(grad_f, (a,), (v,))[1],
        "hessian": cr.hessian(f),
    }


def chainrule_cases(x, v, staging=None):
    """The cases at ``x``: eager (``staging=None``); each function staged once by ``cr.jit``
    (``"jit"``: the nested passes flattened into one program of primitives); or recorded once by
    ``cr.capture`` (``"capture"``: one tape of NumPy calls, no interpreter left per call)."""
    functions = chainrule_functions(v)
    if staging is not None:
        stage = {"jit": cr.jit, "capture": cr.capture}[staging]
        functions = {name: stage(fn) for name, fn in functions.items()}
    return {name: (lambda fn=fn: fn(x)) for name, fn in functions.items()}


def hand_cases(x, v):
    """f' = sin x + x cos x + 2x; f'' = diag(2 cos x - x sin x + 2); f''' on the diagonal."""

    def first(a):
        return np.sin(a) + a * np.cos(a) + 2 * a

    def second(a):
        return 2 * np.cos(a) - a * np.sin(a) + 2

    return {
        "grad": lambda: first(x),
        "grad of grad": lambda: second(x),
        "hvp": lambda: second(x) * v,
        "hessian": lambda: np.diag(second(x)),
    }


def torch_cases(x, v):
    tx, tv = torch.tensor(x), torch.tensor(v)

    def f(a):
        return (torch.sin(a) * a + a * a).sum()

    def grad_f(a, create_graph=False):
        a = a.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f(a), a, create_graph=create_graph)
        return g, a

    def grad_of_grad():
        g, a = grad_f(tx, create_graph=True)
        return torch.autograd.grad(g.sum(), a)[0]

    def hvp():
        g, a = grad_f(tx, create_graph=True)
        return torch.autograd.grad(g, a, grad_outputs=tv)[0]

    return {
        "grad": lambda: grad_f(tx)[0],
        "grad of grad": grad_of_grad,
        "hvp": hvp,
        "hessian": lambda: torch.func.hessian(f)(tx),
    }


def jax_cases(x, v, jit):
    jx, jv = jnp.asarray(x), jnp.asarray(v)

    def f(a):
        return jnp.sum(jnp.sin(a) * a + a * a)

    grad_f = jax.grad(f)
    functions = {
        "grad": grad_f,
        "grad of grad": jax.grad(lambda a: jnp.sum(grad_f(a))),
        "hvp": lambda a: jax.jvp(grad_f, (a,), (jv,))[1],
        "hessian": jax.hessian(f),
    }
    if jit:
        functions = {name: jax.jit(fn) for name, fn in functions.items()}
    return {name: (lambda fn=fn: fn(jx).block_until_ready()) for name, fn in functions.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = parser.parse_args(argv)
    repeats, budget = (3, 0.05) if args.quick else (9, 0.2)
    print(f"NumPy {np.__version__}: {blas_description()}")
    rng = np.random.default_rng(0)
    x, v = rng.standard_normal(SIZE), rng.standard_normal(SIZE)

    contenders = {
        "chainrule": chainrule_cases(x, v),
        "chainrule jit": chainrule_cases(x, v, staging="jit"),
        "chainrule captured": chainrule_cases(x, v, staging="capture"),
        "hand NumPy": hand_cases(x, v),
    }
    if torch is not None:
        contenders["PyTorch eager"] = torch_cases(x, v)
    if jax is not None:
        contenders["JAX eager"] = jax_cases(x, v, jit=False)
        contenders["JAX jit"] = jax_cases(x, v, jit=True)
    for case in PASSES:
        expected = contenders["hand NumPy"][case]()
        for name, cases in contenders.items():
            np.testing.assert_allclose(
                np.asarray(cases[case]()), expected, rtol=1e-10, atol=1e-12, err_msg=name
            )

    ours = ("chainrule", "chainrule jit", "chainrule captured", "hand NumPy")
    peers = [name for name in contenders if name not in ours]
    rows = []
    for case, passes in PASSES.items():
        samples = measure(
            {name: cases[case] for name, cases in contenders.items()}, repeats, budget
        )
        hand_time = median(samples["hand NumPy"])
        row = [case]
        for name in ("chainrule", "chainrule jit", "chainrule captured"):
            time = median(samples[name])
            row += [us(time), us((time - hand_time) / passes)]
        for peer in peers:
            row += [us(median(samples[peer])), f"{paired_ratio(samples, 'chainrule', peer):.2f}"]
        if "JAX jit" in samples:
            row.append(f"{paired_ratio(samples, 'chainrule jit', 'JAX jit'):.2f}")
            row.append(f"{paired_ratio(samples, 'chainrule captured', 'JAX jit'):.2f}")
        rows.append(row)
    header = ["case", "eager µs", "eager bookkeeping µs/pass"]
    header += ["jit µs", "jit bookkeeping µs/pass"]
    header += ["captured µs", "captured bookkeeping µs/pass"]
    for peer in peers:
        header += [f"{peer} µs", f"eager ÷ {peer}"]
    if "JAX jit" in peers:
        header += ["jit ÷ JAX jit", "captured ÷ JAX jit"]
    print_table(
        f"Nested AD on f(x) = sum(sin(x)·x + x·x), x of shape ({SIZE},), float64, one thread "
        f"(medians of {repeats} interleaved repetitions)",
        header,
        rows,
    )
    print("\ntarget: at most 8 µs of bookkeeping per reverse pass in grad of grad, hvp, hessian")
    print("(jit: the same functions through cr.jit, staged once, then replayed, compiled into")
    print(" one Python function from the 32nd replay on;")
    print(" captured: through cr.capture, recorded once, then replayed as NumPy calls)")
    if torch is None or jax is None:
        print("(PyTorch or JAX not installed: `make bench-peers` adds them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
