"""Devices: the CPU always; CUDA through CuPy when a GPU is present (those tests skip otherwise)."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.backend.device import (
    Device,
    cuda_available,
    current_device,
    default_float_dtype,
    device,
    device_of,
    to_device,
    to_numpy,
)
from chainrule.engine import arraylib


class _FakeDevice:
    id = 0


class FakeCudaArray:
    """Stands in for ``cupy.ndarray`` in the device lookup and in refusing NumPy operands,
    which is all the mixed-device error path needs."""

    device = _FakeDevice()
    __array_priority__ = 100

    def __init__(self, shape):
        self.shape = shape
        self.dtype = np.dtype(np.float32)
        self.ndim = len(shape)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise TypeError(f"Unsupported type {type(inputs[0])}")


FakeCudaArray.__module__ = "cupy._core.core"
FakeCudaArray.__name__ = "ndarray"


def test_cpu_is_the_default_and_a_context_manager():
    assert current_device() == "cpu" and current_device().name == "cpu"
    with device("cpu") as cpu:
        assert current_device() is cpu
    assert device("cpu") == Device("cpu:0")
    assert default_float_dtype("cpu") == np.float64


def test_unknown_device_names_are_errors():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        device("tpu")
    with pytest.raises(ValueError, match="unknown device"):
        device("cpu:3")


@pytest.mark.skipif(cuda_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device 'cuda'.*CuPy|not available"):
        device("cuda")
    with pytest.raises(RuntimeError, match="CuPy|not available"):
        cr.Tensor(np.ones(2)).to("cuda")


def test_tensor_to_and_to_numpy_on_the_cpu():
    x = cr.Tensor(np.arange(3.0), requires_grad=True)
    assert x.device == "cpu" and x.to("cpu") is x
    np.testing.assert_array_equal(x.to_numpy(), [0.0, 1.0, 2.0])
    moved = to_device({"w": x, "b": np.ones(2), "n": 3}, "cpu")
    assert moved["w"] is x and moved["n"] == 3
    host = to_numpy({"w": x, "b": [np.ones(2)]})
    assert type(host["w"]) is np.ndarray and type(host["b"][0]) is np.ndarray
    assert device_of(x) == "cpu" and device_of(np.ones(1)) == "cpu" and device_of(2.0) == "cpu"


def test_moving_a_recorded_result_is_refused():
    x = cr.Tensor(np.arange(3.0), requires_grad=True)
    expected = r"Tensor.to\('cuda'\): a recorded result \(shape \(3,\)\) would lose its graph"
    with pytest.raises(RuntimeError, match=expected):
        (x * 2.0).to("cuda")


def test_device_lookup_recognises_cuda_arrays():
    fake = FakeCudaArray((2,))
    assert arraylib.device_of(fake) == "cuda" and arraylib.is_array(fake)
    assert arraylib.asarray(fake) is fake  # stays on its device


def test_mixing_devices_in_one_op_names_the_op_and_both_devices():
    fake = FakeCudaArray((2,))
    expected = (
        r"chainrule.add: operands on different devices: operand 0 on 'cpu'.*operand 1 on 'cuda'"
    )
    with pytest.raises(TypeError, match=expected):
        cnp.add(np.ones(2), fake)
    with pytest.raises(TypeError, match=r"chainrule.multiply: operands on different devices"):
        cr.Tensor(np.ones(2), requires_grad=True) * fake


def test_same_device_errors_keep_their_shape_message():
    with pytest.raises(ValueError, match=r"chainrule.add: .*operand shapes: \(2,\), \(3,\)"):
        cnp.add(np.ones(2), np.ones(3))


# ------------------------------------------------------------------------------------------------
# On a GPU (skipped without CuPy or a device)
# ------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")


@cuda
def test_gradients_on_cuda_match_the_cpu():
    import cupy

    rng = np.random.default_rng(0)
    w, x = (
        rng.standard_normal((8, 4)).astype(np.float32),
        rng.standard_normal((16, 8)).astype(np.float32),
    )

    def loss(w, x):
        return cnp.mean(cnp.tanh(x @ w) ** 2)

    cpu_grad = cr.grad(loss)(w, x)
    gpu_grad = cr.grad(loss)(cupy.asarray(w), cupy.asarray(x))
    assert device_of(gpu_grad) == "cuda"
    np.testing.assert_allclose(to_numpy(gpu_grad), cpu_grad, rtol=1e-4, atol=1e-6)


@cuda
def test_tensor_round_trip_through_cuda():
    x = cr.Tensor(np.arange(4.0, dtype=np.float32), requires_grad=True)
    on_gpu = x.to("cuda")
    assert on_gpu.device == "cuda" and on_gpu.requires_grad
    (on_gpu * on_gpu).sum().backward()
    np.testing.assert_allclose(on_gpu.grad.get(), 2 * np.arange(4.0))
    np.testing.assert_array_equal(on_gpu.to("cpu").to_numpy(), x.to_numpy())
    with pytest.raises(TypeError, match="different devices"):
        x * on_gpu
