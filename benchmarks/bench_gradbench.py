"""Run gradbench evals against chainrule (and, where installed, the PyTorch and JAX tools), check
the eval's verdicts and print derivative time / objective time per eval.

This needs a local gradbench checkout (its eval programs and golden C++ tool); the project's own
tests do not. It is its own small relay: it starts the eval program and the tool program, passes
every line the eval writes to the tool's stdin and every line the tool answers back to the eval,
and keeps the whole session.

Validate one eval (the eval's own default sizes, or its arguments after ``--``)::

    python benchmarks/bench_gradbench.py validate --gradbench /tmp/gradbench \
        --eval-python /tmp/gb-venv/bin/python llsq -- -n 16 32 --min-seconds 0

Figures (small and medium inputs of every eval, every tool that can run)::

    python benchmarks/bench_gradbench.py figures --gradbench /tmp/gradbench \
        --eval-python /tmp/gb-venv/bin/python --peer-python /tmp/peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def relay(eval_command, tool_command, cwd, env=None, timeout=None, log=None, answer_s=None):
    """Run one session between an eval program and a tool program; return its rounds as a list
    of ``(message, response)`` pairs. Stops when the eval closes its output; a tool still owing
    an answer ``timeout`` seconds into the session is a TimeoutError (both programs are killed).
    A list passed as ``answer_s`` gets, per round, the wall-clock seconds from handing the
    message to the tool to reading its answer."""
    eval_proc = subprocess.Popen(
        eval_command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    tool_proc = subprocess.Popen(
        tool_command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    rounds = []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for line in eval_proc.stdout:
            if not line.strip():
                continue
            message = json.loads(line)
            sent = time.perf_counter()
            tool_proc.stdin.write(line if line.endswith("\n") else line + "\n")
            tool_proc.stdin.flush()
            if deadline is not None:
                ready, _, _ = select.select(
                    [tool_proc.stdout], [], [], max(0.0, deadline - time.monotonic())
                )
                if not ready:
                    raise TimeoutError(
                        f"relay: no answer to message {message.get('id')} within {timeout} s"
                    )
            answer = tool_proc.stdout.readline()
            if not answer:
                raise RuntimeError(
                    f"relay: the tool exited without answering message {message.get('id')}"
                )
            if answer_s is not None:
                answer_s.append(time.perf_counter() - sent)
            response = json.loads(answer)
            rounds.append((message, response))
            if log is not None:
                log.write(json.dumps({"message": message, "response": response}) + "\n")
                log.flush()
            try:
                eval_proc.stdin.write(answer)
                eval_proc.stdin.flush()
            except BrokenPipeError:
                break
    except BaseException:
        for proc in (eval_proc, tool_proc):
            proc.kill()
        raise
    finally:
        for proc in (eval_proc, tool_proc):
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
        for proc in (eval_proc, tool_proc):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return rounds


def summarise(rounds):
    """Per evaluate message: function, description, success, the eval's verdict, timings."""
    verdicts = {m["of"]: m for m, _ in rounds if m.get("kind") == "analysis"}
    rows = []
    for message, response in rounds:
        if message.get("kind") != "evaluate":
            continue
        analysis = verdicts.get(message["id"], {})
        evaluate_ns = [
            t["nanoseconds"] for t in response.get("timings", []) if t["name"] == "evaluate"
        ]
        rows.append(
            {
                "function": message["function"],
                "description": message.get("description", ""),
                "success": response.get("success", False),
                "valid": analysis.get("valid"),
                "error": response.get("error") or analysis.get("error"),
                "median_s": statistics.median(evaluate_ns) / 1e9 if evaluate_ns else None,
                "runs": len(evaluate_ns),
            }
        )
    return rows


def eval_command(args, name, extra):
    program = (
        Path(args.gradbench) / "python" / "gradbench" / "gradbench" / "evals" / name / "run.py"
    )
    return [args.eval_python, str(program), *extra]


TOOLS = {
    "chainrule": lambda args: [sys.executable, "-m", "chainrule.apps.gradbench"],
    "pytorch": lambda args: [
        args.peer_python,
        str(Path(args.gradbench) / "python/gradbench/gradbench/tools/pytorch/run.py"),
    ],
    "jax": lambda args: [
        args.peer_python,
        str(Path(args.gradbench) / "python/gradbench/gradbench/tools/jax/run.py"),
    ],
}


def session_env(args):
    env = dict(os.environ)
    paths = [str(ROOT / "src"), str(Path(args.gradbench) / "python" / "gradbench")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def cmd_validate(args):
    tool = TOOLS[args.tool](args)
    log = open(args.log, "w") if args.log else None
    try:
        rounds = relay(
            eval_command(args, args.eval, args.eval_args),
            tool,
            args.gradbench,
            session_env(args),
            log=log,
        )
    finally:
        if log:
            log.close()
    rows = summarise(rounds)
    failures = 0
    for row in rows:
        ok = row["success"] and row["valid"] is not False
        failures += not ok
        status = (
            "valid"
            if row["valid"]
            else (
                "invalid"
                if row["valid"] is False
                else ("failed" if not row["success"] else "unchecked")
            )
        )
        timing = (
            f"{row['median_s'] * 1e3:10.3f} ms x{row['runs']}"
            if row["median_s"] is not None
            else ""
        )
        print(f"{args.eval:8s} {row['function']:10s} {row['description']:28s} {status:9s} {timing}")
        if not ok and row["error"]:
            print("    " + row["error"].strip().replace("\n", "\n    ")[:2000])
    defined = any(m.get("kind") == "define" and r.get("success") for m, r in rounds)
    print(
        f"{args.eval}: {len(rows) - failures} passed, {failures} failed"
        + ("" if defined else " (module not defined)")
    )
    return 0 if failures == 0 and defined else 1


# Per eval: (objective function, derivative function, {size: eval arguments}). Saddle and
# particle have no objective, only four variants of one nested computation: their row compares
# the all-forward variant with the all-reverse one instead.
FIGURES = {
    "hello": ("square", "double", {"small": []}),
    "llsq": ("primal", "gradient", {"small": ["-n", "256"], "medium": ["-n", "4096"]}),
    "lse": ("primal", "gradient", {"small": ["-n", "5000"], "medium": ["-n", "160000"]}),
    "det": ("primal", "gradient", {"small": ["-l", "7"], "medium": ["-l", "9"]}),
    "ode": (
        "primal",
        "gradient",
        {"small": ["-n", "1000", "-s", "10"], "medium": ["-n", "10000", "-s", "100"]},
    ),
    "gmm": (
        "objective",
        "jacobian",
        {"small": ["-d", "2", "-k", "5"], "medium": ["-d", "20", "-k", "50"]},
    ),
    "kmeans": (
        "cost",
        "dir",
        {
            "small": ["-k", "10", "-n", "1000", "-d", "8"],
            "medium": ["-k", "100", "-n", "10000", "-d", "16"],
        },
    ),
    "lstm": (
        "objective",
        "jacobian",
        {"small": ["-l", "2", "-c", "1024"], "medium": ["-l", "4", "-c", "4096"]},
    ),
    "ba": (
        "objective",
        "jacobian",
        {"small": ["--min", "1", "--max", "1"], "medium": ["--min", "5", "--max", "5"]},
    ),
    "ht": (
        "objective",
        "jacobian",
        {"small": ["--min", "1", "--max", "1"], "medium": ["--min", "6", "--max", "6"]},
    ),
    "saddle": ("rr", "ff", {"small": []}),
    "particle": ("rr", "ff", {"small": []}),
}

# The evals each peer tool implements (gradbench's tools/<tool>/evals.txt; it marks PyTorch's ba
# "error" and its ht "timeout", which ``suite`` runs anyway and reports as such).
PEER_EVALS = {
    "pytorch": {"hello", "gmm", "kmeans", "lse", "lstm", "ba", "ht"},
    "jax": {"hello", "gmm", "kmeans", "llsq", "lse", "ode"},
}


def cmd_figures(args):
    tools = ["chainrule"] + [tool for tool in ("pytorch", "jax") if args.peer_python]
    evals = args.evals or list(FIGURES)
    runs = ["--min-runs", str(args.min_runs), "--min-seconds", str(args.min_seconds)]
    print(
        f"{'eval':8s} {'size':7s} "
        + " ".join(f"{tool + ' ratio':>15s} {tool + ' deriv':>15s}" for tool in tools)
    )
    for name in evals:
        objective, derivative, sizes = FIGURES[name]
        for size, extra in sizes.items():
            cells = []
            for tool in tools:
                if tool != "chainrule" and name not in PEER_EVALS[tool]:
                    cells.append(f"{'-':>15s} {'-':>15s}")
                    continue
                try:
                    rounds = relay(
                        eval_command(args, name, extra + runs),
                        TOOLS[tool](args),
                        args.gradbench,
                        session_env(args),
                        timeout=args.timeout,
                    )
                except (TimeoutError, RuntimeError) as error:
                    cells.append(f"{'(' + type(error).__name__ + ')':>15s} {'':>15s}")
                    continue
                rows = summarise(rounds)
                times = {
                    row["function"]: row["median_s"]
                    for row in rows
                    if row["success"] and row["valid"] is not False
                }
                if objective in times and derivative in times:
                    cells.append(
                        f"{times[derivative] / times[objective]:15.2f} "
                        f"{times[derivative] * 1e3:12.2f} ms"
                    )
                else:
                    cells.append(f"{'(failed)':>15s} {'':>15s}")
            print(f"{name:8s} {size:7s} " + " ".join(cells), flush=True)
    return 0


def suite_session(args, name, extra, tool):
    """One session of eval ``name`` (eval arguments ``extra``, every function evaluated once)
    with ``tool``: the seconds the tool took to answer its evaluate messages (from handing the
    message over to reading the answer: input conversion, any compilation, the runs, output),
    or "timeout" (past ``--timeout``), or "invalid" (an evaluation failed or was judged wrong)."""
    answer_s = []
    try:
        rounds = relay(
            eval_command(args, name, extra + ["--min-runs", "1", "--min-seconds", "0"]),
            TOOLS[tool](args),
            args.gradbench,
            session_env(args),
            timeout=args.timeout,
            answer_s=answer_s,
        )
    except TimeoutError:
        return "timeout"
    except RuntimeError:
        return "invalid"
    rows = summarise(rounds)
    if not rows or not all(row["success"] and row["valid"] is not False for row in rows):
        return "invalid"
    pairs = zip(rounds, answer_s, strict=True)
    return sum(t for (m, _), t in pairs if m.get("kind") == "evaluate")


def suite_total(sizes, timeout):
    """Seconds for all sizes of one eval in one repeat; a size that timed out counts as the
    timeout and makes the total a lower bound. Returns (seconds or None, note)."""
    if any(v == "invalid" for v in sizes.values()):
        return None, "invalid"
    total = sum(v if isinstance(v, float) else timeout for v in sizes.values())
    late = [k for k, v in sizes.items() if v == "timeout"]
    return total, ("timeout " + ",".join(late)) if late else ""


def cmd_suite(args):
    """Seconds per eval: every size of FIGURES, each function evaluated once, per tool; the
    tools take turns within each repeat so that they share the machine's load. Pairs named in
    ``--once`` (tool:eval) run in the first repeat only."""
    tools = ["chainrule"] + [tool for tool in ("pytorch", "jax") if args.peer_python]
    evals = args.evals or list(FIGURES)
    once = set(filter(None, args.once.split(",")))
    runs = {}  # (eval, tool) -> per repeat, {size: seconds | "timeout" | "invalid"}
    for repeat in range(args.repeats):
        for name in evals:
            for tool in tools:
                if tool != "chainrule" and name not in PEER_EVALS[tool]:
                    continue
                if repeat and f"{tool}:{name}" in once:
                    continue
                sizes = {}
                for size, extra in FIGURES[name][2].items():
                    sizes[size] = suite_session(args, name, extra, tool)
                runs.setdefault((name, tool), []).append(sizes)
                shown = ", ".join(
                    f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}"
                    for k, v in sizes.items()
                )
                print(f"# repeat {repeat + 1} {name:8s} {tool:9s} {shown}", flush=True)

    def cell(name, tool):
        if (name, tool) not in runs:
            return None, "-"
        totals = [suite_total(sizes, args.timeout) for sizes in runs[(name, tool)]]
        seconds = [t for t, _ in totals if t is not None]
        notes = sorted({note for _, note in totals if note})
        if not seconds:
            return None, "/".join(notes)
        value = statistics.median(seconds)
        prefix = ">" if any(n.startswith("timeout") for n in notes) else ""
        return value, f"{prefix}{value:.3f}" + (f" ({'/'.join(notes)})" if notes else "")

    def ratio(name, peer):
        """Median over repeats of chainrule's total over the peer's, within each repeat."""
        own, other = runs.get((name, "chainrule")), runs.get((name, peer))
        if not own or not other:
            return "-"
        ratios = []
        for a, b in zip(own, other, strict=False):
            (ta, na), (tb, nb) = suite_total(a, args.timeout), suite_total(b, args.timeout)
            if ta is not None and tb and not na:
                ratios.append((ta / tb, nb.startswith("timeout")))
        if not ratios:
            return "-"
        value = statistics.median(r for r, _ in ratios)
        return ("<" if any(late for _, late in ratios) else "") + f"{value:.3f}"

    print(
        f"{'eval':8s} "
        + " ".join(f"{t + ' s':>24s}" for t in tools)
        + "".join(f" {'cr/' + t:>10s}" for t in tools[1:])
    )
    table = {}
    for name in evals:
        cells = [cell(name, t) for t in tools]
        ratios = [ratio(name, t) for t in tools[1:]]
        table[name] = {
            "seconds": {t: c[1] for t, c in zip(tools, cells, strict=True)},
            "ratios": dict(zip(tools[1:], ratios, strict=True)),
            "runs": {t: runs.get((name, t)) for t in tools},
        }
        print(
            f"{name:8s} "
            + " ".join(f"{c[1]:>24s}" for c in cells)
            + "".join(f" {r:>10s}" for r in ratios),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(table, out, indent=1)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("validate", "figures", "suite"):
        p = sub.add_parser(name)
        p.add_argument(
            "--gradbench", required=True, help="a gradbench checkout with tools/manual/bin built"
        )
        p.add_argument(
            "--eval-python",
            default=sys.executable,
            help="python with numpy, pydantic, scipy, dataclasses-json",
        )
        p.add_argument(
            "--peer-python", default=None, help="python with torch and jax, for the peer tools"
        )
    figures = sub.choices["figures"]
    figures.add_argument("evals", nargs="*", help="evals to run (default: all)")
    figures.add_argument("--min-runs", type=int, default=3)
    figures.add_argument("--min-seconds", type=float, default=0.5)
    figures.add_argument("--timeout", type=float, default=600, help="seconds per session")
    suite = sub.choices["suite"]
    suite.add_argument("evals", nargs="*", help="evals to run (default: all)")
    suite.add_argument("--repeats", type=int, default=3)
    suite.add_argument("--timeout", type=float, default=300, help="seconds per session")
    suite.add_argument("--json", default=None, help="write the runs and medians here")
    suite.add_argument(
        "--once",
        default="",
        help="comma-separated tool:eval pairs to run in the first repeat only (e.g. pytorch:ba)",
    )
    validate = sub.choices["validate"]
    validate.add_argument("eval")
    validate.add_argument("--tool", default="chainrule", choices=sorted(TOOLS))
    validate.add_argument("--log", default=None, help="write the session as JSON lines here")
    validate.add_argument("eval_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if getattr(args, "eval_args", None) and args.eval_args[0] == "--":
        args.eval_args = args.eval_args[1:]
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "suite":
        return cmd_suite(args)
    return cmd_figures(args)


if __name__ == "__main__":
    sys.exit(main())
