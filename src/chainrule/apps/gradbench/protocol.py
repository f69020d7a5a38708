"""The gradbench protocol: JSON lines in (messages from an eval), JSON lines out (responses).

A session is a series of rounds driven by the eval. Each message carries an ``id`` and a ``kind``
(``start``, ``define``, ``evaluate``, ``analysis``); the response echoes the ``id``. Only
``define`` (do we implement this module?) and ``evaluate`` (run one function on one input) need
substance; every other kind is acknowledged with the bare ``id``.

An ``evaluate`` input usually carries ``min_runs`` and ``min_seconds``: the function is run at
least ``min_runs`` times and until the runs add up to ``min_seconds``, whichever is longer, and
each run is reported as its own ``"evaluate"`` timing. Turning the JSON input into arrays happens
once, before the runs, and is reported as one ``"prepare"`` timing; turning the result back into
JSON happens once, after them, and is not timed.

Messages are read and responses written with ``orjson`` where it is installed (the
``gradbench`` extra), else with the standard library's ``json``. The two agree on every value: a
gradient of 160,000 floats is written in 4 ms instead of 100-150 ms and its message read in 25 ms
instead of 50-80 ms, which on lse's medium input is most of a session. What ``orjson`` does not
do as ``json`` does (NaN and infinities, which it refuses to read and writes as ``null``;
integers past 64 bits) falls back to ``json``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any, TextIO

try:  # the gradbench extra
    import orjson
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    orjson = None

from . import registry
from .common import EvalFunction


def _timing(name: str, nanoseconds: int) -> dict:
    return {"name": name, "nanoseconds": int(nanoseconds)}


def run_repeatedly(function: EvalFunction, raw_input: Any) -> tuple[Any, list[dict]]:
    """Run ``function`` on ``raw_input`` as the protocol asks: at least ``min_runs`` times and
    until ``min_seconds`` have been spent running it. Returns ``(json_output, timings)``."""
    if isinstance(raw_input, dict):
        min_runs = int(raw_input.get("min_runs", 1))
        min_seconds = float(raw_input.get("min_seconds", 0.0))
    else:
        min_runs, min_seconds = 1, 0.0
    min_runs = max(min_runs, 1)
    start = time.perf_counter_ns()
    prepared = function.prepare(raw_input)
    timings = [_timing("prepare", time.perf_counter_ns() - start)]
    spent_ns = 0
    runs = 0
    result = None
    while runs < min_runs or spent_ns < min_seconds * 1e9:
        start = time.perf_counter_ns()
        result = function.compute(prepared)
        elapsed = time.perf_counter_ns() - start
        timings.append(_timing("evaluate", elapsed))
        spent_ns += elapsed
        runs += 1
    return function.to_json(result), timings


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def handle(message: dict) -> dict:
    """The response to one protocol message (never raises for a well-formed message: failures
    of a define or an evaluate are reported in the response as ``success: false`` + ``error``).

    >>> handle({"id": 0, "kind": "start", "eval": "hello"})
    {'id': 0, 'tool': 'chainrule'}
    >>> request = {"id": 1, "kind": "evaluate", "module": "hello", "function": "double"}
    >>> request["input"] = 3.0
    >>> handle(request)["output"]
    6.0
    """
    if not isinstance(message, dict) or "id" not in message:
        raise ValueError(
            f"gradbench: a message must be a JSON object with an 'id', got {message!r}"
        )
    response: dict = {"id": message["id"]}
    kind = message.get("kind")
    if kind == "start":
        response["tool"] = "chainrule"
    elif kind == "define":
        module = message.get("module")
        response["success"] = module in registry.MODULES
        if not response["success"]:
            response["error"] = (
                f"chainrule has no implementation of the gradbench module {module!r}; "
                f"it implements {sorted(registry.MODULES)}"
            )
    elif kind == "evaluate":
        response.update(_evaluate(message))
    return response


def _evaluate(message: dict) -> dict:
    module_name = message.get("module")
    function_name = message.get("function")
    functions = registry.MODULES.get(module_name)
    if functions is None:
        return {"success": False, "error": f"evaluate: unknown module {module_name!r}"}
    function = functions.get(function_name)
    if function is None:
        return {
            "success": False,
            "error": f"evaluate: module {module_name!r} has no function {function_name!r} "
            f"(it has {sorted(functions)})",
        }
    try:
        output, timings = run_repeatedly(function, message.get("input"))
    except Exception as error:  # the eval must hear about it, and the session must go on
        return {"success": False, "error": f"{module_name}.{function_name}: {_error_text(error)}"}
    return {"success": True, "output": output, "timings": timings}


def serve(stdin: TextIO, stdout: TextIO) -> None:
    """Answer every line of ``stdin`` with one line on ``stdout`` until the eval closes its end."""
    for line in stdin:
        if not line.strip():
            continue
        response = handle(read_message(line))
        stdout.write(write_response(response) + "\n")
        stdout.flush()


def read_message(line: str) -> Any:
    """One JSON line as Python values: by ``orjson`` where installed, by ``json`` where it is
    not or where ``orjson`` refuses the line (``NaN``, ``Infinity``, or a malformed line, which
    ``json`` then reports)."""
    if orjson is not None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    return json.loads(line)


def write_response(response: Any) -> str:
    """``response`` as one JSON line: by ``orjson`` where installed, unless that wrote a
    ``null`` (for a NaN or an infinity, which ``json`` writes as ``NaN`` and ``Infinity``; a
    ``None`` comes out the same either way) or could not write it (an integer past 64 bits, a
    NumPy scalar): then by ``json``, as without ``orjson``."""
    if orjson is not None:
        try:
            text = orjson.dumps(response)
        except TypeError:  # orjson.JSONEncodeError
            pass
        else:
            if b"null" not in text:
                return text.decode()
    return json.dumps(response)


def main() -> int:
    """Entry point of ``python -m chainrule.apps.gradbench``."""
    try:
        serve(sys.stdin, sys.stdout)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0
