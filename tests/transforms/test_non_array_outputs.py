"""Transforms refuse outputs they cannot differentiate (hostile inputs, issue class "silent
wrong answers"): a function returning ``None``, a string or a list of numbers would otherwise
differentiate to zeros, since nothing in it was recorded. JAX raises a TypeError; so do we."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp

X = np.array([1.0, 2.0, 3.0])

BAD_OUTPUTS = {
    "None": (lambda x: None, "NoneType"),
    "str": (lambda x: "loss", "str"),
    "list of numbers": (lambda x: [1.0, 2.0], "list"),
    "dict": (lambda x: {"loss": cnp.sum(x)}, "dict"),
    "object": (lambda x: object(), "object"),
}

TRANSFORMS = {
    "grad": lambda f: cr.grad(f)(X),
    "value_and_grad": lambda f: cr.value_and_grad(f)(X),
    "grad has_aux": lambda f: cr.grad(lambda x: (f(x), None), has_aux=True)(X),
    "vjp": lambda f: cr.vjp(f, X),
    "jacrev": lambda f: cr.jacrev(f)(X),
    "jacfwd": lambda f: cr.jacfwd(f)(X),
    "hessian": lambda f: cr.hessian(f)(X),
}

# Pytrees of numbers are valid outputs for the Jacobian transforms (their Jacobians are zeros),
# and a dict of arrays is a valid output of vjp: only grad needs one array.
ACCEPTED = {
    ("list of numbers", "vjp"),
    ("list of numbers", "jacrev"),
    ("list of numbers", "jacfwd"),
    ("list of numbers", "hessian"),
    ("dict", "vjp"),
    ("dict", "jacrev"),
    ("dict", "jacfwd"),
    ("dict", "hessian"),
}


@pytest.mark.parametrize("output", sorted(BAD_OUTPUTS))
@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
def test_a_non_array_output_is_a_type_error_naming_the_type(output, transform):
    fun, type_name = BAD_OUTPUTS[output]
    if (output, transform) in ACCEPTED:
        TRANSFORMS[transform](fun)  # runs, no error
        return
    with pytest.raises(TypeError) as error:
        TRANSFORMS[transform](fun)
    message = str(error.value)
    assert type_name in message, message
    assert "must return" in message, message


def test_a_string_inside_a_pytree_output_is_named_with_its_container():
    with pytest.raises(TypeError, match=r"jacrev: .*got str \('a'\) inside its tuple output"):
        cr.jacrev(lambda x: (cnp.sum(x), "a"))(X)


def test_numbers_and_constant_arrays_are_still_valid_outputs_with_zero_gradient():
    np.testing.assert_array_equal(cr.grad(lambda x: 1.0)(X), np.zeros(3))
    np.testing.assert_array_equal(cr.grad(lambda x: np.float64(2.0))(X), np.zeros(3))
    np.testing.assert_array_equal(cr.grad(lambda x: np.array(2.0))(X), np.zeros(3))
    out, pull = cr.vjp(lambda x: [x * 2.0, np.ones(2)], X)
    np.testing.assert_array_equal(pull([np.ones(3), np.ones(2)])[0], np.full(3, 2.0))


def test_a_boolean_output_is_refused():
    with pytest.raises(TypeError, match="grad: fun must return an array or a Tensor, got bool"):
        cr.grad(lambda x: True)(X)
