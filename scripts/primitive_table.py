"""Write docs/primitives.md from the primitive table, or check that it is up to date.

    python scripts/primitive_table.py           # rewrite docs/primitives.md
    python scripts/primitive_table.py --check   # exit 1 when the file differs from the table

The page is a loop over ``chainrule.engine.primitives.TABLE``: nothing in it is written by hand,
so a primitive added to the table appears here (and in the array-API coverage, the batching
rules and ``chainrule.numpy``) without touching any other file. ``make docs`` rewrites it, and
``tests/engine/test_primitive_docs.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chainrule.engine.primitives import TABLE

PAGE = Path(__file__).resolve().parent.parent / "docs" / "primitives.md"

HEADER = """\
# The primitives

Generated from the primitive table (`chainrule.engine.primitives.TABLE`) by
`scripts/primitive_table.py`; do not edit by hand (`make docs` rewrites it, and a test fails when
it is stale). Every primitive has a forward, a VJP and a JVP rule and a FLOP count; all other
`chainrule.numpy` functions are composed of these. Each rule is checked against central finite
differences in float64 by the grid of `tests/engine/test_primitives.py`.

Columns: the `chainrule.numpy` functions that apply the primitive (`linalg.det` is
`chainrule.numpy.linalg.det`); the Tensor methods and Python operator it provides; how a batch
axis goes through it under `vmap` (`elementwise`, `axis`, `axes`, `stacked` are generic rules of
`chainrule.engine.batching`, `own` a rule of the entry's own); whether its FLOPs count as a matrix
product in the cost model; and its name in the array-API standard (what runs under
`chainrule.backend.namespace.use_namespace`; `builder` is a forward assembled from several
standard functions, `-` means NumPy and CuPy only).
"""


def _code(names) -> str:
    return ", ".join(f"`{name}`" for name in names) or "-"


def _batching(prim) -> str:
    rule = prim.batching
    if rule is None:
        return "-"
    return rule if isinstance(rule, str) else "own"


def _array_api(prim) -> str:
    spec = prim.array_api
    if spec is None:
        return "-"
    return "builder" if callable(spec) else f"`{spec}`"


def _operator(prim) -> str:
    return f"`__{prim.operator}__`" if prim.operator else "-"


def _summary(prim) -> str:
    """The first paragraph of the main public function's docstring, on one line."""
    if not prim.functions:
        return "internal (applied by other rules)"
    paragraph = (prim.function.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()).replace("``", "`").replace("|", "\\|")


def render() -> str:
    """The whole page, as text."""
    rows = [
        "| primitive | functions | methods | operator | batching | matmul-like | array API | "
        "what it is |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted(TABLE):
        prim = TABLE[name]
        rows.append(
            f"| `{name}` | {_code(prim.functions)} | {_code(prim.methods)} | {_operator(prim)} "
            f"| {_batching(prim)} | {'yes' if prim.matmul_like else '-'} | {_array_api(prim)} "
            f"| {_summary(prim)} |"
        )
    covered = sum(prim.array_api is not None for prim in TABLE.values())
    counts = f"{len(TABLE)} primitives, {covered} with an array-API forward."
    notes = [
        f"- `{name}`: {' '.join(TABLE[name].gpu.split()).replace('``', '`')}"
        for name in sorted(TABLE)
        if TABLE[name].gpu
    ]
    parts = [HEADER, counts, "", *rows, "", "## GPU notes", "", *notes, ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the page is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != text:
            print(f"{PAGE} is stale: run `python scripts/primitive_table.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
