"""The lab: ``chainrule lab all --quick`` runs the five experiments and writes the report.

One quick run of the whole lab is shared by every test here and by the browser test
(:func:`quick_lab`, cached for the session); the tests check what the run produced: the files,
the JSON, the HTML sections, and the measured figures that are exact by construction (counted
FLOPs and passes), which must match their theory even in the quick run.
"""

from __future__ import annotations

import argparse
import base64
import json
import re

import pytest

from chainrule.apps.lab import EXPERIMENTS
from chainrule.apps.lab.cli import add_lab_parser, run_lab
from chainrule.apps.lab.common import (
    Check,
    Table,
    drawn_figure,
    jsonable,
    loglog_slope,
    render_png,
)
from lab_fixtures import quick_lab  # the session's one quick lab run, shared


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return quick_lab(tmp_path_factory)


@pytest.fixture(scope="module")
def results(lab):
    out = lab[0]
    return json.loads((out / "results.json").read_text())


def experiment(results, name):
    return next(e for e in results["experiments"] if e["name"] == name)


def check(results, name, prefix):
    entry = experiment(results, name)
    return next(c for c in entry["checks"] if c["name"].startswith(prefix))


def test_quick_lab_runs_all_five(lab, results):
    # How long it takes (the goal: under a minute) is benchmarks/bench_lab.py's to print.
    out, status, _, _ = lab
    assert status == 0
    assert [e["name"] for e in results["experiments"]] == list(EXPERIMENTS)
    for entry in results["experiments"]:
        assert entry["quick"] is True
        assert entry["answer"] and entry["question"].endswith("?")
        assert entry["checks"], f"{entry['name']} has no measured figure next to a theory"
        assert entry["command"].startswith(f"chainrule lab {entry['name']}")


def test_every_check_prints_measured_next_to_theory(lab, results):
    printed = lab[3]
    for entry in results["experiments"]:
        for item in entry["checks"]:
            assert set(item) >= {"name", "measured", "theory", "matches"}
            assert f"{item['name']}: measured" in printed
            if not item["matches"]:  # a mismatch is explained, in the JSON and in the report
                assert item["why_not"] or any(item["name"] in note for note in entry["notes"])


def test_report_files_are_self_contained(lab, results):
    out = lab[0]
    html = (out / "report.html").read_text()
    for name in EXPERIMENTS:
        assert f'<section class="experiment" id="{name}">' in html
    images = re.findall(
        r'<img alt="[^"]*" src="data:image/(png|svg\+xml);base64,([A-Za-z0-9+/=]+)"', html
    )
    assert len(images) >= 5
    for kind, data in images:
        raw = base64.b64decode(data)
        assert raw.startswith(b"\x89PNG") if kind == "png" else b"<svg" in raw
    assert 'src="http' not in html and 'href="http' not in html  # nothing fetched from outside
    assert "Machine and versions" in html and results["machine"]["numpy"] in html
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert {"cost.png", "chain-order.png", "fanout-passes.png"} <= set(pngs)
    for entry in results["experiments"]:
        for figure in entry["figures"]:
            assert any(out.glob(f"{figure}.*")), f"picture {figure} not written"


def test_cost_counted_flops_follow_the_theory(results):
    assert check(results, "cost", "slope of finite differences' FLOPs")["matches"]
    assert check(results, "cost", "slope of forward mode's FLOPs")["matches"]
    assert check(results, "cost", "slope of reverse mode's FLOPs")["matches"]
    ratio = check(results, "cost", "reverse mode's FLOPs / loss FLOPs")
    assert ratio["matches"] and 2.0 < ratio["measured"] < 4.0
    rows = experiment(results, "cost")["data"]["rows"]
    assert [round(r["weights"], -1) for r in rows][:2] == [100, 980]
    assert all(r["relative_error_vs_reverse"]["forward mode"] < 1e-10 for r in rows)
    assert any(r["extrapolated"]["finite differences"] for r in rows)  # the largest P is sampled


def test_chain_order_flop_ratio_grows_like_width(results):
    slope = check(results, "chain-order", "slope of the FLOP ratio")
    assert slope["matches"] and abs(slope["measured"] - 1) < 0.1
    assert check(results, "chain-order", "the optimal bracketing")["matches"]
    rows = experiment(results, "chain-order")["data"]["rows"]
    depth = rows[0]["depth"]
    for row in rows:
        width = row["width"]
        assert row["flops"]["reverse"] == depth * 2 * width * width
        assert row["flops"]["forward"] == (depth - 1) * 2 * width**3 + 2 * width * width


def test_fanout_sums_contributions_and_counts_one_pass_per_weight(results):
    entry = experiment(results, "fanout")
    data = entry["data"]
    assert data["consumers"] == 3
    assert abs(sum(data["contributions"]) - data["grad_h_analytic"]) < 1e-12
    for row in data["rows"]:
        assert row["forward_jvp_passes"] == row["weights"]
        assert row["reverse_vjp_passes"] == 1
    assert "fan-out 3" in data["dot"]


def test_schemes_and_derivative_free_report_their_costs(results):
    schemes = experiment(results, "schemes")["data"]
    for run in schemes["runs"]:
        assert run["steps"] > 0 and run["seconds_per_step"] > 0
        assert len(run["epoch_loss"]) == len(run["epoch_time"])
    free = experiment(results, "derivative-free")["data"]
    assert {"backprop", "forward_gradient", "spsa", "mezo", "es"} <= set(free["cosine"])
    backprop = free["cosine"]["backprop"]
    assert all(abs(c - 1.0) < 1e-9 for c in backprop["mean"])


def test_unknown_experiment_is_refused_by_the_parser():
    parser = argparse.ArgumentParser(prog="chainrule")
    add_lab_parser(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit):
        parser.parse_args(["lab", "everything"])
    args = parser.parse_args(["lab", "fanout"])
    assert args.out == "runs/lab" and not args.quick and args.seed == 0


def test_a_failing_experiment_is_reported_and_the_others_still_written(
    tmp_path, monkeypatch, capsys
):
    import chainrule.apps.lab.fanout as fanout

    def broken(quick=False, seed=0):
        raise RuntimeError("deliberately broken")

    monkeypatch.setattr(fanout, "run", broken)
    parser = argparse.ArgumentParser(prog="chainrule")
    add_lab_parser(parser.add_subparsers(dest="command"))
    status = run_lab(parser.parse_args(["lab", "fanout", "--quick", "--out", str(tmp_path)]))
    assert status == 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert "deliberately broken" in saved["experiments"][0]["answer"]
    assert "deliberately broken" in (tmp_path / "report.html").read_text()


def test_helpers():
    assert loglog_slope([1, 10, 100], [3, 30, 300]) == pytest.approx(1.0)
    assert loglog_slope([1, 10, 100], [5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    assert Check("x", 0.5, "1", 0.9, 1.1).matches is False
    assert Check("x", float("nan"), "1").matches is False
    assert "DOES NOT MATCH" in Check("x", 0.5, "1", 0.9, 1.1).line()
    import numpy as np

    assert jsonable({"a": np.float64("inf"), "b": [np.int64(3), (np.array([1.0]),)]}) == {
        "a": None,
        "b": [3, [[1.0]]],
    }
    text = Table("t", ["a", "b"], [[1, 2.5]]).text()
    assert "2.5" in text and text.startswith("t")


def test_drawn_figure_is_the_png_that_render_png_draws():
    def draw(figure):
        figure.subplots().plot([0, 1, 2], [1, 0, 1])

    figure = drawn_figure("curve", "A curve.", draw, 3, 2)
    assert (figure.name, figure.caption, figure.svg) == ("curve", "A curve.", None)
    assert figure.png == render_png(draw, 3, 2)
