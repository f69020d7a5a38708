"""`chainrule compare`: every (method, scheme) pair under one budget, and the cost of a gradient
as P grows."""

import json

import numpy as np
import pytest

from chainrule.apps.cli import main
from chainrule.data import Dataset
from chainrule.data.datasets import Splits
from chainrule.training.compare import (
    GradientCost,
    compare_training,
    fit_slopes,
    format_runs,
    gradient_cost,
    mlp_for,
    valid_pair,
)


def small_splits():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((96, 6))
    labels = (features[:, 0] + features[:, 1] > 0).astype(int)
    return Splits(
        train=Dataset(features[:64], labels[:64]),
        val=Dataset(features[64:80], labels[64:80]),
        test=Dataset(features[80:], labels[80:]),
    )


def test_every_pair_gets_the_same_pass_budget_and_a_curve():
    runs = compare_training(
        small_splits(),
        hidden=(5,),
        methods=("backprop", "spsa", "finite_differences"),
        schemes=("simultaneous", "layerwise", "locoprop-s", "derivative_free"),
        budget_seconds=None,
        budget_passes=200,
        batch_size=16,
    )
    ran = [run for run in runs if not run.skipped]
    skipped = {(run.method, run.scheme) for run in runs if run.skipped}
    assert ("spsa", "locoprop-s") in skipped and ("backprop", "derivative_free") in skipped
    assert ("finite_differences", "locoprop-s") in skipped
    assert len(ran) == 3 * 4 - len(skipped)
    for run in ran:
        # the budget is reached, and overshot by at most the last step's passes
        assert 200 <= run.passes < 200 + 2 * 47 * 2 + 2, (run.method, run.scheme, run.passes)
        assert run.curve[0][1] == 0 and run.curve[-1][1] == run.passes
        assert run.flops and run.flops > 0 and run.peak_bytes is not None
        assert run.final_loss is not None and 0.0 <= run.test_accuracy <= 1.0
    loco = next(r for r in ran if r.scheme == "locoprop-s")
    assert loco.local_passes == loco.steps * 5 * 2  # T = 5 local steps for each of 2 layers
    assert all(r.local_passes == 0 for r in ran if r is not loco)
    exact = next(r for r in ran if (r.method, r.scheme) == ("backprop", "simultaneous"))
    assert exact.steps == 100  # backprop: one forward and one backward pass per step
    assert exact.final_loss < exact.curve[0][2]
    table = format_runs(runs)
    assert "backprop" in table and "not run (LocoProp takes its targets" in table


def test_valid_pairs():
    assert valid_pair("backprop", "locoprop-m") is None
    assert valid_pair("mezo", "derivative_free") is None
    assert "backward pass" in valid_pair("mezo", "locoprop-s")
    assert valid_pair("backprop", "derivative_free") is not None


def test_mlp_for_hits_the_parameter_count():
    for target in (100, 1000, 10000):
        width, count = mlp_for(target)
        assert count == 64 * width + width + width * width + width + width * 10 + 10
        assert abs(count - target) / target < 0.15


def test_gradient_cost_measures_every_method_at_every_size_and_fits_their_slopes():
    # Whether finite differences' slope really is near 1 and backprop's near 0 depends on the
    # machine's timings: benchmarks/bench_gradient_cost.py prints those. Here: what was measured
    # and that the slopes are the log-log fit of exactly those measurements.
    points, slopes = gradient_cost(
        (30, 300), methods=("backprop", "finite_differences"), time_cap=5.0, repeats=1
    )
    assert sorted((p.method, p.params) for p in points) == sorted(
        (method, count)
        for method in ("backprop", "finite_differences")
        for count in (mlp_for(30)[1], mlp_for(300)[1])
    )
    assert all(not p.extrapolated and p.seconds > 0 and p.loss_seconds > 0 for p in points)
    for method in ("backprop", "finite_differences"):
        mine = sorted((p for p in points if p.method == method), key=lambda p: p.params)
        (small, large) = mine
        expected = np.log(
            (large.seconds / large.loss_seconds) / (small.seconds / small.loss_seconds)
        ) / np.log(large.params / small.params)
        assert slopes[method] == pytest.approx(expected)


def test_extrapolated_points_are_marked_and_left_out_of_the_fit():
    points, slopes = gradient_cost(
        (30, 3000), methods=("finite_differences",), time_cap=0.01, repeats=1
    )
    assert all(p.extrapolated for p in points if p.params > 1000)
    assert slopes["finite_differences"] is None  # fewer than two measured points
    manual = [GradientCost("m", 10, 1.0, 1.0), GradientCost("m", 1000, 100.0, 1.0)]
    assert fit_slopes(manual)["m"] == pytest.approx(1.0)


def test_cli_compare_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--data",
            "moons",
            "--hidden",
            "4",
            "--methods",
            "backprop,mezo",
            "--schemes",
            "simultaneous,cyclic",
            "--budget-passes",
            "60",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "mezo" in text and "cyclic" in text
    saved = json.loads((out / "compare.json").read_text())
    assert len(saved["runs"]) == 4
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "passes" in (out / "compare.txt").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "nope"], "unknown method"),
        (["--schemes", "sideways"], "unknown scheme"),
        (["--budget-seconds", "1", "--budget-passes", "5"], "not both"),
        (["--lr", "spsa"], "METHOD=LR"),
        (["--gradient-cost", "--params", "1e2,x"], "--params"),
    ],
)
def test_cli_compare_rejects_bad_options(argv, message, capsys, tmp_path):
    assert main(["compare", "--data", "moons", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
