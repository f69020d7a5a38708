"""``chainrule.defprim``: a primitive declared from user code, with every field of a table entry,
works in every mode and stays out of the library's table."""

from __future__ import annotations

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp


def _cube():
    return cr.defprim(
        "cube",
        lambda x: x * x * x,
        (lambda g, out, x: g * 3 * x * x,),
        lambda tangents, out, x: tangents[0] * 3 * x * x,
        flops=lambda out, x: 2 * x.size,
        batching="elementwise",
    )


def test_a_user_primitive_differentiates_in_every_mode_and_order():
    cube = _cube()
    x = np.array([0.5, -1.5, 2.0])
    np.testing.assert_allclose(cr.grad(lambda x: cnp.sum(cube(x)))(x), 3 * x * x)
    np.testing.assert_allclose(cr.jacfwd(cube)(x), np.diag(3 * x * x))
    np.testing.assert_allclose(cr.hessian(lambda x: cnp.sum(cube(x)))(x), np.diag(6 * x))
    cr.check_grads(cube, (x,), modes=("fwd", "rev"), order=2)
    xs = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(cr.vmap(cr.grad(lambda x: cnp.sum(cube(x))))(xs), 3 * xs * xs)


def test_a_user_primitive_is_counted_and_stays_out_of_the_table():
    cube = _cube()
    with cr.count() as counted:
        cube(np.ones(5))
    assert counted.primitives["cube"] == 1
    assert "cube" not in cr.primitives
    _cube()  # declaring it again (a notebook cell run twice) is fine


def test_a_user_primitive_may_not_take_a_table_name_or_lack_a_rule():
    with pytest.raises(ValueError, match="'exp' is declared twice"):
        cr.defprim("exp", np.exp, (lambda g, out, x: g * out,), "from_vjp")
    with pytest.raises(TypeError, match="needs both a VJP and a JVP rule"):
        cr.defprim("half", lambda x: x / 2, (lambda g, out, x: g / 2,), None)


def test_a_user_primitive_without_a_batching_rule_runs_one_example_at_a_time_under_vmap():
    calls = []

    def forward(x):
        calls.append(x.shape)
        return x * x * x

    cube = cr.defprim(
        "cube_unbatched",
        forward,
        (lambda g, out, x: g * 3 * x * x,),
        lambda tangents, out, x: tangents[0] * 3 * x * x,
    )
    xs = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(cr.vmap(cube)(xs), xs**3)
    assert calls == [(2,), (2,), (2,)]  # the fallback: one example at a time, then stacked
    np.testing.assert_allclose(cr.vmap(cr.grad(lambda x: cnp.sum(cube(x))))(xs), 3 * xs * xs)
