"""Clear errors, nothing silent: every failure names what went wrong and what to do instead."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp


def leaf(value):
    return cr.Tensor(np.asarray(value, dtype=np.float64), requires_grad=True)


def _names(message, *fragments):
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in error message: {message}"


# ------------------------------------------------------------------------------------------------
# Shape mismatches: ValueError naming the op and both shapes
# ------------------------------------------------------------------------------------------------

A23, A4, A42 = np.zeros((2, 3)), np.zeros(4), np.zeros((4, 2))

SHAPE_ERRORS = [
    ("add", lambda x: cnp.add(x, A4), "(2, 3)", "(4,)"),
    ("add", lambda x: x + A4, "(2, 3)", "(4,)"),  # the Tensor operator's fast path
    ("multiply", lambda x: A4 * x, "(4,)", "(2, 3)"),  # reflected operator
    ("subtract", lambda x: x - cr.Tensor(A4), "(2, 3)", "(4,)"),
    ("divide", lambda x: cnp.divide(x, A4), "(2, 3)", "(4,)"),
    ("maximum", lambda x: cnp.maximum(x, A4), "(2, 3)", "(4,)"),
    ("matmul", lambda x: x @ A42, "(2, 3)", "(4, 2)"),
    ("matmul", lambda x: cnp.matmul(x, A4), "(2, 3)", "(4,)"),
    ("concatenate", lambda x: cnp.concatenate([x, A42]), "(2, 3)", "(4, 2)"),
    ("stack", lambda x: cnp.stack([x, A4]), "(2, 3)", "(4,)"),
    ("einsum", lambda x: cnp.einsum("ij,jk->ik", x, A42), "(2, 3)", "(4, 2)"),
    ("solve", lambda x: cnp.linalg.solve(np.eye(3), A4), "(3, 3)", "(4,)"),
    ("broadcast_to", lambda x: cnp.broadcast_to(x, (4, 3)), "(2, 3)", "(4, 3)"),
    ("reshape", lambda x: cnp.reshape(x, (4,)), "(2, 3)", "(4,)"),
    (
        "softmax_cross_entropy",
        lambda x: cnp.softmax_cross_entropy(x, np.array([0, 1, 2])),
        "(2, 3)",
        "(3,)",
    ),
    ("where", lambda x: cnp.where(np.ones(4, bool), x, 0.0), "(2, 3)", "(4,)"),
]


@pytest.mark.parametrize(
    "op, fun, shape_a, shape_b",
    SHAPE_ERRORS,
    ids=[f"{e[0]}-{i}" for i, e in enumerate(SHAPE_ERRORS)],
)
def test_shape_mismatch_names_the_op_and_both_shapes(op, fun, shape_a, shape_b):
    with pytest.raises(ValueError) as error:
        fun(leaf(A23))
    _names(str(error.value), f"chainrule.{op}", shape_a, shape_b)


def test_shape_mismatch_inside_transforms_names_the_op_and_both_shapes():
    for transform in (
        lambda f: cr.grad(f)(A23),
        lambda f: cr.vjp(f, A23),
        lambda f: cr.jvp(f, (A23,), (A23,)),
    ):
        with pytest.raises(ValueError) as error:
            transform(lambda x: cnp.sum(x * A4))
        _names(str(error.value), "chainrule.multiply", "(2, 3)", "(4,)")


@pytest.mark.parametrize(
    "fun, fragments",
    [
        (lambda x: cnp.linalg.det(x), ("linalg.det", "square", "(2, 3)")),
        (lambda x: cnp.linalg.inv(x), ("linalg.inv", "square", "(2, 3)")),
        (lambda x: cnp.sum(x, axis=2), ("chainrule.sum", "axis 2", "rank 2")),
        (lambda x: cnp.max(x, axis=(0, 0)), ("chainrule.max", "repeated axis")),
        (lambda x: cnp.squeeze(x, axis=0), ("chainrule.squeeze", "size 2", "(2, 3)")),
        (lambda x: cnp.split(x, 2, axis=1), ("chainrule.split", "size 3", "2 equal parts")),
        (
            lambda x: cnp.take_along_axis(x, np.zeros(3, int), 1),
            ("take_along_axis", "rank 1", "rank 2"),
        ),
        (lambda x: cnp.expand_dims(x, 4), ("chainrule.expand_dims", "axis 4", "(2, 3)")),
        (lambda x: cnp.stack([x, x], axis=3), ("chainrule.expand_dims", "axis 3")),
        (lambda x: cnp.cross(x[:, :2], x[:, :2]), ("chainrule.cross", "length 3", "(2, 2)")),
        (lambda x: cnp.transpose(x, (0, 0)), ("chainrule.transpose", "permutation")),
        (lambda x: cnp.matmul(x, 2.0), ("chainrule.matmul", "(2, 3)", "()")),
        (lambda x: cnp.einsum("ij,jk", x, x), ("chainrule.einsum", "explicit output")),
        (lambda x: cnp.linalg.norm(x, 3), ("linalg.norm", "order 3", "matrices")),
        (lambda x: cnp.linalg.norm(x[0], "fro"), ("linalg.norm", "'fro'", "vectors")),
    ],
    ids=[
        "det",
        "inv",
        "axis",
        "repeated axis",
        "squeeze",
        "split",
        "take_along_axis",
        "expand_dims",
        "stack axis",
        "cross",
        "transpose",
        "matmul scalar",
        "einsum implicit",
        "norm ord 3 matrix",
        "norm fro vector",
    ],
)
def test_invalid_arguments_are_reported_by_name(fun, fragments):
    with pytest.raises((ValueError, NotImplementedError)) as error:
        fun(leaf(A23))
    _names(str(error.value), *fragments)


def test_index_errors_name_the_op_and_the_shape():
    with pytest.raises(IndexError) as error:
        leaf(A23)[5]
    _names(str(error.value), "chainrule.getitem", "(2, 3)", "index 5")
    with pytest.raises(IndexError) as error:
        leaf(A23)[np.ones(4, bool)]
    _names(str(error.value), "chainrule.getitem", "(2, 3)", "size of axis is 2")


def test_jvp_tangent_and_vjp_cotangent_shapes_are_checked():
    with pytest.raises(ValueError) as error:
        cr.jvp(cnp.sin, (np.ones(3),), (np.ones(2),))
    _names(str(error.value), "jvp", "(2,)", "(3,)")
    _, vjp_fun = cr.vjp(lambda a: (a, a), np.ones(3))
    with pytest.raises(ValueError, match="structure"):
        vjp_fun(np.ones(3))
    with pytest.raises(ValueError) as error:
        leaf(A23).__mul__(2.0).backward(np.ones(3))
    _names(str(error.value), "backward", "(3,)", "(2, 3)")


# ------------------------------------------------------------------------------------------------
# Misuse of backward and grad: each error says what to do instead
# ------------------------------------------------------------------------------------------------


def test_backward_of_a_non_scalar_needs_a_cotangent():
    y = leaf([1.0, 2.0, 3.0]) * 2
    with pytest.raises(RuntimeError) as error:
        y.backward()
    _names(str(error.value), "(3,)", "cotangent", "sum()")


def test_second_backward_on_a_freed_graph():
    x = leaf([1.0, 2.0])
    y = (cnp.exp(x) * x).sum()
    y.backward()
    with pytest.raises(RuntimeError) as error:
        y.backward()
    _names(str(error.value), "freed", "retain_graph=True")
    np.testing.assert_allclose(x.grad, np.exp([1.0, 2.0]) * [2.0, 3.0])  # the first result stands


def test_backward_through_a_partly_freed_graph():
    x = leaf([1.0, 2.0])
    shared = cnp.sin(x)
    first = shared.sum()
    second = (shared * 2).sum()
    first.backward()  # frees the node of ``shared`` too
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        second.backward()


def test_backward_of_something_that_records_nothing():
    with pytest.raises(RuntimeError) as error:
        cr.Tensor([1.0, 2.0]).sum().backward()
    _names(str(error.value), "does not require grad", "requires_grad=True")


@pytest.mark.parametrize("data", [np.arange(3), np.array([True, False]), [1, 2, 3]])
def test_requires_grad_on_an_integer_or_boolean_array(data):
    with pytest.raises(TypeError) as error:
        cr.Tensor(data, requires_grad=True)
    _names(str(error.value), "floating-point", "dtype=float")
    with pytest.raises(TypeError, match="floating-point"):
        cr.Tensor(data).requires_grad_()
    assert cr.Tensor(data, dtype=float, requires_grad=True).requires_grad


def test_grad_of_an_integer_input():
    with pytest.raises(TypeError) as error:
        cr.grad(lambda a: cnp.sum(a * 1.0))(np.arange(3))
    _names(str(error.value), "floating-point", "int64", ".astype(float)")


def test_grad_of_a_function_that_does_not_return_a_scalar():
    with pytest.raises(TypeError) as error:
        cr.grad(lambda x: x * 2)(np.ones(3))
    _names(str(error.value), "scalar", "(3,)", "sum", "vjp")
    with pytest.raises(TypeError, match="scalar"):
        cr.value_and_grad(lambda x: cnp.stack([x, x]))(np.array(1.0))


def test_grad_has_aux_needs_a_pair_and_argnums_must_exist():
    with pytest.raises(TypeError, match=r"has_aux=True.*pair"):
        cr.grad(lambda a: cnp.sum(a), has_aux=True)(np.ones(3))
    with pytest.raises(ValueError) as error:
        cr.grad(lambda a: cnp.sum(a), argnums=2)(np.ones(3))
    _names(str(error.value), "argnums 2", "1 positional argument")


def test_jvp_needs_tuples_of_matching_length():
    with pytest.raises(TypeError, match="tuples"):
        cr.jvp(cnp.sin, np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="2 primals but 1 tangents"):
        cr.jvp(cnp.add, (np.ones(3), np.ones(3)), (np.ones(3),))


# ------------------------------------------------------------------------------------------------
# In-place changes after the graph saved an array
# ------------------------------------------------------------------------------------------------


def test_in_place_change_of_a_leaf_that_requires_grad_is_refused_outright():
    x = leaf([1.0, 2.0])
    for change in (lambda: x.__iadd__(1.0), lambda: x.__setitem__(0, 5.0), lambda: x.__imul__(2.0)):
        with pytest.raises(RuntimeError) as error:
            change()
        _names(str(error.value), "in-place", "no_grad")
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])  # nothing was changed


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.__iadd__(1.0),
        lambda t: t.__isub__(1.0),
        lambda t: t.__imul__(2.0),
        lambda t: t.__itruediv__(2.0),
        lambda t: t.__setitem__(0, 5.0),
    ],
    ids=["+=", "-=", "*=", "/=", "setitem"],
)
def test_in_place_change_of_a_saved_leaf_under_no_grad_raises_at_backward(change):
    x = leaf([1.0, 2.0])
    y = (x * x).sum()  # multiply saved x
    with cr.no_grad():
        change(x)
    with pytest.raises(RuntimeError) as error:
        y.backward()
    _names(str(error.value), "backward of multiply", "(2,)", "changed in place")
    assert x.grad is None  # no wrong gradient was written


def test_in_place_change_of_a_saved_constant_tensor_raises_at_backward():
    x = leaf([1.0, 2.0])
    constant = cr.Tensor([3.0, 4.0])
    y = cnp.sum(cnp.exp(x * constant))
    constant[0] = 10.0  # allowed: the constant needs no gradient, but multiply saved it
    with pytest.raises(RuntimeError, match="backward of multiply.*changed in place"):
        y.backward()


def test_in_place_change_of_a_saved_intermediate_raises_at_backward():
    x = leaf([1.0, 2.0])
    hidden = x * 2
    y = (hidden * hidden).sum()
    with cr.no_grad():
        hidden += 1.0
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()


def test_a_graph_recorded_after_the_change_is_fine():
    x = leaf([1.0, 2.0])
    stale = (x * 3).sum()
    with cr.no_grad():
        x += 1.0
    fresh = (x * x).sum()
    fresh.backward()
    np.testing.assert_allclose(x.grad, [4.0, 6.0])
    assert stale.requires_grad


def test_changing_an_unrelated_tensor_does_not_break_backward():
    x, other = leaf([1.0, 2.0]), cr.Tensor([5.0])
    y = (x * x).sum()
    other[0] = 7.0
    y.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


# ------------------------------------------------------------------------------------------------
# detect_anomaly: the first op whose forward or backward made NaN/Inf
# ------------------------------------------------------------------------------------------------


def test_anomaly_mode_names_the_first_forward_op_that_made_nan():
    x = leaf([-1.0, 1.0])
    with np.errstate(invalid="ignore"), cr.detect_anomaly():
        with pytest.raises(cr.AnomalyError) as error:
            cnp.exp(cnp.log(x) * 2).sum()  # log makes the NaN; multiply and exp only carry it
    _names(str(error.value), "forward of log", "NaN/Inf", "(2,)")
    assert isinstance(error.value, FloatingPointError)


def test_anomaly_mode_catches_inf_from_an_operator_fast_path():
    x = leaf([1.0, 2.0])
    with np.errstate(divide="ignore"), cr.detect_anomaly():
        with pytest.raises(cr.AnomalyError, match="forward of divide"):
            x / np.array([0.0, 1.0])


def test_anomaly_mode_names_the_first_backward_op_that_made_nan():
    x = leaf([0.0, 1.0])
    with np.errstate(divide="ignore", invalid="ignore"), cr.detect_anomaly():
        y = cnp.sum(cnp.sqrt(x) * 3.0)  # finite forward: sqrt(0) = 0
        with pytest.raises(cr.AnomalyError) as error:
            y.backward()  # d sqrt/dx at 0 = 1/0
    _names(str(error.value), "backward of sqrt", "NaN/Inf")


def test_anomaly_mode_in_functional_transforms():
    with np.errstate(all="ignore"), cr.detect_anomaly():
        with pytest.raises(cr.AnomalyError, match="forward of log"):
            cr.grad(lambda a: cnp.sum(cnp.log(a)))(np.array([-1.0]))
        with pytest.raises(cr.AnomalyError, match="backward of sqrt"):
            cr.grad(lambda a: cnp.sum(cnp.sqrt(a)))(np.array([0.0]))
        with pytest.raises(cr.AnomalyError, match="forward of log"):
            cr.jvp(cnp.log, (np.array([-1.0]),), (np.array([1.0]),))


def test_without_anomaly_mode_nan_flows_through_and_the_mode_is_restored():
    with np.errstate(invalid="ignore"):
        with cr.detect_anomaly():
            pass
        with pytest.raises(KeyError), cr.detect_anomaly():
            raise KeyError("raised inside the block")
        x = leaf([-1.0])
        y = cnp.sum(cnp.log(x))
        assert np.isnan(y.item())
        y.backward()
    assert x.grad == pytest.approx(-1.0)


def test_in_place_change_of_a_saved_plain_array_raises_at_backward_in_anomaly_mode():
    x = leaf([1.0, 2.0])
    constant = np.array([3.0, 4.0])
    with cr.detect_anomaly():
        y = cnp.sum(x * constant)
        constant[0] = 10.0
        with pytest.raises(RuntimeError) as error:
            y.backward()
    _names(str(error.value), "backward of multiply", "argument 1", "plain array", "(2,)")
    assert "changed in place" in str(error.value)
    assert x.grad is None  # nothing wrong was accumulated


def test_anomaly_mode_catches_a_write_to_a_saved_tensors_data_and_in_transforms():
    x = leaf([1.0, 2.0])
    with cr.detect_anomaly():
        e = cnp.exp(x)
        y = cnp.sum(e)
        e.data[0] = 0.0  # bypasses the version counter
        with pytest.raises(RuntimeError, match="backward of sum: argument 0 .*changed in place"):
            y.backward()
        weights = np.array([3.0, 4.0])

        def loss(v):
            out = cnp.sum(v * weights)
            weights[1] = -1.0  # changed after use, before grad's backward pass
            return out

        with pytest.raises(RuntimeError, match="backward of multiply: argument 1"):
            cr.grad(loss)(np.ones(2))


def test_anomaly_mode_catches_a_changed_condition_or_index_array():
    x = leaf([1.0, 2.0, 3.0])
    condition = np.array([True, False, True])
    rows = np.array([0, 2])
    with cr.detect_anomaly():
        y = cnp.sum(cnp.where(condition, x, 0.0))
        condition[1] = True
        with pytest.raises(RuntimeError, match="backward of where: argument 'condition'"):
            y.backward()
        z = cnp.sum(cnp.reshape(x, (3, 1))[rows, :])
        rows[0] = 1
        with pytest.raises(RuntimeError, match=r"backward of getitem: parameter 'index'\[0\]"):
            z.backward()


def test_anomaly_mode_passes_unchanged_arrays_and_keeps_no_entry_alive():
    from chainrule.engine import anomaly

    x = leaf([1.0, 2.0])
    constant = np.array([3.0, 4.0])
    with cr.detect_anomaly():
        cnp.sum(cnp.exp(x) * constant).backward()
        hess = cr.hessian(lambda v: cnp.sum(cnp.sin(v) * constant))(np.ones(2))
    np.testing.assert_allclose(x.grad, np.exp([1.0, 2.0]) * constant)
    np.testing.assert_allclose(hess, np.diag(-np.sin(np.ones(2)) * constant))
    del x
    import gc

    gc.collect()
    assert not anomaly._saved_digests  # entries die with their nodes


def test_without_anomaly_mode_a_changed_plain_array_goes_unnoticed_as_documented():
    x = leaf([1.0, 2.0])
    constant = np.array([3.0, 4.0])
    y = cnp.sum(x * constant)
    constant[0] = 10.0
    y.backward()  # the README says so: only anomaly mode hashes plain arrays
    np.testing.assert_array_equal(x.grad, [10.0, 4.0])


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_softmax_cross_entropy_rejects_labels_outside_the_classes(bad_label):
    logits = np.array([[0.0, 1.0, 5.0]])
    with pytest.raises(ValueError, match=r"softmax_cross_entropy.*\[0, 3\)"):
        cnp.softmax_cross_entropy(logits, np.array([bad_label]))


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, -128, 2], dtype=np.int8),  # the most negative label of its dtype
        np.array([0, 255, 2], dtype=np.uint8),  # the largest
        np.array([0, -5, 2], dtype=">i2"),  # another byte order
        np.array([0, 9, 1, 9, -1, 9])[::2],  # a strided view: [0, 1, -1]
        np.array(-2),  # one example, 0-d
    ],
    ids=["int8", "uint8", "big-endian", "strided", "0-d"],
)
def test_the_label_range_check_sees_both_ends_in_every_integer_dtype(labels):
    # One maximum over the labels seen as unsigned checks both ends: a negative label must still
    # be refused (it would pick a class from the end), and the message gives the true range.
    logits = np.zeros((*labels.shape, 4))
    low, high = int(labels.min()), int(labels.max())
    with pytest.raises(ValueError, match=rf"\[0, 4\), got values from {low} to {high}"):
        cnp.softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, ">i2", np.int64, np.uint64])
def test_labels_at_both_ends_of_the_classes_are_accepted_in_every_integer_dtype(dtype):
    labels = np.array([0, 3, 1], dtype=dtype)
    logits = np.arange(12.0).reshape(3, 4)
    expected = cnp.softmax_cross_entropy(logits, np.array([0, 3, 1]))
    np.testing.assert_array_equal(cnp.softmax_cross_entropy(logits, labels), expected)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.bool_])
def test_backward_of_a_non_float_tensor_names_its_dtype(dtype):
    # An integer (or boolean) result of differentiable inputs has no gradient to seed.
    x = cr.Tensor(np.array([1.5, 2.5]), requires_grad=True)
    y = cnp.sum(cnp.astype(x, dtype))  # the cast is recorded; the sum keeps an integer dtype
    assert y.requires_grad and y.dtype.kind in "iu"
    with pytest.raises(TypeError, match=f"dtype {y.dtype}; it must be floating"):
        y.backward()
    assert x.grad is None  # nothing was filled in
    z = cr.Tensor(np.array(2.0, np.float32), requires_grad=True)
    (z * z).backward()  # float32: accepted, seeded in its dtype
    assert z.grad.dtype == np.float32 and z.grad == 4.0
