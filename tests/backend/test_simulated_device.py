"""The simulated CUDA device itself: it must refuse what CuPy refuses, or it would hide leaks."""

import numpy as np
import pytest

import chainrule as cr
from chainrule.backend.device import (
    Device,
    cuda_available,
    device,
    device_of,
    to_device,
    to_numpy,
)
from chainrule.backend.simulated_cuda import SimulatedArray, simulate_cuda
from chainrule.engine import arraylib


def test_cuda_is_a_device_only_inside_the_block():
    with simulate_cuda():
        assert Device("cuda").name == "cuda"
        x = to_device(np.arange(3.0), "cuda")
        assert type(x) is SimulatedArray and device_of(x) == "cuda"
        assert arraylib.namespace_of(x) is not np
    assert (
        arraylib.cupy_module() is None or type(arraylib.cupy_module()).__name__ != "SimulatedCuPy"
    )
    assert device_of(x) == "cpu"  # the type is no longer registered as a CUDA array
    if not cuda_available():
        with pytest.raises(RuntimeError, match="CuPy"):
            device("cuda")


def test_host_arrays_cannot_be_mixed_in():
    with simulate_cuda():
        x = to_device(np.ones(3), "cuda")
        with pytest.raises(TypeError, match=r"numpy\.add: .*numpy\.ndarray with shape \(3,\)"):
            x + np.ones(3)
        with pytest.raises(TypeError, match="numpy.add"):
            np.ones(3) + x
        with pytest.raises(TypeError, match="numpy.concatenate"):
            np.concatenate([x, np.ones(2)])
        with pytest.raises(TypeError, match="__setitem__"):
            x[:2] = np.zeros(2)
        with pytest.raises(TypeError, match="Implicit conversion"):
            np.asarray(x)
        # What CuPy accepts: Python and NumPy scalars, host index arrays, explicit copies.
        assert type(x * 2.0 + np.float64(1.0)) is SimulatedArray
        assert x[np.array([0, 2])].shape == (2,)
        np.testing.assert_array_equal((x * 3).get(), [3.0, 3.0, 3.0])
        np.testing.assert_array_equal(to_numpy({"x": x})["x"], np.ones(3))
        assert type(np.sum(x)) is SimulatedArray and float(np.sum(x)) == 3.0


def test_devices_must_match_and_exist():
    with simulate_cuda(device_count=2):
        a = to_device(np.ones(2), "cuda")
        b = to_device(np.ones(2), "cuda:1")
        assert device_of(b) == "cuda:1"
        with pytest.raises(ValueError, match="devices 0 and 1"):
            a + b
        with pytest.raises(RuntimeError, match="cuda:2.*not available"):
            device("cuda:2")


def test_engine_results_stay_on_the_device():
    with simulate_cuda():
        w = to_device(np.array([0.5, -1.0]), "cuda")
        value, grad = cr.value_and_grad(lambda w: cr.numpy.sum(cr.numpy.tanh(w) ** 2))(w)
        assert device_of(value) == "cuda" and device_of(grad) == "cuda"
        expected = 2 * np.tanh([0.5, -1.0]) * (1 - np.tanh([0.5, -1.0]) ** 2)
        np.testing.assert_allclose(grad.get(), expected, rtol=1e-12)


def test_ufunc_methods_cupy_lacks_are_refused():
    with simulate_cuda():
        x = to_device(np.arange(6.0).reshape(2, 3), "cuda")
        assert float(np.add.reduce(x, axis=None)) == 15.0
        with pytest.raises(NotImplementedError, match=r"maximum\.reduce.*numpy\.max"):
            np.maximum.reduce(x, axis=1)
        with pytest.raises(TypeError, match="initial"):
            np.add.reduce(x, axis=1, initial=0.0)
        target = to_device(np.zeros(3), "cuda")
        np.add.at(target, np.array([0, 0, 2]), 1.0)
        np.testing.assert_array_equal(target.get(), [2.0, 0.0, 1.0])
        with pytest.raises(NotImplementedError, match="multiply.at"):
            np.multiply.at(target, np.array([0]), 2.0)


def test_out_of_range_integer_indices_wrap_around_as_in_cupy():
    with simulate_cuda():
        x = to_device(np.arange(8.0).reshape(2, 4), "cuda")
        picked = x[np.arange(2), to_device(np.array([1, 5]), "cuda")]
        np.testing.assert_array_equal(picked.get(), [1.0, 5.0])  # row 1, column 5 % 4 = 1
