"""What every experiment of the lab shares: the result record, checks against theory, timing, fits.

An experiment's ``run`` begins an :class:`ExperimentRun` and ends with its
:meth:`~ExperimentRun.result`, an :class:`ExperimentResult`: its question, the command that
answers it, the plain-words answer, tables, figures (PNG bytes drawn with matplotlib's Agg canvas,
or SVG text), the raw figures as JSON-ready data, and :class:`Check` records that put each fitted
figure next to its theoretical value. A check that misses its range is reported as a mismatch with
the experiment's explanation of why; nothing is retuned to make it pass.

Timings follow the project's rule for a shared, noisy machine: the contenders are run in turns
(interleaved) and the median of the repetitions is kept; ratios are taken inside one run.
"""

from __future__ import annotations

import io
import math
import platform
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Check:
    """A measured figure beside its theoretical value; ``low``/``high`` bound a match."""

    name: str
    measured: float
    theory: str
    low: float = -math.inf
    high: float = math.inf
    why_not: str = ""  # said in the report when the figure misses the theory

    @property
    def matches(self) -> bool:
        return bool(math.isfinite(self.measured) and self.low <= self.measured <= self.high)

    def line(self) -> str:
        verdict = "matches" if self.matches else "DOES NOT MATCH"
        return (
            f"{self.name}: measured {format_number(self.measured)}  theory {self.theory}  -> "
            f"{verdict}"
        )

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "measured": finite_or_none(self.measured),
            "theory": self.theory,
            "low": finite_or_none(self.low),
            "high": finite_or_none(self.high),
            "matches": self.matches,
            "why_not": "" if self.matches else self.why_not,
        }


@dataclass
class Table:
    title: str
    columns: list
    rows: list  # lists of cells (str or numbers)

    def as_dict(self) -> dict:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [list(r) for r in self.rows],
        }

    def text(self) -> str:
        """The table as aligned plain text, for the terminal."""
        cells = [[str(c) for c in self.columns]] + [[_cell(c) for c in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for number, row in enumerate(cells):
            lines.append("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
            if number == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        return "\n".join(lines)


@dataclass
class Figure:
    """One picture: ``png`` bytes, or ``svg`` text, or neither with ``fallback_text`` (e.g. DOT)."""

    name: str  # file stem, e.g. "cost-time"
    caption: str
    png: bytes | None = None
    svg: str | None = None
    fallback_text: str = ""


@dataclass
class ExperimentResult:
    name: str
    question: str
    command: str
    answer: str  # the plain-words explanation shown beside the plots
    tables: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)  # mismatches and caveats, in words
    data: dict = field(default_factory=dict)
    seconds: float = 0.0
    quick: bool = False

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "question": self.question,
            "command": self.command,
            "answer": self.answer,
            "quick": self.quick,
            "seconds": round(self.seconds, 3),
            "checks": [c.as_dict() for c in self.checks],
            "tables": [t.as_dict() for t in self.tables],
            "figures": [f.name for f in self.figures],
            "notes": list(self.notes),
            "data": jsonable(self.data),
        }


def lab_command(name: str, quick: bool, seed: int) -> str:
    """The command line that reruns experiment ``name`` as it was run, shown in the report.

    >>> lab_command("fanout", quick=True, seed=0)
    'chainrule lab fanout --quick --seed 0'
    """
    return f"chainrule lab {name}{' --quick' if quick else ''} --seed {seed}"


#: The upper bound of a check that two ways of computing the same number agree "up to rounding"
#: (relative or absolute differences of float64 results of a few thousand operations).
ROUNDING = 1e-10


def rounding_check(name: str, difference: float, theory: str = "0, up to rounding") -> Check:
    """A check that ``difference`` between two exact ways of computing one thing is rounding."""
    return Check(name, difference, theory, 0.0, ROUNDING)


class ExperimentRun:
    """One run of an experiment, begun by its ``run(quick, seed)``: it keeps the clock, what
    reruns it and the caveats noted on the way, so that every experiment files its findings the
    same way, with :meth:`result`.

    >>> this_run = ExperimentRun("fanout", "Why?", quick=True, seed=0)
    >>> this_run.note("no Graphviz: the graph is shown as DOT text")
    >>> found = this_run.result("Because.", tables=[], figures=[], checks=[], data={})
    >>> found.command, found.notes, found.seconds >= 0
    ('chainrule lab fanout --quick --seed 0', ['no Graphviz: the graph is shown as DOT text'], True)
    """

    def __init__(self, name: str, question: str, quick: bool, seed: int):
        self.name = name
        self.question = question
        self.quick = quick
        self.seed = seed
        self.caveats: list[str] = []
        self.started = time.perf_counter()

    def note(self, caveat: str) -> None:
        """Keep ``caveat`` (in words) for the report: something the reader should know about
        the figures that no check says, such as what was extrapolated or skipped."""
        self.caveats.append(caveat)

    def result(
        self, answer: str, *, tables: list, figures: list, checks: list, data: dict
    ) -> ExperimentResult:
        """What the run found, with the seconds it took so far. Its notes are, first, one for
        every check that misses its theory (the check's line and why it misses), then the
        caveats noted, in order."""
        mismatches = [c.line() + " - " + c.why_not for c in checks if not c.matches]
        return ExperimentResult(
            name=self.name,
            question=self.question,
            command=lab_command(self.name, self.quick, self.seed),
            answer=answer,
            tables=tables,
            figures=figures,
            checks=checks,
            notes=mismatches + self.caveats,
            data=data,
            seconds=time.perf_counter() - self.started,
            quick=self.quick,
        )


def _cell(value) -> str:
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def format_number(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(value):
    """``value`` with NumPy scalars/arrays made plain and non-finite floats made ``None``
    (iterative)."""
    root = [None]
    stack = [(value, root, 0)]
    while stack:
        item, parent, key = stack.pop()
        if isinstance(item, dict):
            out = {}
            parent[key] = out
            for k, v in item.items():
                stack.append((v, out, str(k)))
        elif isinstance(item, (list, tuple)):
            out = [None] * len(item)
            parent[key] = out
            for i, v in enumerate(item):
                stack.append((v, out, i))
        elif isinstance(item, np.ndarray):
            stack.append((item.tolist(), parent, key))
        elif isinstance(item, (bool, np.bool_)):
            parent[key] = bool(item)
        elif isinstance(item, (int, np.integer)):
            parent[key] = int(item)
        elif isinstance(item, (float, np.floating)):
            parent[key] = finite_or_none(item)
        elif item is None or isinstance(item, str):
            parent[key] = item
        else:
            parent[key] = str(item)
    return root[0]


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (the exponent of a power law y ~ x^slope)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def interleaved_medians(functions: dict, repeats: int, min_seconds: float = 0.0) -> dict:
    """Median seconds per call of each function, run in turns ``repeats`` times.

    A call faster than ``min_seconds`` is repeated inside one timing so the clock's resolution
    and one-off hiccups matter less; the time reported is per call.
    """
    inner = {}
    for name, fn in functions.items():
        start = time.perf_counter()
        fn()  # warm-up, and a first estimate of the time
        elapsed = time.perf_counter() - start
        inner[name] = max(1, int(min_seconds / elapsed)) if elapsed > 0 and min_seconds > 0 else 1
    samples = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / inner[name])
    return {name: float(np.median(values)) for name, values in samples.items()}


def render_png(draw, width: float = 6.4, height: float = 4.2) -> bytes:
    """PNG bytes of a figure drawn by ``draw(figure)`` on matplotlib's Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 (heavy import)
    from matplotlib.figure import Figure as MplFigure  # noqa: PLC0415

    figure = MplFigure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    draw(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def drawn_figure(name: str, caption: str, draw, width: float, height: float) -> Figure:
    """The :class:`Figure` ``name`` whose PNG is drawn by ``draw(figure)`` on a ``width`` x
    ``height`` inch canvas (see :func:`render_png`): every experiment's plots are made this one
    way, so how a drawing becomes a report's figure is decided here and not in each experiment."""
    return Figure(name, caption, png=render_png(draw, width, height))


def label_axes(axes, xlabel: str, ylabel: str, title: str, legend_fontsize=None) -> None:
    """Name a panel's axes and title it, then draw its legend (in ``legend_fontsize`` points, or
    matplotlib's default size): the closing lines of every experiment's panels."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if legend_fontsize is None:
        axes.legend()
    else:
        axes.legend(fontsize=legend_fontsize)


def machine_info() -> dict:
    """The machine and the versions a report's figures were measured with."""
    import os  # noqa: PLC0415
    from importlib.metadata import version  # noqa: PLC0415

    import matplotlib  # noqa: PLC0415

    info = {
        "chainrule": version("chainrule"),  # the package root sits above every layer
        "python": platform.python_version(),
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    try:
        import sklearn  # noqa: PLC0415

        info["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
