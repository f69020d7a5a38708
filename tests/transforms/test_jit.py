"""``jit``: a staged program replays what the function computes, bit for bit, composes with every
transform outside and inside it, stages once per signature, and refuses what it cannot stage.

(Every primitive under jit, forward, gradient and JVP, is checked by the table walk in
``test_jit_grid.py``.)"""

from __future__ import annotations

import functools
import tracemalloc

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.transforms import jit as jit_module

RNG = np.random.default_rng(0)


def _potential(position, charges):
    offsets = position - charges
    return cnp.sum(cnp.sum(offsets * offsets, axis=1) ** -0.5)


def _mlp_loss(params, x, labels):
    """Mean cross-entropy of a one-hidden-layer ReLU network on a batch."""
    (w1, w2), (b1, b2) = params["w"], params["b"]
    logits = cnp.relu(x @ w1 + b1) @ w2 + b2
    return cnp.mean(cnp.softmax_cross_entropy(logits, labels))


def _mlp_params(sizes=(6, 8, 4)):
    rng = np.random.default_rng(1)
    return {
        "w": [rng.normal(size=(a, b)) * 0.5 for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
        "b": [rng.normal(size=b) * 0.1 for b in sizes[1:]],
    }


def _equal_trees(got, expected):
    got_leaves, got_def = cr.tree_flatten(got)
    expected_leaves, expected_def = cr.tree_flatten(expected)
    assert got_def == expected_def
    for a, b in zip(got_leaves, expected_leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype


@pytest.mark.parametrize(
    "transform",
    [
        lambda f: cr.grad(f),
        lambda f: cr.value_and_grad(f),
        lambda f: cr.hessian(f),
        lambda f: cr.jacfwd(cr.grad(f)),
        lambda f: cr.jacrev(cr.grad(f)),
        lambda f: cr.grad(lambda x: cnp.sum(cr.grad(f)(x) ** 2)),
    ],
    ids=["grad", "value_and_grad", "hessian", "jacfwd_of_grad", "jacrev_of_grad", "grad_of_grad"],
)
def test_a_jitted_derivative_equals_the_eager_one_bit_for_bit_on_new_values(transform):
    def f(x):
        return cnp.sum(cnp.tanh(x) * cnp.exp(-x * x))

    eager = transform(f)
    jitted = cr.jit(eager)
    for seed in range(3):  # the first call stages, the others replay on new values
        x = np.random.default_rng(seed).normal(size=4)
        _equal_trees(jitted(x), eager(x))
    assert jitted.trace_count == 1


def test_a_jitted_mlp_gradient_over_a_params_dict_equals_the_eager_one():
    params = _mlp_params()
    step = cr.jit(cr.value_and_grad(_mlp_loss))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x, labels = rng.normal(size=(5, 6)), rng.integers(0, 4, size=5)
        _equal_trees(step(params, x, labels), cr.value_and_grad(_mlp_loss)(params, x, labels))
    assert step.trace_count == 1


def test_transforms_outside_a_jitted_function_differentiate_its_program():
    charges = np.array([[10.0, 10.0], [10.0, 0.0]])
    field = cr.grad(_potential)
    jitted = cr.jit(field)
    position = np.array([0.3, 7.0])
    direction = np.array([1.0, -0.5])

    # Forward mode, reverse mode and vmap over the replayed program, against the same
    # transforms over the eager gradient (same primitives in the same order: the same bits).
    _equal_trees(
        cr.jvp(lambda p: jitted(p, charges), (position,), (direction,)),
        cr.jvp(lambda p: field(p, charges), (position,), (direction,)),
    )
    _equal_trees(
        cr.grad(lambda c: cnp.sum(jitted(position, c) ** 2))(charges),
        cr.grad(lambda c: cnp.sum(field(position, c) ** 2))(charges),
    )
    positions = RNG.normal(size=(3, 2)) + np.array([0.0, 5.0])
    _equal_trees(
        cr.vmap(jitted, in_axes=(0, None))(positions, charges),
        cr.vmap(field, in_axes=(0, None))(positions, charges),
    )
    # Every one of those replayed the program staged by the first call.
    assert jitted.trace_count == 1


def test_an_outer_derivative_through_a_loop_of_jitted_gradients_matches_the_eager_loop():
    # The pattern of gradbench's particle: an Euler loop whose acceleration is an inner
    # gradient, differentiated with respect to a control by an outer transform.
    def trajectory_end(w, field):
        charges = np.array([[10.0, 10.0], [10.0, 0.0]]) - w[0] * np.array([[0.0, 1.0], [0, 0]])
        position, velocity = np.array([0.0, 8.0]), np.array([0.75, 0.0])
        for _ in range(20):
            position = position + 0.1 * velocity
            velocity = velocity - 0.1 * field(position, charges)
        return cnp.sum(position * position)

    eager, jitted = cr.grad(_potential), cr.jit(cr.grad(_potential))
    w = np.array([0.25])
    for outer in (cr.grad, cr.jacfwd):
        _equal_trees(
            outer(lambda w: trajectory_end(w, jitted))(w),
            outer(lambda w: trajectory_end(w, eager))(w),
        )
    assert jitted.trace_count == 1


def test_nested_jit_and_jit_of_vmap():
    inner = cr.jit(lambda x: cnp.sin(x) * x)
    outer = cr.jit(lambda x: cnp.sum(inner(x) ** 2))
    x = RNG.normal(size=(3, 4))
    _equal_trees(outer(x), cnp.sum((cnp.sin(x) * x) ** 2))
    _equal_trees(cr.grad(outer)(x), cr.grad(lambda x: cnp.sum((cnp.sin(x) * x) ** 2))(x))
    batched = cr.jit(cr.vmap(cr.grad(lambda x: cnp.sum(cnp.tanh(x) ** 3))))
    _equal_trees(batched(x), cr.vmap(cr.grad(lambda x: cnp.sum(cnp.tanh(x) ** 3)))(x))


def test_comparisons_stop_gradient_sort_and_computed_indices_are_staged_not_frozen():
    def f(x):
        clipped = cnp.where(x > 0, x, 0.1 * x)  # a comparison: must be recomputed per call
        ordered = cnp.sort(clipped)  # argsort of the values: recomputed too
        picked = clipped[cnp.astype(x > 0, np.int64)]  # an index computed from the values
        return cnp.sum(ordered * np.arange(4.0) + picked * cnp.stop_gradient(x[0]))

    jitted = cr.jit(f)
    gradient = cr.jit(cr.grad(f))
    for seed in range(4):
        x = np.random.default_rng(seed).normal(size=4)
        _equal_trees(jitted(x), f(x))
        _equal_trees(gradient(x), cr.grad(f)(x))
    assert jitted.trace_count == gradient.trace_count == 1


def test_signatures_shapes_dtypes_and_static_values_decide_when_to_stage_again():
    scale_calls = []

    def f(x, scale, mode="sum"):
        scale_calls.append(scale)
        return cnp.sum(x) * scale if mode == "sum" else cnp.max(x) * scale

    jitted = cr.jit(f, static_argnames="mode")
    x = np.arange(3.0)
    assert jitted(x, 2.0) == 6.0 and jitted.trace_count == 1
    assert jitted(x + 1, 2.0) == 12.0 and jitted.trace_count == 1  # new values: replayed
    assert jitted(x, 3.0) == 9.0 and jitted.trace_count == 2  # a Python number is static
    assert jitted(np.arange(4.0), 2.0) == 12.0 and jitted.trace_count == 3  # a new shape
    assert jitted(x.astype(np.float32), 2.0).dtype == np.float32 and jitted.trace_count == 4
    assert jitted(x, 2.0, mode="max") == 4.0 and jitted.trace_count == 5
    assert jitted(x, 2.0, mode="max") == 4.0 and jitted.trace_count == 5
    numbered = cr.jit(lambda n, x: x * n, static_argnums=0)
    np.testing.assert_array_equal(numbered(2, x), 2 * x)
    np.testing.assert_array_equal(numbered(3, x), 3 * x)
    assert numbered.trace_count == 2
    jitted.clear_cache()
    jitted(x, 2.0)
    assert jitted.trace_count == 6


def test_pytrees_in_and_out_keyword_arguments_and_constant_outputs():
    @cr.jit
    def f(tree, *, shift):
        return {"sum": tree["a"] + shift, "pair": (tree["b"] * 2, np.ones(2)), "same": tree["a"]}

    tree = {"a": np.arange(2.0), "b": np.full(3, 1.5)}
    for offset in (0.0, 1.0):
        moved = {"a": tree["a"] + offset, "b": tree["b"] - offset}
        out = f(moved, shift=np.array(0.5))
        np.testing.assert_array_equal(out["sum"], moved["a"] + 0.5)
        np.testing.assert_array_equal(out["pair"][0], moved["b"] * 2)
        np.testing.assert_array_equal(out["pair"][1], np.ones(2))
        assert out["same"] is moved["a"]
    assert f.trace_count == 1
    other_keys = {"a": np.arange(2.0), "c": np.full(3, 1.5)}
    with pytest.raises(KeyError):
        f(other_keys, shift=np.array(0.5))  # a new structure stages again (and f needs "b")
    assert f.trace_count == 2


def test_a_repeated_pytree_call_is_checked_against_the_last_one_leaf_by_leaf(monkeypatch):
    @cr.jit
    def step(params, state, scale):
        new = {k: params[k] - scale * state["m"][k] for k in params}
        return new, {"m": state["m"], "count": state["count"] + 1}

    def eager(params, state, scale):
        return step.fun(params, state, scale)

    params = {"w": np.ones((2, 3)), "b": np.zeros(3)}
    state = {"m": {"w": np.full((2, 3), 0.5), "b": np.ones(3)}, "count": np.array(0)}
    for _ in range(3):  # the step counter comes back as a NumPy scalar: the same signature
        expected = eager(params, state, 0.1)
        params, state = step(params, state, 0.1)
        _equal_trees((params, state), expected)
    assert step.trace_count == 1 and isinstance(state["count"], np.generic)
    flattened = []  # a repeat of the last call is not flattened into a new signature
    monkeypatch.setattr(
        jit_module, "tree_flatten", lambda tree: flattened.append(1) or cr.tree_flatten(tree)
    )
    _equal_trees(step(params, state, 0.1), eager(params, state, 0.1))
    assert not flattened
    # Each difference from the last call is seen and stages (or reuses) the right program.
    calls = [
        (params, state, 0.2),  # another static value
        (
            {"w": np.ones((2, 3)), "b": np.zeros(4)},
            {**state, "m": {"w": state["m"]["w"], "b": np.ones(4)}},
            0.1,
        ),
        ({**params, "w": params["w"].astype(np.float32)}, state, 0.1),  # another dtype
        ([params["w"], params["b"]], state, 0.1),  # another container
        (params, state, 0.1),  # the first signature again: replayed
    ]
    for args in calls[:3]:
        _equal_trees(step(*args), eager(*args))
    with pytest.raises(TypeError):
        step(*calls[3])  # a list has no keys: staged again, and the function fails on it
    _equal_trees(step(*calls[4]), eager(*calls[4]))
    assert step.trace_count == 5

    # A tracer where the last call had an array takes the general path (and its derivative).
    def loss(w):
        new, _ = step({"w": w, "b": params["b"]}, state, 0.1)
        return cnp.sum(new["w"] ** 2)

    _equal_trees(cr.grad(loss)(params["w"]), 2 * (params["w"] - 0.1 * state["m"]["w"]))


def test_a_repeated_call_with_static_arguments_is_checked_the_same_way(monkeypatch):
    @functools.partial(cr.jit, static_argnums=(1,))
    def scaled(tree, mode, factor=2.0):
        total = cnp.sum(tree["x"]) if mode == "sum" else cnp.max(tree["x"])
        return total * factor + tree["y"]

    tree = {"x": np.arange(3.0), "y": np.array(1.0)}
    assert scaled(tree, "sum") == 7.0 and scaled(tree, "sum") == 7.0
    flattened = []
    monkeypatch.setattr(
        jit_module, "tree_flatten", lambda tree: flattened.append(1) or cr.tree_flatten(tree)
    )
    assert scaled({"x": np.arange(3.0) + 1, "y": np.array(0.0)}, "sum") == 12.0
    assert not flattened and scaled.trace_count == 1  # replayed without a new signature
    assert scaled(tree, "max") == 5.0 and scaled.trace_count == 2  # another static value
    assert scaled(tree, "sum", 3.0) == 10.0 and scaled.trace_count == 3  # another arity
    assert scaled(tree, "sum") == 7.0 and scaled.trace_count == 3  # the first program again
    with pytest.raises(TypeError, match="hashable"):
        scaled(tree, ["sum"])


def test_a_python_decision_on_a_traced_value_is_refused_with_the_function_named():
    def decides(x):
        if cnp.sum(x) > 0:
            return x
        return -x

    with pytest.raises(cr.ConcretizationError, match=r"jit of decides: bool\(\) of a traced"):
        cr.jit(decides)(np.ones(3))
    with pytest.raises(cr.ConcretizationError, match=r"float\(\)"):
        cr.jit(lambda x: float(cnp.sum(x)))(np.ones(3))
    with pytest.raises(cr.ConcretizationError, match=r"np\.asarray\(\)"):
        cr.jit(lambda x: np.asarray(x) + 1)(np.ones(3))
    with pytest.raises(cr.ConcretizationError, match=r"boolean mask"):
        cr.jit(lambda x: x[x > 0])(np.arange(3.0) - 1)
    # A jitted function inside grad asks the same of its own tracers: the same refusal.
    with pytest.raises(cr.ConcretizationError, match=r"\.item\(\)"):
        cr.grad(cr.jit(lambda x: x * cnp.sum(x).item()))(np.ones(()))


def test_a_tracer_read_from_the_closure_is_an_error_not_a_lost_derivative():
    def outer(w):
        inner = cr.jit(lambda x: x * w)  # w is traced by grad, read from the closure
        return cnp.sum(inner(np.ones(2)))

    with pytest.raises(ValueError, match=r"from its closure.*pass it to the jitted function"):
        cr.grad(outer)(np.array(2.0))


def test_unhashable_static_values_are_reported():
    jitted = cr.jit(lambda x, options: x, static_argnums=1)
    with pytest.raises(TypeError, match=r"jit of <lambda>: static arguments .* hashable"):
        jitted(np.ones(2), {"a": 1})


def test_a_replay_lets_go_of_intermediate_values_and_prunes_dead_work():
    def f(x):
        unused = cnp.exp(x)  # noqa: F841  (dead: not in the program)
        a = cnp.sin(x)
        b = cnp.cos(a)
        return cnp.sum(b * b)

    jitted = cr.jit(f)
    jitted(np.ones(3))
    (program,) = {id(program): program for program, _ in jitted._programs.values()}.values()
    names = [equation[0].name for equation in program.equations]
    assert names == ["sin", "cos", "multiply", "sum"]
    # Each computed value is released by the last equation that reads it.
    frees = {name: equation[-1] for name, equation in zip(names, program.equations, strict=True)}
    slots = {name: equation[5] for name, equation in zip(names, program.equations, strict=True)}
    assert frees["cos"] == (slots["sin"],)
    assert frees["multiply"] == (slots["cos"],)
    assert frees["sum"] == (slots["multiply"],)


def test_jit_works_as_a_decorator_with_arguments():
    @cr.jit(static_argnums=(1,))
    def power(x, n):
        return x**n

    np.testing.assert_array_equal(power(np.arange(3.0), 3), np.arange(3.0) ** 3)
    assert power.__name__ == "power"


def test_a_constant_boolean_mask_is_fine_a_computed_one_is_not():
    mask = np.array([True, False, True])
    jitted = cr.jit(cr.grad(lambda x: cnp.sum(x[mask] ** 2)))
    for x in (np.arange(3.0), np.arange(3.0) + 2):
        _equal_trees(jitted(x), cr.grad(lambda x: cnp.sum(x[mask] ** 2))(x))
    assert jitted.trace_count == 1


def test_common_work_is_shared_and_replay_errors_name_the_op_and_shapes():
    def f(x):
        return cnp.cos(x) * cnp.sin(x) + cnp.cos(x)  # cos(x) twice: computed once

    jitted = cr.jit(f)
    x = np.linspace(0.0, 1.0, 5)
    _equal_trees(jitted(x), f(x))
    ((program, _),) = {id(entry[0]): entry for entry in jitted._programs.values()}.values()
    assert [equation[0].name for equation in program.equations] == [
        "cos",
        "sin",
        "multiply",
        "add",
    ]
    # A replay that fails on the values (a singular solve) is reported as the eager call
    # reports it: the op and the operand shapes.
    solve = cr.jit(lambda a, b: cnp.linalg.solve(a, b))
    solve(np.eye(2), np.ones(2))
    with pytest.raises(np.linalg.LinAlgError, match=r"chainrule\.\S*solve: .*operand shapes"):
        solve(np.zeros((2, 2)), np.ones(2))
    with pytest.raises(np.linalg.LinAlgError, match=r"chainrule\.\S*solve: .*operand shapes"):
        cnp.linalg.solve(np.zeros((2, 2)), np.ones(2))


def test_a_program_replayed_in_a_loop_is_compiled_with_the_same_bits_memory_and_errors(
    monkeypatch,
):
    def f(x, scale):
        return cnp.sum(cnp.tanh(x * scale) * cnp.exp(-x), axis=0) + cnp.max(x, axis=0)

    jitted = cr.jit(f)
    x = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    for step in range(jit_module._COMPILE_AFTER + 2):
        _equal_trees(jitted(x + step, np.float64(step)), f(x + step, np.float64(step)))
    (program,) = {id(program): program for program, _ in jitted._programs.values()}.values()
    assert program.replay is not None and jitted.trace_count == 1

    monkeypatch.setattr(jit_module, "_COMPILE_AFTER", 1)  # compiled from the first replay on
    # Each intermediate is let go of where it is read for the last time, as the interpreter
    # does: a chain of 30 steps on 8 MB arrays holds a few of them, not 30.
    chain = cr.jit(lambda x: cnp.sum(functools.reduce(lambda h, _: cnp.sin(h), range(30), x)))
    big = np.full(1_000_000, 0.5)
    chain(big)
    tracemalloc.start()
    try:
        chain(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * big.nbytes
    # A compiled replay that fails on the values is reported as the eager call reports it.
    solve = cr.jit(lambda a, b: cnp.linalg.solve(a, b))
    solve(np.eye(2), np.ones(2))
    _equal_trees(solve(2 * np.eye(2), np.ones(2)), np.full(2, 0.5))
    with pytest.raises(np.linalg.LinAlgError, match=r"chainrule\.\S*solve: .*operand shapes"):
        solve(np.zeros((2, 2)), np.ones(2))
    assert next(iter(solve._programs.values()))[0].replay is not None


def test_a_compiled_replay_writes_elementwise_results_into_dying_arrays_only(monkeypatch):
    monkeypatch.setattr(jit_module, "_COMPILE_AFTER", 1)

    def f(x, w):
        h = cnp.tanh(x @ w + 1.0)  # matmul's result, then add's and tanh's: fresh arrays
        kept = cnp.transpose(h * 2.0)  # a view of the product: that one must stay as it is
        return cnp.exp(h) - h, kept + 0.0, x * 3.0

    jitted = cr.jit(f)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    jitted(x, w)
    for _ in range(3):
        x_before, w_before = x.copy(), w.copy()
        got = jitted(x, w)
        _equal_trees(got, f(x, w))
        np.testing.assert_array_equal(x, x_before)  # inputs are never written into
        np.testing.assert_array_equal(w, w_before)
        x, w = x + 0.5, w - 0.25
    (program,) = {id(program): program for program, _ in jitted._programs.values()}.values()
    equations = program.needed_with_frees(jit_module._without_views(program))
    writers, writable = jit_module._in_place_slots(program, equations)
    names = {equation[5]: equation[0].name for equation in program.equations}
    assert {names[slot] for slot in writable} == {"matmul", "add", "tanh", "exp"}
    viewed = [equation[2][0] for equation in program.equations if equation[0].name == "transpose"]
    assert names[viewed[0]] == "multiply" and viewed[0] not in writable
    assert not writable & set(program.outputs) and writers


def _compiled_names(jitted):
    """The primitive names of the equations that ``jitted``'s one program compiles to."""
    (program,) = {id(program): program for program, _ in jitted._programs.values()}.values()
    equations = program.needed_with_frees(jit_module._without_views(program))
    return [equation[0].name for equation in equations if equation[0] is not None]


def test_a_compiled_replay_drops_the_views_its_elementwise_readers_do_not_need(monkeypatch):
    monkeypatch.setattr(jit_module, "_COMPILE_AFTER", 1)
    rng = np.random.default_rng(4)
    column, grid = rng.standard_normal((3, 1)), rng.standard_normal((3, 4))

    def broadcast_then_elementwise(c, g):
        wide = cnp.broadcast_to(c, (3, 4))  # the ufuncs broadcast c themselves: not needed
        flat = cnp.reshape(cnp.reshape(g, (4, 3)), (12,))  # one reshape of g
        back = cnp.reshape(cnp.reshape(c, (1, 3)), (3, 1))  # c itself
        return cnp.sum(wide * g + 1.0), flat * 2.0, back - c

    def views_that_stay(c, g, s):
        wide = cnp.broadcast_to(c, (3, 4))
        both = wide + wide  # c + c would be (3, 1): this broadcast is needed
        scalar_wide = cnp.broadcast_to(s, (3, 4))  # a 0-d array: NumPy 1 promotes it by value
        shown = cnp.broadcast_to(c, (2, 3, 4))  # an output stays the view it was staged as
        return both * 1.0, scalar_wide * g.astype(np.float32), shown

    cases = [
        (broadcast_then_elementwise, (column, grid), ["broadcast_to"], ["reshape"]),
        (views_that_stay, (column, grid, np.float64(2.0)), [], ["broadcast_to"] * 3),
    ]
    for fun, args, dropped, kept in cases:
        jitted = cr.jit(fun)
        for _ in range(3):  # staged, then compiled replays
            _equal_trees(jitted(*args), fun(*args))
        names = _compiled_names(jitted)
        assert not set(dropped) & set(names)
        for name in set(kept):
            assert names.count(name) == kept.count(name), (fun.__name__, names)
        (program,) = {id(program): program for program, _ in jitted._programs.values()}.values()
        # The generated function itself, which returns the output leaves:
        _equal_trees(program.replay(*args), cr.tree_flatten(fun(*args))[0])
        args = tuple(arg + 0.5 for arg in args)
        _equal_trees(jitted(*args), fun(*args))

    # The gradient program of a sum over an axis (gradbench particle's potential): its
    # cotangent's broadcasts go, and the gradient keeps its bits at every replay.
    def potential(x, charges):
        return cnp.sum(cnp.sum((x - charges) ** 2, axis=1) ** -0.5)

    field = cr.jit(cr.grad(potential))
    x, charges = np.array([0.3, 2.0]), rng.standard_normal((2, 2)) + 3.0
    for _ in range(3):
        _equal_trees(field(x, charges), cr.grad(potential)(x, charges))
    assert "broadcast_to" not in _compiled_names(field)


def test_a_deep_chain_stages_replays_and_differentiates_without_recursion():
    def chain(x):
        for _ in range(5_000):  # five times Python's recursion limit
            x = cnp.sin(x) * 0.5 + 0.25
        return cnp.sum(x)

    jitted = cr.jit(chain)
    x = np.linspace(-1.0, 1.0, 3)
    _equal_trees(jitted(x), chain(x))
    _equal_trees(jitted(x + 0.1), chain(x + 0.1))
    _equal_trees(cr.grad(jitted)(x), cr.grad(chain)(x))
    _equal_trees(cr.jit(cr.grad(chain))(x), cr.grad(chain)(x))


def test_under_reverse_mode_a_jitted_program_is_one_node_at_every_order():
    def f(x, c):
        return cnp.tanh(x * c) * cnp.exp(-x) + cnp.sin(c) * x

    jitted = cr.jit(f)
    x, c = np.linspace(0.1, 0.9, 3), np.array([0.5, -1.0, 2.0])
    jitted(x, c)
    program = next(entry[0] for entry in jitted._programs.values())

    def loss(g):
        return lambda x, c: cnp.sum(g(x, c) ** 2)

    # First order: one node whose rule replays the staged cotangent map.
    _equal_trees(
        cr.grad(loss(jitted), argnums=(0, 1))(x, c), cr.grad(loss(f), argnums=(0, 1))(x, c)
    )
    assert program.as_primitive is not None
    # Second order (the rule runs on traced values), Jacobians (batched cotangents through the
    # rule) and forward mode over it: the eager results, to rounding.
    grad_of_grad = lambda g: cr.grad(lambda x: cnp.sum(cr.grad(g)(x) ** 2))  # noqa: E731
    # jvp of grad: the node meets forward mode below it, and its staged tangent map runs.
    hvp = lambda g: lambda x: cr.jvp(cr.grad(g), (x,), (np.ones(3),))[1]  # noqa: E731
    for outer in (cr.hessian, cr.jacrev, lambda g: cr.jacfwd(cr.grad(g)), grad_of_grad, hvp):
        np.testing.assert_allclose(
            outer(lambda x: loss(jitted)(x, c))(x), outer(lambda x: loss(f)(x, c))(x), rtol=1e-12
        )
    assert program.as_primitive is not None
    # Forward mode on top takes the equations one by one.
    _equal_trees(cr.jvp(lambda x: jitted(x, c), (x,), (c,)), cr.jvp(lambda x: f(x, c), (x,), (c,)))


def test_checkpoints_and_custom_rules_inside_a_jitted_function():
    block = cr.checkpoint(lambda w, x: cnp.tanh(cnp.tanh(x @ w) @ w))
    w, x = np.eye(2) * 0.5, np.ones((3, 2))
    through_block = lambda w: cnp.sum(block(w, x))  # noqa: E731
    _equal_trees(cr.jit(cr.grad(through_block))(w), cr.grad(through_block)(w))

    @cr.custom_vjp
    def clip_gradient(x):
        return x

    clip_gradient.defvjp(lambda x: (x, None), lambda res, g: (cnp.clip(g, -1.0, 1.0),))
    clipped = lambda x: cnp.sum(3.0 * clip_gradient(x))  # noqa: E731
    for gradient in (cr.jit(cr.grad(clipped)), cr.grad(cr.jit(clipped))):
        np.testing.assert_array_equal(gradient(np.array([1.0, 2.0])), [1.0, 1.0])
