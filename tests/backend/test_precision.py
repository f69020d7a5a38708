"""Matmul precision modes on the CPU: exact TF32 / bfloat16 emulation, error bounds, gradients that
follow the mode, nesting and restoring, and a default path left as it was."""

import numpy as np
import pytest

import chainrule as cr
import chainrule.numpy as cnp
from chainrule.backend.capture import capture
from chainrule.backend.precision import (
    MODES,
    get_matmul_precision,
    matmul_precision,
    round_to_bfloat16,
    round_to_tf32,
)
from chainrule.engine.core import forward_of, state
from chainrule.engine.primitives import TABLE

UNIT_ROUNDOFF = {"highest": 0.0, "tf32": 2.0**-11, "bf16": 2.0**-8}  # of the inputs' rounding
ROUNDING = {"tf32": round_to_tf32, "bf16": round_to_bfloat16}


def _bits(values):
    return np.array(values, dtype=np.uint32).view(np.float32)


def _as_bits(array):
    return [hex(int(v)) for v in np.asarray(array, np.float32).view(np.uint32)]


@pytest.fixture(autouse=True)
def _default_mode_around_each_test():
    assert forward_of(TABLE["matmul"]) is np.matmul and get_matmul_precision() == "highest"
    yield
    assert forward_of(TABLE["matmul"]) is np.matmul, "a test left a precision mode on"
    assert get_matmul_precision() == "highest" and not state.hooked


# ------------------------------------------------------------------------------------------------
# Rounding on the float32 bit pattern
# ------------------------------------------------------------------------------------------------

# (float32 bits, TF32 rounding, bfloat16 rounding), worked out by hand: TF32 drops 13 bits (half
# an ulp is 0x1000), bfloat16 16 bits (half an ulp is 0x8000); ties go to the even kept pattern.
HAND_CHECKED = [
    (0x3F800000, 0x3F800000, 0x3F800000),  # 1.0 is exact
    (0x3F801000, 0x3F800000, 0x3F800000),  # 1 + 2^-11: a TF32 tie, kept lsb 0 -> down
    (0x3F803000, 0x3F804000, 0x3F800000),  # 1 + 3*2^-11: a TF32 tie, kept lsb 1 -> up to even
    (0x3F801001, 0x3F802000, 0x3F800000),  # just above half an ulp -> up
    (0x3F800FFF, 0x3F800000, 0x3F800000),  # just below -> down
    (0x3F808000, 0x3F808000, 0x3F800000),  # a bfloat16 tie, kept lsb 0 -> down
    (0x3F818000, 0x3F818000, 0x3F820000),  # a bfloat16 tie, kept lsb 1 -> up to even
    (0x3F808001, 0x3F808000, 0x3F810000),  # above a bfloat16 half ulp -> up
    (0xBF803000, 0xBF804000, 0xBF800000),  # negative: the magnitude rounds the same way
    (0x40490FDB, 0x40490000, 0x40490000),  # pi
    (0xC0490FDB, 0xC0490000, 0xC0490000),  # -pi
    (0x7F7FFFFF, 0x7F800000, 0x7F800000),  # the largest float32 rounds up to infinity
    (0x7F800000, 0x7F800000, 0x7F800000),  # +inf
    (0xFF800000, 0xFF800000, 0xFF800000),  # -inf
    (0x00000000, 0x00000000, 0x00000000),  # +0
    (0x80000000, 0x80000000, 0x80000000),  # -0
    (0x00001000, 0x00000000, 0x00000000),  # a subnormal tie -> 0
    (0x00003000, 0x00004000, 0x00000000),  # a subnormal tie -> up to even
]


def test_rounding_matches_hand_checked_bit_patterns():
    inputs = _bits([row[0] for row in HAND_CHECKED])
    assert _as_bits(round_to_tf32(inputs)) == [hex(row[1]) for row in HAND_CHECKED]
    assert _as_bits(round_to_bfloat16(inputs)) == [hex(row[2]) for row in HAND_CHECKED]


def test_nans_pass_through_with_their_bits():
    nans = _bits([0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0xFFC00001])
    for rounding in (round_to_tf32, round_to_bfloat16):
        assert _as_bits(rounding(nans)) == _as_bits(nans)


def test_rounding_error_idempotence_and_representability(rng):
    x = (rng.standard_normal(10_000) * np.exp(rng.uniform(-20, 20, 10_000))).astype(np.float32)
    for mode, dropped in (("tf32", 13), ("bf16", 16)):
        rounded = ROUNDING[mode](x)
        assert rounded.dtype == np.float32 and rounded.shape == x.shape
        assert not (rounded.view(np.uint32) & np.uint32((1 << dropped) - 1)).any()
        relative = np.abs(rounded.astype(np.float64) - x) / np.abs(x.astype(np.float64))
        assert relative.max() <= UNIT_ROUNDOFF[mode]
        assert np.array_equal(ROUNDING[mode](rounded), rounded)
    # float64 or integer input is first made float32 (a matmul of float32 operands only asks that)
    assert round_to_tf32(np.array([1 + 2.0**-11], np.float64)).dtype == np.float32


# ------------------------------------------------------------------------------------------------
# matmul in each mode
# ------------------------------------------------------------------------------------------------


def _errors(mode, a, b):
    with matmul_precision(mode):
        product = cnp.matmul(a, b)
    assert product.dtype == np.float32
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    return np.abs(product - exact), scale


def test_matmul_error_is_within_each_modes_bound_and_above_full_precision(rng):
    a = rng.standard_normal((48, 200)).astype(np.float32)
    b = rng.standard_normal((200, 24)).astype(np.float32)
    k = a.shape[1]
    accumulation = k * 2.0**-24 / (1 - k * 2.0**-24)  # float32 sums of k terms (any order)
    largest = {}
    for mode in MODES:
        error, scale = _errors(mode, a, b)
        u = UNIT_ROUNDOFF[mode]
        bound = (2 * u + u * u + accumulation) * scale  # each product sees two rounded inputs
        assert (error <= bound).all(), mode
        largest[mode] = float((error / scale).max())
    assert largest["tf32"] > 10 * largest["highest"]
    assert largest["bf16"] > 4 * largest["tf32"]


def test_the_emulation_is_a_float32_product_of_rounded_inputs(rng):
    a = rng.standard_normal((3, 5, 7)).astype(np.float32)  # batched and 1-d operands too
    b = rng.standard_normal((7, 4)).astype(np.float32)
    v = rng.standard_normal(7).astype(np.float32)
    for mode, rounding in ROUNDING.items():
        with matmul_precision(mode):
            np.testing.assert_array_equal(cnp.matmul(a, b), np.matmul(rounding(a), rounding(b)))
            np.testing.assert_array_equal(cnp.matmul(a, v), np.matmul(rounding(a), rounding(v)))


def test_float64_and_mixed_products_stay_at_full_precision(rng):
    a64, b64 = rng.standard_normal((6, 5)), rng.standard_normal((5, 3))
    with matmul_precision("bf16"):
        np.testing.assert_array_equal(cnp.matmul(a64, b64), np.matmul(a64, b64))
        mixed = cnp.matmul(a64.astype(np.float32), b64)
        np.testing.assert_array_equal(mixed, np.matmul(a64.astype(np.float32), b64))


# ------------------------------------------------------------------------------------------------
# Derivatives follow the mode
# ------------------------------------------------------------------------------------------------


def test_gradients_are_products_of_rounded_inputs(rng):
    x = rng.standard_normal((16, 8)).astype(np.float32)
    w1 = rng.standard_normal((8, 6)).astype(np.float32)
    w2 = rng.standard_normal((6, 4)).astype(np.float32)
    c = rng.standard_normal((16, 4)).astype(np.float32)

    def loss(params):
        return cnp.sum(c * ((x @ params["w1"]) @ params["w2"]))

    r = round_to_bfloat16
    hidden = np.matmul(r(x), r(w1))
    expected_w2 = np.matmul(r(hidden.T), r(c))  # d/dw2 = hidden^T c
    expected_w1 = np.matmul(r(x.T), r(np.matmul(r(c), r(w2.T))))  # d/dw1 = x^T (c w2^T)
    with matmul_precision("bf16"):
        grads = cr.grad(loss)({"w1": w1, "w2": w2})
    np.testing.assert_allclose(grads["w2"], expected_w2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grads["w1"], expected_w1, rtol=1e-6, atol=1e-6)
    full = cr.grad(loss)({"w1": w1, "w2": w2})
    assert np.abs(full["w1"] - grads["w1"]).max() > 1e-3 * np.abs(full["w1"]).max()


def test_jvp_and_tensor_operators_follow_the_mode(rng):
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    t = rng.standard_normal((7, 3)).astype(np.float32)
    r = round_to_tf32
    with matmul_precision("tf32"):
        out, tangent = cr.jvp(lambda w: x @ w, (w,), (t,))
        product = (cr.Tensor(x) @ cr.Tensor(w, requires_grad=True)).data  # the operator's path
    np.testing.assert_array_equal(out, np.matmul(r(x), r(w)))
    np.testing.assert_array_equal(tangent, np.matmul(r(x), r(t)))
    np.testing.assert_array_equal(product, np.matmul(r(x), r(w)))


def test_a_captured_step_replays_the_rounding(rng):
    w = rng.standard_normal((8, 3)).astype(np.float32)

    def step(w, x):
        loss, g = cr.value_and_grad(lambda w: cnp.sum(cnp.tanh(x @ w) ** 2))(w)
        return w - 0.1 * g, loss

    with matmul_precision("tf32"):
        fast = capture(step, (w, rng.standard_normal((4, 8)).astype(np.float32)))
        for _ in range(3):
            x = rng.standard_normal((4, 8)).astype(np.float32)
            replayed, eager = fast(w, x), step(w, x)
            np.testing.assert_array_equal(replayed[0], eager[0])
    assert fast.stats["replays"] == 3 and fast.stats["fallbacks"] == 0


def test_the_simulated_cuda_device_gets_the_emulation(rng):
    from chainrule.backend.device import device_of, to_device, to_numpy
    from chainrule.backend.simulated_cuda import simulate_cuda

    a = rng.standard_normal((6, 5)).astype(np.float32)
    b = rng.standard_normal((5, 4)).astype(np.float32)
    with simulate_cuda(), matmul_precision("bf16"):
        product = cnp.matmul(to_device(a, "cuda"), to_device(b, "cuda"))
        assert device_of(product) == "cuda"
        np.testing.assert_array_equal(
            to_numpy(product), np.matmul(round_to_bfloat16(a), round_to_bfloat16(b))
        )


# ------------------------------------------------------------------------------------------------
# Switching, nesting, restoring
# ------------------------------------------------------------------------------------------------


def test_modes_nest_and_are_restored_on_exceptions():
    with matmul_precision("tf32"):
        assert get_matmul_precision() == "tf32" and forward_of(TABLE["matmul"]) is not np.matmul
        assert state.hooked  # the operators' numpy.matmul fast path stands aside
        with pytest.raises(RuntimeError, match="inside"):
            with matmul_precision("bf16"):
                assert get_matmul_precision() == "bf16"
                raise RuntimeError("inside")
        assert get_matmul_precision() == "tf32"
        with matmul_precision("highest"):
            assert forward_of(TABLE["matmul"]) is np.matmul and not state.hooked
        assert get_matmul_precision() == "tf32"
    assert forward_of(TABLE["matmul"]) is np.matmul


def test_calling_it_alone_switches_until_switched_back():
    try:
        matmul_precision("bf16")
        assert get_matmul_precision() == "bf16"
        matmul_precision("tf32")
        assert forward_of(TABLE["matmul"]).__name__ == "matmul_tf32"
    finally:
        matmul_precision("highest")
    assert forward_of(TABLE["matmul"]) is np.matmul and not state.hooked


def test_unknown_modes_are_refused():
    with pytest.raises(
        ValueError, match=r"mode must be one of \('highest', 'tf32', 'bf16'\), got 'fp16'"
    ):
        matmul_precision("fp16")
