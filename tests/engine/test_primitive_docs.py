"""docs/primitives.md is generated from the primitive table and must match it."""

import subprocess
import sys
from pathlib import Path

from chainrule.engine.primitives import TABLE

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "primitive_table.py"


def test_primitive_page_matches_the_table():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


def test_primitive_page_lists_every_entry_once():
    page = (ROOT / "docs" / "primitives.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert sorted(row.split("`")[1] for row in rows) == sorted(TABLE)
    covered = sum(prim.array_api is not None for prim in TABLE.values())
    assert f"{len(TABLE)} primitives, {covered} with an array-API forward." in page
