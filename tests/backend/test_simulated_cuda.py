"""The engine, its transforms and ``nn`` on the simulated CUDA device.

:func:`chainrule.backend.simulated_cuda.simulate_cuda` makes ``"cuda"`` a device whose arrays
(:class:`~chainrule.backend.simulated_cuda.SimulatedArray`) follow CuPy's placement rules while
computing with NumPy: a NumPy array next to a device array in one operation is a ``TypeError``, and
so is an implicit device-to-host conversion. So every array the engine builds for itself (seeds,
zeros, identity bases, index ranges, masks) must be built on the device of the values it works with,
or these tests fail where a real GPU would.

Each check computes the same thing twice, on NumPy arrays and on device arrays, and asks that
every result of the device run is a device array on ``"cuda"`` equal to the NumPy result (to
1e-12; the arithmetic is NumPy's in both runs, so most agree bit for bit). The primitive grid of
``tests/primitive_grid.py`` is reused whole: its forward values, VJPs, JVPs and forward-over-reverse
second derivatives.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule import nn, optim
from chainrule.backend.device import device, device_of, to_device
from chainrule.backend.simulated_cuda import SimulatedArray, simulate_cuda
from module_arrays import with_module_arrays
from primitive_grid import GRID

TOLERANCE = 1e-12


@pytest.fixture
def cuda():
    """The simulated device for one test."""
    with simulate_cuda() as namespace:
        yield namespace


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _to_cuda(tree):
    return to_device(tree, "cuda")


def _assert_on_cuda_and_equal(device_tree, host_tree, tolerance=TOLERANCE):
    """Every leaf of ``device_tree`` is a device array on "cuda" equal to the matching leaf of
    ``host_tree`` (same shape and dtype, values to ``tolerance``)."""
    device_leaves, device_def = cr.tree_flatten(device_tree)
    host_leaves, host_def = cr.tree_flatten(host_tree)
    assert device_def == host_def, f"structures differ: {device_def} vs {host_def}"
    for got, want in zip(device_leaves, host_leaves, strict=True):
        assert type(got) is SimulatedArray, f"a result left the device: {type(got).__name__}"
        assert device_of(got) == "cuda"
        want = np.asarray(want)
        assert (got.shape, got.dtype) == (want.shape, want.dtype)
        np.testing.assert_allclose(got.get(), want, rtol=tolerance, atol=tolerance)


def _function_on_cuda(fun):
    return with_module_arrays(fun, _to_cuda)


def _draws(rng, tree):
    """A random array shaped like every leaf of ``tree`` (host NumPy)."""
    leaves, treedef = cr.tree_flatten(tree)
    return cr.tree_unflatten(treedef, [rng.standard_normal(np.shape(leaf)) for leaf in leaves])


# ------------------------------------------------------------------------------------------------
# (a) the primitive grid on the device
# ------------------------------------------------------------------------------------------------


def _grid_derivatives(fun, args, cotangents, tangents):
    """Forward value, VJP, JVP and forward-over-reverse second derivative of ``fun`` at ``args``."""
    value, vjp_fun = cr.vjp(fun, *args)
    pulled = vjp_fun(cotangents)
    _, pushed = cr.jvp(fun, args, tangents)

    def pull_back(*point):
        return cr.vjp(fun, *point)[1](cotangents)

    _, second = cr.jvp(pull_back, args, tangents)
    return value, pulled, pushed, second


@pytest.mark.parametrize("case", GRID, ids=lambda c: c.id)
def test_the_grid_runs_on_the_device(case, cuda):
    args = case.sample()
    host_fun = partial(case.fun, cnp)
    rng = np.random.default_rng(5)
    cotangents = _draws(rng, host_fun(*args))
    tangents = tuple(rng.standard_normal(np.shape(a)) for a in args)
    want = _grid_derivatives(host_fun, args, cotangents, tangents)

    device_fun = partial(_function_on_cuda(case.fun), cnp)
    got = _grid_derivatives(device_fun, _to_cuda(args), _to_cuda(cotangents), _to_cuda(tangents))
    names = ("forward", "vjp", "jvp", "second order")
    for name, device_result, host_result in zip(names, got, want, strict=False):
        try:
            _assert_on_cuda_and_equal(device_result, host_result)
        except AssertionError as error:
            raise AssertionError(f"{case.id}, {name}: {error}") from error


# ------------------------------------------------------------------------------------------------
# (b) transforms on the device
# ------------------------------------------------------------------------------------------------


def _scalar_loss(params, x):
    """Fan-out (``w`` used twice), broadcasting, a reduction with max and an indexing."""
    hidden = cnp.tanh(x @ params["w"] + params["b"])
    return cnp.sum(hidden * hidden) + cnp.max(hidden @ params["w"].T) + params["w"][0, 1] ** 2


def _vector_fun(w, x):
    return cnp.sin(x @ w) * cnp.sum(w * w)


@pytest.fixture
def problem(rng):
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    return params, rng.standard_normal((5, 3))


def test_jacobians_on_the_device(cuda, problem):
    params, x = problem
    w = params["w"]
    for transform in (
        cr.jacfwd(_vector_fun),
        cr.jacrev(_vector_fun),
        cr.jacfwd(_vector_fun, chunk_size=5),  # chunks that miss a leaf: zeros filled in
        cr.jacrev(_vector_fun, chunk_size=7),
        cr.jacobian(_vector_fun),  # the cost model chooses
        cr.jacobian(_vector_fun, mode="fwd"),
        cr.jacobian(_vector_fun, mode="rev"),
    ):
        _assert_on_cuda_and_equal(transform(_to_cuda(w), _to_cuda(x)), transform(w, x))
    both = cr.jacrev(_vector_fun, argnums=(0, 1))
    _assert_on_cuda_and_equal(both(_to_cuda(w), _to_cuda(x)), both(w, x))
    # An output that does not depend on the input: a block of zeros on the device.
    constant = cr.jacfwd(lambda w, x: (cnp.sum(w), cnp.sum(x)))
    _assert_on_cuda_and_equal(constant(_to_cuda(w), _to_cuda(x)), constant(w, x))
    reverse_constant = cr.jacrev(lambda w, x: (cnp.sum(w), cnp.sum(x)))
    _assert_on_cuda_and_equal(reverse_constant(_to_cuda(w), _to_cuda(x)), reverse_constant(w, x))


def test_hessian_and_hvp_on_the_device(cuda, problem, rng):
    params, x = problem
    hessian = cr.hessian(_scalar_loss)
    _assert_on_cuda_and_equal(hessian(_to_cuda(params), _to_cuda(x)), hessian(params, x))
    direction = _draws(rng, params)
    want = cr.hvp(lambda p: _scalar_loss(p, x), (params,), (direction,))
    device_x = _to_cuda(x)
    got = cr.hvp(lambda p: _scalar_loss(p, device_x), (_to_cuda(params),), (_to_cuda(direction),))
    _assert_on_cuda_and_equal(got, want)


def test_linearize_on_the_device(cuda, problem, rng):
    params, x = problem
    tangent = rng.standard_normal(params["w"].shape)

    def linearized(w, x):
        # The second output does not depend on w: its tangent is zeros, on the device.
        return cr.linearize(lambda w: (_vector_fun(w, x), cnp.sum(x)), w)

    want_out, want_jvp = linearized(params["w"], x)
    got_out, got_jvp = linearized(_to_cuda(params["w"]), _to_cuda(x))
    _assert_on_cuda_and_equal(got_out, want_out)
    _assert_on_cuda_and_equal(got_jvp(_to_cuda(tangent)), want_jvp(tangent))


def test_grad_value_and_grad_and_vjp_of_pytrees_on_the_device(cuda, problem):
    params, x = problem
    want_value, want = cr.value_and_grad(_scalar_loss)(params, x)
    value, got = cr.value_and_grad(_scalar_loss)(_to_cuda(params), _to_cuda(x))
    _assert_on_cuda_and_equal((value, got), (want_value, want))

    # An input that does not reach the output gets zeros, on its device.
    def unused(x):
        return cr.grad(lambda p, extra: _scalar_loss(p, x), argnums=(0, 1))

    device_x = _to_cuda(x)
    _assert_on_cuda_and_equal(unused(device_x)(_to_cuda(params), device_x), unused(x)(params, x))


def test_ravel_pytree_round_trip_on_the_device(cuda, problem):
    params, _ = problem
    tree = {"params": params, "step": 3, "scale": np.float64(0.5)}
    theta, unravel = cr.ravel_pytree(tree)
    device_theta, device_unravel = cr.ravel_pytree(
        {**_to_cuda({"params": params}), "step": 3, "scale": 0.5}
    )
    _assert_on_cuda_and_equal(device_theta, theta)
    rebuilt = device_unravel(device_theta)
    _assert_on_cuda_and_equal(rebuilt, unravel(theta))
    # Differentiating through unravel stays on the device too.
    gradient = cr.grad(lambda t: cnp.sum(device_unravel(t)["params"]["w"] ** 2))(device_theta)
    _assert_on_cuda_and_equal(
        gradient, cr.grad(lambda t: cnp.sum(unravel(t)["params"]["w"] ** 2))(theta)
    )


def test_ravel_pytree_refuses_host_and_device_arrays_in_one_tree(cuda):
    with pytest.raises(TypeError, match=r"ravel_pytree: leaves on two devices.*'cpu'.*'cuda'"):
        cr.ravel_pytree({"a": np.ones(2), "b": _to_cuda(np.ones(3))})


def _eager(make, params, x, cotangent=None, create_graph=False):
    """Tensor.backward on ``params`` made with ``make``: the loss (a scalar, or a vector when a
    cotangent is given) and the leaves' gradients."""
    leaves = {name: cr.Tensor(make(value), requires_grad=True) for name, value in params.items()}
    loss = _scalar_loss(leaves, make(x))
    if cotangent is not None:
        loss = cnp.tanh(make(x) @ leaves["w"] + leaves["b"])  # (5, 4)
        loss.backward(make(cotangent))
    else:
        loss.backward(create_graph=create_graph)
    return loss, leaves


def test_tensor_backward_without_and_with_a_cotangent_on_the_device(cuda, problem, rng):
    params, x = problem
    want_loss, want = _eager(np.asarray, params, x)
    got_loss, got = _eager(_to_cuda, params, x)
    _assert_on_cuda_and_equal(got_loss.data, want_loss.data)
    _assert_on_cuda_and_equal(
        {k: t.grad for k, t in got.items()}, {k: t.grad for k, t in want.items()}
    )
    assert got["w"].device == "cuda"

    cotangent = rng.standard_normal((5, 4))
    _, want = _eager(np.asarray, params, x, cotangent)
    _, got = _eager(_to_cuda, params, x, cotangent)
    _assert_on_cuda_and_equal(
        {k: t.grad for k, t in got.items()}, {k: t.grad for k, t in want.items()}
    )


def test_create_graph_gives_second_derivatives_on_the_device(cuda, problem):
    params, x = problem

    def second(make):
        _, leaves = _eager(make, params, x, create_graph=True)
        first = leaves["w"].grad
        for leaf in leaves.values():
            leaf.grad = None
        cnp.sum(first * first).backward()
        return {k: t.grad for k, t in leaves.items()}

    _assert_on_cuda_and_equal(second(_to_cuda), second(np.asarray))


def test_fan_out_in_place_updates_and_no_grad_on_the_device(cuda, rng):
    values = rng.standard_normal(6)

    def run(make):
        x = cr.Tensor(make(values), requires_grad=True)
        y = x * x
        loss = cnp.sum(y * x + cnp.exp(y) - x)  # x reaches the loss three ways
        loss.backward()
        with cr.no_grad():
            untracked = x * 3.0
            x -= 0.1 * x.grad  # an SGD step, in place, on the device
        assert not untracked.requires_grad
        return x.grad, x.data, untracked.data

    _assert_on_cuda_and_equal(run(_to_cuda), run(np.asarray))


def test_finite_differences_on_the_device(cuda, rng):
    values = rng.standard_normal(4)

    def fun(v):
        return cnp.sum(cnp.sin(v) * v)

    _assert_on_cuda_and_equal(
        cr.numerical_grad(fun, _to_cuda(values)), cr.numerical_grad(fun, values)
    )
    cr.check_grads(fun, (_to_cuda(values),), modes=("rev", "fwd"), order=2)


def test_a_device_tensor_does_not_turn_into_numpy_silently(cuda):
    tensor = cr.Tensor(_to_cuda(np.ones(3)), requires_grad=True)
    with pytest.raises(TypeError, match=r"Tensor on 'cuda'.*to_numpy"):
        np.asarray(tensor)
    np.testing.assert_array_equal(tensor.to_numpy(), np.ones(3))
    assert cnp.asarray(_to_cuda(np.ones(2))).__class__ is SimulatedArray


# ------------------------------------------------------------------------------------------------
# (c) neural networks on the device
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def batch(rng):
    return (
        rng.standard_normal((8, 5)),
        np.array([0, 2, 1, 2, 0, 1, 1, 2]),
        rng.standard_normal((8, 3)),
    )


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_mlp_gradients_on_the_device_equal_the_cpu_ones(cuda, batch, activation, batchnorm):
    x, labels, targets = batch

    def run(move):
        model = nn.MLP([5, 7, 3], activation=activation, batchnorm=batchnorm, dropout=0.25, seed=1)
        if move:
            model.to("cuda")
        inputs, wanted_labels, wanted_targets = (
            _to_cuda(v) if move else v for v in (x, labels, targets)
        )
        params = model.parameters()
        results = {}
        for loss_name, loss, target in (
            ("cross_entropy", nn.cross_entropy, wanted_labels),
            ("mse", nn.mse, wanted_targets),
        ):

            def objective(p, loss=loss, target=target):
                return loss(
                    model.apply(p, inputs, train=True, rng=np.random.default_rng(3)), target
                )

            results[loss_name] = cr.value_and_grad(objective)(params)
        results["eval"] = model.apply(params, inputs, train=False)  # running statistics, no dropout
        results["buffers"] = model.named_buffers()
        # PyTorch style: the module's own tensors, .backward() fills their .grad.
        loss = nn.cross_entropy(
            model(inputs, train=True, rng=np.random.default_rng(4)), wanted_labels
        )
        loss.backward()
        results["eager"] = model.grads()
        return results

    got, want = run(move=True), run(move=False)
    for key in want:
        _assert_on_cuda_and_equal(got[key], want[key])


def test_a_model_built_under_the_cuda_default_device_lives_there(cuda, batch):
    x, labels, _ = batch
    with device("cuda"):
        model = nn.MLP([5, 4, 3], batchnorm=True, seed=2)
    host_model = nn.MLP([5, 4, 3], batchnorm=True, seed=2)
    assert all(type(leaf) is SimulatedArray for leaf in cr.tree_leaves(model.parameters()))
    assert all(type(leaf) is SimulatedArray for leaf in cr.tree_leaves(model.named_buffers()))
    _assert_on_cuda_and_equal(model.parameters(), host_model.parameters())
    # A checkpoint holds NumPy copies; loading one puts the values back on the device.
    state = model.state_dict()
    assert all(type(value) is np.ndarray for value in state.values())
    model.load_state_dict(host_model.state_dict())
    model.load_parameters(host_model.parameters())
    _assert_on_cuda_and_equal(model.parameters(), host_model.parameters())
    _assert_on_cuda_and_equal(model.named_buffers(), host_model.named_buffers())
    model.to("cpu")
    assert all(type(leaf) is np.ndarray for leaf in cr.tree_leaves(model.parameters()))


def test_a_training_step_on_the_device_reads_nothing_back(cuda, batch, monkeypatch):
    """No value goes back to the host during a step (forward with batch norm and dropout,
    cross-entropy, backward, optimizer update): each read would stall a GPU, and none can be
    part of a CUDA graph. A read is ``bool``/``int``/``float``/``index`` of a device array."""
    x, labels, _ = batch
    model = nn.MLP([5, 7, 3], batchnorm=True, dropout=0.2, seed=3).to("cuda")
    inputs, targets = _to_cuda(x), _to_cuda(labels)

    def refuse(self, *args):
        raise AssertionError("a device value was read back to the host")

    for optimizer in (optim.SGD(0.1, momentum=0.9), optim.Adam(1e-2)):
        params = model.parameters()
        state = optimizer.init(params)
        with monkeypatch.context() as patched:
            for name in ("__bool__", "__int__", "__float__", "__index__"):
                patched.setattr(SimulatedArray, name, refuse)
            loss, grads = cr.value_and_grad(
                lambda p: nn.cross_entropy(model.apply(p, inputs, train=True), targets)
            )(params)
            new_params, _ = optimizer.update(grads, state, params)
        assert all(type(leaf) is SimulatedArray for leaf in cr.tree_leaves(new_params))


@pytest.mark.parametrize(
    "optimizer", [optim.SGD(0.1, momentum=0.9), optim.Adam(1e-2)], ids=["sgd", "adam"]
)
def test_a_step_without_random_draws_copies_nothing_to_the_device(
    cuda, batch, monkeypatch, optimizer
):
    """What a CUDA graph needs besides no host reads: no host-to-device copy inside the step
    (CUDA refuses one while a stream is capturing). Every constant the engine, the layers, the
    loss and the optimizer use must be made on the device, not copied from the host. (Dropout
    draws its mask on the host by design: a captured step takes its random draws as arguments.)"""
    from chainrule.backend import simulated_cuda  # noqa: PLC0415

    x, labels, _ = batch
    model = nn.MLP([5, 7, 3], batchnorm=True, seed=3).to("cuda")
    inputs, targets = _to_cuda(x), _to_cuda(labels)
    params = model.parameters()
    state = optimizer.init(params)
    copy_from_host = simulated_cuda._from_host

    def refuse_host_values(value, dtype=None):
        if type(value) is not SimulatedArray:
            raise AssertionError(
                f"a host value was copied to the device inside the step: {value!r}"
            )
        return copy_from_host(value, dtype)

    with monkeypatch.context() as patched:
        patched.setattr(simulated_cuda, "_from_host", refuse_host_values)
        loss, grads = cr.value_and_grad(
            lambda p: nn.cross_entropy(model.apply(p, inputs, train=True), targets)
        )(params)
        new_params, _ = optimizer.update(grads, state, params)
    assert all(type(leaf) is SimulatedArray for leaf in cr.tree_leaves(new_params))


def test_module_to_moves_and_casts_parameters_and_buffers(cuda):
    model = nn.MLP([3, 4, 2], batchnorm=True).to("cuda", dtype=np.float32)
    for leaf in cr.tree_leaves((model.parameters(), model.named_buffers())):
        assert type(leaf) is SimulatedArray
    assert {leaf.dtype for leaf in cr.tree_leaves(model.parameters())} == {np.dtype(np.float32)}
    assert model[1].num_batches_tracked.dtype == np.int64  # integer buffers keep their dtype


def test_binary_logistic_and_layer_norm_on_the_device(cuda, rng):
    logits, labels = rng.standard_normal(6), (rng.uniform(size=6) > 0.5).astype(float)

    def value_and_grad(layer, z, y):
        def loss(z):
            return nn.binary_logistic(z, y) + cnp.sum(
                layer.apply(layer.parameters(), z[None, :]) ** 3
            )

        return cr.value_and_grad(loss)(z)

    got = value_and_grad(nn.LayerNorm(6).to("cuda"), _to_cuda(logits), _to_cuda(labels))
    _assert_on_cuda_and_equal(got, value_and_grad(nn.LayerNorm(6), logits, labels))


# ------------------------------------------------------------------------------------------------
# (d) mixing devices is a clear error
# ------------------------------------------------------------------------------------------------


def test_operands_on_two_devices_name_the_op_and_both_devices(cuda):
    on_device, on_host = _to_cuda(np.ones(3)), np.ones(3)
    pattern = (
        r"chainrule\.{op}: operands on different devices: operand 0 on 'cuda'.*operand 1 on 'cpu'"
    )
    with pytest.raises(TypeError, match=pattern.format(op="add")):
        cnp.add(on_device, on_host)
    with pytest.raises(TypeError, match=pattern.format(op="matmul")):
        cr.grad(lambda w: cnp.sum(w @ np.ones((3, 2))))(on_device)
    with pytest.raises(TypeError, match=r"chainrule\.where: .*condition on 'cpu'.*x on 'cuda'"):
        cnp.where(np.array([True, False, True]), on_device, on_device)
    labels_pattern = r"chainrule\.softmax_cross_entropy: .*operand 0 on 'cuda'.*labels on 'cpu'"
    with pytest.raises(TypeError, match=labels_pattern):
        cnp.softmax_cross_entropy(_to_cuda(np.ones((2, 3))), np.array([0, 1]))
    with pytest.raises(
        TypeError, match=r"softmax_cross_entropy: .*operand 0 on 'cpu'.*labels on 'cuda'"
    ):
        cnp.softmax_cross_entropy(np.ones((2, 3)), _to_cuda(np.array([0, 1])))
    tensor = cr.Tensor(on_device, requires_grad=True)
    with pytest.raises(TypeError, match=r"chainrule\.multiply: operands on different devices"):
        tensor * cr.Tensor(on_host)


def test_an_out_of_range_label_on_the_device_makes_that_loss_nan_without_a_host_read():
    logits = np.random.default_rng(0).standard_normal((3, 4))
    with simulate_cuda():
        device_logits = _to_cuda(logits)
        losses = nn.cross_entropy(device_logits, _to_cuda(np.array([1, 4, -1])), reduction="none")
        values = losses.get()
        assert np.isfinite(values[0]) and np.isnan(values[1:]).all()
        assert np.isnan(float(nn.cross_entropy(device_logits, _to_cuda(np.array([0, 1, 9])))))
        good = nn.cross_entropy(device_logits, _to_cuda(np.array([0, 1, 3])))
        expected = float(nn.cross_entropy(logits, np.array([0, 1, 3])))
        np.testing.assert_allclose(float(good), expected, rtol=1e-14)
    with pytest.raises(ValueError, match="outside"):
        nn.cross_entropy(logits, np.array([0, 1, 9]))
