"""chainrule as a gradbench tool: the protocol loop and every eval, replayed on small recorded
inputs (tests/fixtures/gradbench/*.json, in the evals' own input format) through the adapter's
message handling, and checked against closed forms or finite differences, never against
outputs recorded from chainrule itself. No gradbench checkout is needed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import chainrule as cr
import chainrule.transforms.numerical as numerical
from chainrule.apps.gradbench import ba, descent, ht, lstm, particle, protocol, saddle
from chainrule.apps.gradbench.protocol import handle, run_repeatedly
from chainrule.apps.gradbench.registry import MODULES

DATA = Path(__file__).parent.parent / "fixtures" / "gradbench"
ROOT = Path(__file__).resolve().parents[2]


def recorded(name):
    """The recorded cases of one eval: a list of (function, input)."""
    cases = json.loads((DATA / f"{name}.json").read_text())
    return [(function, case["input"]) for case in cases for function in case["functions"]]


def evaluate(module, function, raw_input):
    """The adapter's output for one evaluate message (asserting the response is well formed)."""
    response = handle(
        {"id": 7, "kind": "evaluate", "module": module, "function": function, "input": raw_input}
    )
    assert response["id"] == 7
    assert response["success"], response.get("error")
    names = [timing["name"] for timing in response["timings"]]
    min_runs = raw_input.get("min_runs", 1) if isinstance(raw_input, dict) else 1
    assert names[0] == "prepare" and names.count("evaluate") >= min_runs
    json.dumps(response)  # the response must be plain JSON
    return response["output"]


def fd_jacobian(fun, x, step=1e-6):
    """Central-difference Jacobian of vector-valued ``fun`` (rows: outputs, columns: inputs)."""
    x = np.asarray(x, dtype=np.float64)
    columns = []
    for i in range(x.size):
        up, down = x.copy(), x.copy()
        up.flat[i] += step
        down.flat[i] -= step
        columns.append((np.ravel(fun(up)) - np.ravel(fun(down))) / (2 * step))
    return np.stack(columns, axis=1)


# ------------------------------------------------------------------------------------------------
# The protocol
# ------------------------------------------------------------------------------------------------


def test_protocol_acknowledges_every_kind_and_defines_only_known_modules():
    assert handle({"id": 0, "kind": "start", "eval": "llsq"}) == {"id": 0, "tool": "chainrule"}
    assert handle({"id": 1, "kind": "define", "module": "llsq"}) == {"id": 1, "success": True}
    unknown = handle({"id": 2, "kind": "define", "module": "nosuch"})
    assert unknown["success"] is False and "nosuch" in unknown["error"]
    assert handle({"id": 3, "kind": "analysis", "of": 1, "valid": True}) == {"id": 3}
    assert handle({"id": 4, "kind": "something-new"}) == {"id": 4}
    assert set(MODULES) == {
        "hello",
        "llsq",
        "lse",
        "det",
        "ode",
        "gmm",
        "kmeans",
        "saddle",
        "particle",
        "lstm",
        "ba",
        "ht",
    }


def test_evaluate_failures_are_reported_not_raised():
    bad_function = handle(
        {"id": 5, "kind": "evaluate", "module": "lse", "function": "hessian", "input": {"x": [1.0]}}
    )
    assert bad_function["success"] is False and "hessian" in bad_function["error"]
    bad_input = handle(
        {
            "id": 6,
            "kind": "evaluate",
            "module": "det",
            "function": "primal",
            "input": {"A": [1.0, 2.0], "ell": 2},
        }
    )
    assert bad_input["success"] is False and "ell*ell" in bad_input["error"]


def test_runs_honour_min_runs_and_min_seconds():
    function = MODULES["lse"]["primal"]
    _, timings = run_repeatedly(function, {"x": [0.0, 1.0], "min_runs": 5, "min_seconds": 0})
    assert [t["name"] for t in timings] == ["prepare"] + ["evaluate"] * 5
    _, timings = run_repeatedly(function, {"x": [0.0, 1.0], "min_runs": 1, "min_seconds": 0.05})
    evaluations = [t["nanoseconds"] for t in timings if t["name"] == "evaluate"]
    assert sum(evaluations) >= 0.05e9 and len(evaluations) > 1
    assert all(isinstance(t["nanoseconds"], int) and t["nanoseconds"] >= 0 for t in timings)


@pytest.mark.parametrize("encoder", ["orjson", "json"])
def test_messages_read_and_responses_written_alike_by_either_encoder(encoder, monkeypatch):
    """With ``orjson`` (the gradbench extra) or without it, every value reads and writes as the
    ``json`` module has it: floats to the last bit, NaN and infinities, big integers, errors."""
    if encoder == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(protocol, "orjson", None)
    rng = np.random.default_rng(0)
    numbers = (rng.standard_normal(1000) * 10.0 ** rng.integers(-300, 300, 1000)).tolist()
    numbers += [5e-324, 1.7976931348623157e308, -0.0, 0.1, 1e-6, 123456789.0]
    line = json.dumps({"id": 7, "kind": "evaluate", "input": {"x": numbers, "n": 2**70}})
    assert protocol.read_message(line) == json.loads(line)
    read = protocol.read_message(line)["input"]["x"]
    assert np.array_equal(np.array(read).view(np.int64), np.array(numbers).view(np.int64))
    assert math.isnan(protocol.read_message('{"x": NaN}')["x"])  # json's extension
    with pytest.raises(json.JSONDecodeError):
        protocol.read_message('{"id": 1, "kind"')
    for response in [
        {"id": 1, "success": True, "output": numbers, "timings": [{"name": "evaluate"}]},
        {"id": 2, "output": [1.0, float("nan"), float("inf"), -float("inf")]},
        {"id": 3, "output": 2**70, "error": None},
        {"id": 4, "output": np.float64(0.5).item(), "tool": "chainrule"},
    ]:
        text = protocol.write_response(response)
        assert "\n" not in text
        np.testing.assert_equal(json.loads(text), json.loads(json.dumps(response)))  # NaN too
    written = protocol.write_response({"id": 2, "output": [float("nan"), float("inf")]})
    assert written == json.dumps({"id": 2, "output": [float("nan"), float("inf")]})  # not null


def test_end_to_end_session_over_stdin_and_stdout():
    """``python -m chainrule.apps.gradbench`` as an eval sees it: one JSON line in, one out."""
    messages = [
        {"id": 0, "kind": "start", "eval": "hello"},
        {"id": 1, "kind": "define", "module": "hello"},
        {"id": 2, "kind": "evaluate", "module": "hello", "function": "square", "input": 3.0},
        {"id": 3, "kind": "analysis", "of": 2, "valid": True},
        {
            "id": 4,
            "kind": "evaluate",
            "module": "llsq",
            "function": "gradient",
            "input": {"x": [0.5, -1.0], "n": 3, "min_runs": 3, "min_seconds": 0},
        },
        {"id": 5, "kind": "define", "module": "nosuch"},
    ]
    stdin = "".join(json.dumps(m) + "\n" for m in messages)
    env_path = str(ROOT / "src")
    result = subprocess.run(
        [sys.executable, "-m", "chainrule.apps.gradbench"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    responses = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in responses] == [0, 1, 2, 3, 4, 5]
    assert responses[2]["output"] == 9.0 and responses[2]["success"]
    # llsq with n = 3: t = (-1, 0, 1), s = (-1, 0, 1); gradient = -V^T (s - V x), V = [1, t]
    t = np.array([-1.0, 0.0, 1.0])
    vander = np.stack([np.ones(3), t], axis=1)
    expected = -vander.T @ (np.sign(t) - vander @ np.array([0.5, -1.0]))
    assert np.allclose(responses[4]["output"], expected)
    assert sum(timing["name"] == "evaluate" for timing in responses[4]["timings"]) == 3
    assert responses[5]["success"] is False


# ------------------------------------------------------------------------------------------------
# Evals with closed forms
# ------------------------------------------------------------------------------------------------


def test_hello():
    for function, x in recorded("hello"):
        expected = x * x if function == "square" else 2 * x
        assert evaluate("hello", function, x) == pytest.approx(expected)


def _vandermonde(raw):
    n, m = raw["n"], len(raw["x"])
    t = -1 + np.arange(n) * 2 / (n - 1)
    return t[:, None] ** np.arange(m)[None, :], np.sign(t)


def test_llsq_against_the_normal_equations():
    for function, raw in recorded("llsq"):
        vander, s = _vandermonde(raw)
        residual = s - vander @ np.array(raw["x"])
        expected = 0.5 * residual @ residual if function == "primal" else -vander.T @ residual
        assert np.allclose(evaluate("llsq", function, raw), expected, rtol=1e-10, atol=1e-12)


def test_lse_against_softmax():
    for function, raw in recorded("lse"):
        x = np.array(raw["x"])
        shifted = np.exp(x - x.max())
        expected = (
            x.max() + math.log(shifted.sum()) if function == "primal" else shifted / shifted.sum()
        )
        assert np.allclose(evaluate("lse", function, raw), expected, rtol=1e-12)


def test_det_against_lu_and_the_adjugate():
    for function, raw in recorded("det"):
        ell = raw["ell"]
        matrix = np.array(raw["A"]).reshape(ell, ell)
        det = np.linalg.det(matrix)
        expected = det if function == "primal" else (det * np.linalg.inv(matrix).T).ravel()
        assert np.allclose(evaluate("det", function, raw), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("function, raw", recorded("ode"))
def test_ode_against_the_exact_polynomial_solution_and_finite_differences(function, raw):
    """For n ≤ 4 the solution is a polynomial of degree ≤ 4 in t, which Runge-Kutta 4 integrates
    exactly: y_i(2) = x_0 ⋯ x_i · 2^(i+1)/(i+1)!. Larger n: the gradient against differences."""
    x, steps = np.array(raw["x"]), raw["s"]
    output = np.array(evaluate("ode", function, raw))
    n = x.size
    if n <= 4:
        exact = (
            np.cumprod(x)
            * 2.0 ** np.arange(1, n + 1)
            / np.array([math.factorial(i) for i in range(1, n + 1)])
        )
        if function == "primal":
            assert np.allclose(output, exact, rtol=1e-12)
        else:
            assert np.allclose(output, exact[-1] / x, rtol=1e-10)
    elif function == "gradient":
        primal = MODULES["ode"]["primal"].compute
        expected = numerical.numerical_grad(lambda v: primal((v, steps))[-1], x)
        assert np.allclose(output, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("function, raw", recorded("kmeans"))
def test_kmeans_cost_by_brute_force_and_direction_as_the_centroid_shift(function, raw):
    """The Newton direction of the k-means cost is the centroid minus the mean of its points."""
    points, centroids = np.array(raw["points"]), np.array(raw["centroids"])
    distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    output = np.array(evaluate("kmeans", function, raw))
    if function == "cost":
        assert output == pytest.approx(distances.min(axis=1).sum(), rel=1e-12)
    else:
        nearest = distances.argmin(axis=1)
        means = np.stack([points[nearest == j].mean(axis=0) for j in range(len(centroids))])
        assert np.allclose(output, centroids - means, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Evals checked by finite differences
# ------------------------------------------------------------------------------------------------


def _gmm_log_posterior_by_loops(raw):
    """The GMM objective written out point by point, component by component (ADBench's formula)."""
    d, k, m, gamma = raw["d"], raw["k"], raw["m"], raw["gamma"]
    alpha, x = np.array(raw["alpha"]), np.array(raw["x"])
    total = -len(x) * d * 0.5 * math.log(2 * math.pi)
    factors = []
    for j in range(k):
        q, l = np.array(raw["q"][j]), np.array(raw["l"][j])
        factor = np.diag(np.exp(q))
        position = 0
        for col in range(d):
            for row in range(col + 1, d):
                factor[row, col] = l[position]
                position += 1
        factors.append(factor)
    for point in x:
        terms = [
            alpha[j] + sum(raw["q"][j]) - 0.5 * np.sum((factors[j] @ (point - raw["mu"][j])) ** 2)
            for j in range(k)
        ]
        total += np.logaddexp.reduce(terms)
    total -= len(x) * np.logaddexp.reduce(alpha)
    n_wishart = d + m + 1
    log_gamma = 0.25 * d * (d - 1) * math.log(math.pi) + sum(
        math.lgamma(0.5 * n_wishart + 0.5 * (1 - j)) for j in range(1, d + 1)
    )
    constant = n_wishart * d * (math.log(gamma) - 0.5 * math.log(2)) - log_gamma
    for j in range(k):
        frobenius = np.sum(np.exp(np.array(raw["q"][j])) ** 2) + np.sum(np.array(raw["l"][j]) ** 2)
        total += -(0.5 * gamma * gamma * frobenius - m * sum(raw["q"][j])) + constant
    return total


@pytest.mark.parametrize("function, raw", recorded("gmm"))
def test_gmm_objective_by_loops_and_gradient_by_differences(function, raw):
    output = evaluate("gmm", function, raw)
    if function == "objective":
        assert output == pytest.approx(_gmm_log_posterior_by_loops(raw), rel=1e-10)
        return
    params = {key: np.array(raw[key], dtype=float) for key in ("alpha", "mu", "q", "l")}
    expected = numerical.numerical_grad(lambda p: _gmm_log_posterior_by_loops({**raw, **p}), params)
    for key in params:
        assert np.allclose(output[key], expected[key], rtol=1e-5, atol=1e-6), key


def _lstm_loss_by_loops(main, extra, state, sequence):
    """The LSTM loss time step by time step, layer by layer (ADBench's formula)."""
    layers, b = main.shape[0] // 2, sequence.shape[1]
    hidden, cell = state[0::2].copy(), state[1::2].copy()
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    total = 0.0
    for t in range(len(sequence) - 1):
        layer_input = sequence[t] * extra[0]
        for i in range(layers):
            w, bias = main[2 * i].reshape(4, b), main[2 * i + 1].reshape(4, b)
            forget = sigmoid(layer_input * w[0] + bias[0])
            ingate = sigmoid(hidden[i] * w[1] + bias[1])
            outgate = sigmoid(layer_input * w[2] + bias[2])
            change = np.tanh(hidden[i] * w[3] + bias[3])
            cell[i] = cell[i] * forget + ingate * change
            hidden[i] = outgate * np.tanh(cell[i])
            layer_input = hidden[i]
        prediction = layer_input * extra[1] + extra[2]
        total += np.sum(sequence[t + 1] * (prediction - np.log(np.sum(np.exp(prediction)) + 2)))
    return -total / ((len(sequence) - 1) * b)


@pytest.mark.parametrize("function, raw", recorded("lstm"))
def test_lstm_wavefront_against_the_step_by_step_loss_and_differences(function, raw):
    arrays = [np.array(raw[key]) for key in ("main_params", "extra_params", "state", "sequence")]
    output = evaluate("lstm", function, raw)
    if function == "objective":
        assert output == pytest.approx(_lstm_loss_by_loops(*arrays), rel=1e-12)
        return
    main, extra, state, sequence = arrays
    flat = np.concatenate([main.ravel(), extra.ravel()])
    split = main.size

    def loss_of_flat(v):
        return _lstm_loss_by_loops(
            v[:split].reshape(main.shape), v[split:].reshape(extra.shape), state, sequence
        )

    expected = numerical.numerical_grad(loss_of_flat, flat)
    assert np.allclose(output, expected, rtol=1e-5, atol=1e-8)
    # the wavefront also on more layers than time steps (start-up and wind-down overlap)
    rng = np.random.default_rng(3)
    main, extra, state = rng.random((8, 12)), rng.random((3, 3)), rng.random((8, 3))
    sequence = rng.integers(0, 2, (3, 3)).astype(float)
    assert float(lstm.loss(main, extra, state, sequence)) == pytest.approx(
        _lstm_loss_by_loops(main, extra, state, sequence)
    )


@pytest.mark.parametrize("function, raw", recorded("ba"))
def test_ba_residuals_and_every_jacobian_entry_against_differences(function, raw):
    cameras, points, weights, features, camera_of, point_of = ba._prepare(raw)
    n, m, p = len(cameras), len(points), len(weights)
    output = evaluate("ba", function, raw)

    def all_residuals(theta):
        cams = theta[: 11 * n].reshape(n, 11)
        pts = theta[11 * n : 11 * n + 3 * m].reshape(m, 3)
        ws = theta[11 * n + 3 * m :]
        reprojection, weight_error = ba.residuals(cams, pts, ws, features, camera_of, point_of)
        return np.concatenate([np.ravel(reprojection), weight_error])

    theta = np.concatenate([cameras.ravel(), points.ravel(), weights])
    if function == "objective":
        values = all_residuals(theta)
        # the same camera, point and feature everywhere: every pair and weight error repeats
        assert output["reproj_error"]["repeated"] == p and output["w_err"]["repeated"] == p
        assert np.allclose(values[: 2 * p].reshape(p, 2), output["reproj_error"]["elements"])
        assert output["w_err"]["element"] == pytest.approx(1 - raw["w"] ** 2)
        return
    expected = fd_jacobian(all_residuals, theta, step=1e-7)
    rows, cols, vals = ba.sparse_jacobian(cameras, points, weights, features, camera_of, point_of)
    assert len(rows) == 3 * p + 1 and len(cols) == len(vals) == 31 * p
    dense = np.zeros_like(expected)
    for row in range(3 * p):
        dense[row, cols[rows[row] : rows[row + 1]]] = vals[rows[row] : rows[row + 1]]
    scale = np.maximum(1.0, np.abs(expected))
    assert np.all(np.abs(dense - expected) / scale < 1e-5)  # every entry, zeros included
    assert output["rows"] == [int(r) for r in list(rows[:30]) + [rows[-1]]]
    assert output["cols"] == [int(c) for c in list(cols[:30]) + [cols[-1]]]
    assert np.allclose(output["vals"], list(vals[:30]) + [vals[-1]])


def test_ba_rotation_by_zero_angle_takes_the_small_angle_branch():
    rotation = np.array([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3]])
    point = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    rotated = np.asarray(ba._rotate(rotation, point))
    assert np.allclose(rotated[0], point[0])
    angle = np.linalg.norm(rotation[1])
    axis = rotation[1] / angle
    rodrigues = (
        point[1] * np.cos(angle)
        + np.cross(axis, point[1]) * np.sin(angle)
        + axis * axis.dot(point[1]) * (1 - np.cos(angle))
    )
    assert np.allclose(rotated[1], rodrigues)


def _ht_inputs():
    """The recorded complicated input, and a simple input on the same model (each point matched
    to a vertex instead of a triangle)."""
    (case,) = json.loads((DATA / "ht.json").read_text())
    raw = case["input"]
    simple = json.loads(json.dumps(raw))
    del simple["us"]
    vertex_count = len(simple["data"]["model"]["base_positions"])
    simple["data"]["correspondences"] = [
        i * 3 % vertex_count for i in range(len(simple["data"]["points"]))
    ]
    return raw, simple


@pytest.mark.parametrize("variant", ["complicated", "simple"])
def test_ht_jacobian_against_differences(variant):
    complicated, simple = _ht_inputs()
    raw = complicated if variant == "complicated" else simple
    theta, us, data = ht._prepare(raw)
    output = np.array(evaluate("ht", "jacobian", raw))
    residual = np.array(evaluate("ht", "objective", raw))
    assert residual.shape == (3 * len(data["points"]),)
    assert np.allclose(residual, np.ravel(np.asarray(ht.residuals(theta, us, data))))
    by_theta = fd_jacobian(lambda t: ht.residuals(t, us, data), theta)
    if us is None:
        assert output.shape == (residual.size, 26)
        assert np.allclose(output, by_theta, rtol=1e-5, atol=1e-6)
        return
    assert output.shape == (residual.size, 28)
    assert np.allclose(output[:, 2:], by_theta, rtol=1e-5, atol=1e-6)
    # the two compressed columns: each residual triple moves with its own u pair only
    by_us = fd_jacobian(lambda u: ht.residuals(theta, u.reshape(us.shape), data), us)  # (3p, 2p)
    for column in range(2):
        assert np.allclose(output[:, column], by_us[:, column::2].sum(axis=1), rtol=1e-5, atol=1e-6)
        blocks = by_us[:, column::2].reshape(len(us), 3, len(us))
        off_diagonal = blocks * (1 - np.eye(len(us)))[:, None, :]
        assert np.all(off_diagonal == 0)  # the structure the compression relies on


def test_ht_rest_pose_is_the_base_mesh_rotated_and_moved():
    """With every joint angle zero the bones sit in their base pose, so skinning returns the base
    mesh; the global angle-axis rotation and translation then act on it as a rigid motion."""
    complicated, _ = _ht_inputs()
    theta, us, data = ht._prepare(complicated)
    angle = 0.3
    pose = np.zeros(26)
    pose[0:3] = [0.0, 0.0, angle]  # about the z axis
    pose[3:6] = [1.0, -2.0, 0.5]
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    base = data["model"]["base_positions"][:, :3]
    expected = base @ rotation.T + pose[3:6]
    assert np.allclose(np.asarray(ht.vertex_positions(pose, data["model"])), expected, atol=1e-4)


def test_ht_translation_moves_every_model_point():
    complicated, simple = _ht_inputs()
    for raw in (complicated, simple):
        theta, us, data = ht._prepare(raw)
        shifted = theta.copy()
        shifted[3:6] += [0.5, -1.0, 2.0]
        change = np.asarray(ht.residuals(shifted, us, data)) - np.asarray(
            ht.residuals(theta, us, data)
        )
        assert np.allclose(change, -np.array([0.5, -1.0, 2.0]))


# ------------------------------------------------------------------------------------------------
# Nested differentiation: saddle and particle
# ------------------------------------------------------------------------------------------------


def test_descent_norm_reads_the_value_under_any_tracer():
    """The solver's stopping test: the Euclidean norm of the value, derivatives ignored, for
    plain vectors of any length and for traced ones (as the inner descents of saddle see them)."""

    def norms_under_tracers(vector):
        norms = []

        def record(v):
            norms.append(descent._norm(v * 1.0))
            return cr.numpy.sum(v)

        cr.jvp(record, (vector,), (np.ones_like(vector),))
        cr.grad(record)(vector)
        return norms

    rng = np.random.default_rng(5)
    for size in (1, 2, 5):
        vector = rng.standard_normal(size)
        expected = pytest.approx(np.linalg.norm(vector), rel=1e-15)
        assert descent._norm(vector) == expected
        assert norms_under_tracers(vector) == [expected, expected]
    assert descent._norm(np.array([3.0, 4.0])) == 5.0
    assert descent._norm(np.zeros(2, dtype=np.float32)) == 0.0


@pytest.mark.parametrize("outer", ["f", "r"])
@pytest.mark.parametrize("inner", ["f", "r"])
def test_saddle_outer_gradient_through_the_inner_descent(outer, inner):
    """max_y f(x, y) = |x|² − |y*|² with y* independent of x, so its gradient in x is 2x, and it
    must come out of differentiating through the whole inner descent (nested AD)."""
    start = np.array([1.0, 1.0])
    x = np.array([0.3, -0.7])

    def inner_maximum(first):
        return descent.maximum(lambda second: saddle.saddle_function(first, second), start, inner)

    gradient = np.asarray(descent.GRADIENTS[outer](inner_maximum)(x))
    assert np.allclose(gradient, 2 * x, rtol=1e-10)


@pytest.mark.parametrize("variant", ["rr", "ff"])
def test_saddle_replay_finds_the_saddle_point(variant):
    """The saddle point is (0, 0), (0, 0); the eval accepts 1e-4. A full run costs seconds, so
    two variants (all reverse, all forward) replay the recorded input here; the nested gradients
    of all four are checked above, and gradbench validates all four."""
    raw = dict(recorded("saddle"))[variant]
    assert np.all(np.abs(evaluate("saddle", variant, raw)) < 1e-4)


@pytest.mark.parametrize("variant", ["ff", "fr", "rf", "rr"])
def test_particle_cost_gradient_against_differences(variant):
    """The outer derivative of x₀(t_f)² with respect to w, taken through every Euler step and
    every inner field gradient, matches central differences of the same cost."""
    outer, inner = variant
    for w in (0.0, 0.2):
        nested = float(
            np.asarray(
                descent.GRADIENTS[outer](lambda v: particle.crossing_cost(v, inner))(np.array([w]))
            )[0]
        )
        by_differences = float(
            numerical.numerical_grad(lambda v: particle.crossing_cost(v, inner), np.array([w]))[0]
        )
        assert nested == pytest.approx(by_differences, rel=1e-5)


def test_particle_field_gradient_is_the_coulomb_force():
    """The inner gradient in both modes equals the closed form −Σ (x − c)/|x − c|³."""
    position = np.array([1.0, 7.0])
    charges = np.array([[10.0, 9.5], [10.0, 0.0]])
    expected = -sum((position - c) / np.linalg.norm(position - c) ** 3 for c in charges)
    for mode in ("f", "r"):
        field = descent.GRADIENTS[mode](lambda x: particle.potential(x, charges))
        assert np.allclose(field(position), expected, rtol=1e-12)


@pytest.mark.parametrize("outer", ["f", "r"])
@pytest.mark.parametrize("inner", ["f", "r"])
def test_a_staged_inner_descent_is_the_eager_one_to_the_bit(outer, inner):
    """saddle's inner descent replays a jit-staged value-and-gradient; the outer derivative
    through it, which traces the descent's extra argument, is the eager one bit for bit."""
    start = np.array([1.0, 1.0])
    x = np.array([0.3, -0.7])

    def inner_maximum(first, staged):
        found = descent.descend(
            saddle.negated_saddle_function, start, inner, (first,), staged=staged
        )
        return -found[1]

    eager = descent.VALUE_AND_GRADIENTS[outer](lambda first: inner_maximum(first, False))(x)
    staged = descent.VALUE_AND_GRADIENTS[outer](lambda first: inner_maximum(first, True))(x)
    for a, b in zip(staged, eager, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert descent.staged_value_and_gradient(saddle.negated_saddle_function, inner).trace_count


def test_particle_staged_field_gradients_equal_the_eager_ones_to_the_bit():
    position = np.array([1.0, 7.0])
    charges = np.array([[10.0, 9.5], [10.0, 0.0]])
    for mode in ("f", "r"):
        eager = descent.GRADIENTS[mode](particle.potential)
        for shift in (0.0, 0.5):  # staged once, then replayed on new values
            np.testing.assert_array_equal(
                particle.FIELD_GRADIENTS[mode](position + shift, charges),
                eager(position + shift, charges),
            )
