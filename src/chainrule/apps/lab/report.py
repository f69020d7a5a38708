"""The lab's output: one self-contained HTML report, the pictures as files, the raw figures as JSON.

``write_report(results, out_dir, machine)`` writes

* ``report.html``: every experiment's question, command, plain-words answer, pictures (PNG and SVG
  embedded as base64 ``data:`` URIs, so the file needs nothing beside it), tables, and the checks
  that put each measured figure next to its theoretical value, with mismatches explained; then
  the machine and the versions. A small script in the page counts the pictures that loaded and
  writes the count into ``<body data-images-loaded=... data-images-total=...>``, which the
  browser test reads back;
* ``<figure>.png`` / ``<figure>.svg`` (and ``.dot`` for a graph with no SVG);
* ``results.json``: everything above except the pictures.

Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ...training.checkpoint import atomic_write_bytes, atomic_write_text, write_json
from .common import ExperimentResult, format_number, jsonable

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
section.experiment { border-top: 1px solid #d0d7de; margin-top: 2.5em; padding-top: .5em; }
code, pre { background: #f6f8fa; border-radius: 4px; padding: .1em .3em; }
pre { padding: .8em; overflow-x: auto; font-size: 85%; }
table { border-collapse: collapse; margin: .8em 0; font-size: 88%; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: right; }
th { background: #f6f8fa; }
td:first-child, th:first-child { text-align: left; }
table.checks td, table.checks th { text-align: left; }
table caption { font-weight: bold; text-align: left; padding-bottom: .3em; }
.answer { background: #f0f7ff; border-left: 4px solid #0969da; padding: .6em 1em; }
.match { color: #1a7f37; font-weight: bold; }
.mismatch { color: #cf222e; font-weight: bold; }
.notes { background: #fff8c5; border-left: 4px solid #d4a72c; padding: .6em 1em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: 88%; color: #57606a; }
nav a { margin-right: 1em; }
"""

# Counts the pictures that loaded (complete, with a width) once the page has loaded, and writes
# the counts into <body>, where a headless browser's --dump-dom can read them.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.querySelectorAll("img");
  var loaded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded += 1; } });
  document.body.setAttribute("data-images-loaded", String(loaded));
  document.body.setAttribute("data-images-total", String(images.length));
  const sections = document.querySelectorAll("section.experiment");
  document.body.setAttribute("data-sections", String(sections.length));
});
"""


def _escape(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value) -> str:
    if isinstance(value, float):
        return _escape(format_number(value))
    return _escape(value)


def _table_html(table) -> str:
    head = "".join(f"<th>{_escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{_escape(table.title)}</caption>"
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checks_html(checks) -> str:
    if not checks:
        return ""
    rows = []
    for check in checks:
        verdict = (
            '<span class="match">matches</span>'
            if check.matches
            else '<span class="mismatch">does not match</span>'
        )
        rows.append(
            f"<tr><td>{_escape(check.name)}</td><td>{_escape(format_number(check.measured))}</td>"
            f"<td>{_escape(check.theory)}</td><td>{verdict}</td></tr>"
        )
    return (
        '<table class="checks"><caption>Measured figures next to the theory</caption>'
        "<thead><tr><th>figure</th>"
        "<th>measured</th><th>theory</th><th>verdict</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _figure_html(figure) -> str:
    caption = f"<figcaption>{_escape(figure.caption)}</figcaption>"
    if figure.png is not None:
        data = base64.b64encode(figure.png).decode("ascii")
        return (
            f'<figure><img alt="{_escape(figure.name)}" '
            f'src="data:image/png;base64,{data}">{caption}</figure>'
        )
    if figure.svg is not None:
        data = base64.b64encode(figure.svg.encode("utf-8")).decode("ascii")
        source = f"data:image/svg+xml;base64,{data}"
        return f'<figure><img alt="{_escape(figure.name)}" src="{source}">{caption}</figure>'
    return f"<figure><pre>{_escape(figure.fallback_text)}</pre>{caption}</figure>"


def _section_html(result: ExperimentResult) -> str:
    parts = [
        f'<section class="experiment" id="{_escape(result.name)}">',
        f"<h2>{_escape(result.name)}: {_escape(result.question)}</h2>",
        f"<p>Command: <code>{_escape(result.command)}</code> ({result.seconds:.1f} s"
        f"{', quick run' if result.quick else ''})</p>",
        f'<div class="answer"><p>{_escape(result.answer)}</p></div>',
        _checks_html(result.checks),
    ]
    if result.notes:
        parts.append(
            '<div class="notes"><p><b>Where the figures differ from the theory, and why</b></p><ul>'
            + "".join(f"<li>{_escape(note)}</li>" for note in result.notes)
            + "</ul></div>"
        )
    parts.extend(_figure_html(figure) for figure in result.figures)
    parts.extend(_table_html(table) for table in result.tables)
    parts.append("</section>")
    return "\n".join(parts)


def render_html(results, machine: dict, title: str = "chainrule lab") -> str:
    nav = " ".join(f'<a href="#{_escape(r.name)}">{_escape(r.name)}</a>' for r in results)
    matched = sum(c.matches for r in results for c in r.checks)
    total = sum(len(r.checks) for r in results)
    machine_rows = "".join(
        f"<tr><td>{_escape(k)}</td><td>{_escape(v)}</td></tr>" for k, v in machine.items()
    )
    body = "\n".join(_section_html(r) for r in results)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{_escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{_escape(title)}: questions about backpropagation, answered by measurement</h1>
<p>Each section asks one question, names the command that answers it, explains the answer in plain
words, and shows the measured figures next to the theory. {matched} of {total} figures match their
theoretical range; the others are listed with the reason in each section.</p>
<nav>{nav}</nav>
{body}
<section id="machine">
<h2>Machine and versions</h2>
<table><tbody>{machine_rows}</tbody></table>
</section>
<script>{SCRIPT}</script>
</body>
</html>
"""


def write_report(results, out_dir, machine: dict) -> dict:
    """Write report.html, results.json and the pictures into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"pictures": []}
    for result in results:
        for figure in result.figures:
            if figure.png is not None:
                path = out / f"{figure.name}.png"
                atomic_write_bytes(path, figure.png)
            elif figure.svg is not None:
                path = out / f"{figure.name}.svg"
                atomic_write_text(path, figure.svg)
            else:
                path = out / f"{figure.name}.txt"
                atomic_write_text(path, figure.fallback_text)
            written["pictures"].append(str(path))
        dot = result.data.get("dot") if isinstance(result.data, dict) else None
        if dot:
            path = out / f"{result.name}-graph.dot"
            atomic_write_text(path, dot)
            written["pictures"].append(str(path))
    html_path = out / "report.html"
    atomic_write_text(html_path, render_html(results, machine))
    json_path = out / "results.json"
    write_json(
        json_path, jsonable({"machine": machine, "experiments": [r.as_dict() for r in results]})
    )
    written["html"] = str(html_path)
    written["json"] = str(json_path)
    return written
