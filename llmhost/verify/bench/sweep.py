"""Concurrency sweeps: one row per level from a saved bench report, as a table and a plot.

Pure except for `read_report` and `write_plot`. matplotlib (the `bench` extra) is imported only
by the plotting functions and drives the Agg canvas directly, so no display is ever needed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmhost.errors import LlmhostError
from llmhost.verify.bench.report import REPORT_SCHEMA

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_INSTALL = "pip install 'llmhost[bench]'"
# SweepRow field -> summary key of a run (vLLM's names, see report.summary_dict).
SUMMARY_KEYS: dict[str, str] = {
    "output_tok_s": "output_throughput",
    "request_s": "request_throughput",
    "ttft_median_ms": "median_ttft_ms",
    "ttft_p90_ms": "p90_ttft_ms",
    "ttft_p99_ms": "p99_ttft_ms",
    "tpot_median_ms": "median_tpot_ms",
    "itl_p90_ms": "p90_itl_ms",
    "completed": "completed",
    "failed": "failed",
}
COUNTS = frozenset({"completed", "failed"})
# Table columns: header, SweepRow field, decimals. Latencies are in ms (said in the title line).
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("conc", "concurrency", 0),
    ("out tok/s", "output_tok_s", 1),
    ("req/s", "request_s", 2),
    ("TTFT med", "ttft_median_ms", 1),
    ("TTFT p90", "ttft_p90_ms", 1),
    ("TTFT p99", "ttft_p99_ms", 1),
    ("TPOT med", "tpot_median_ms", 1),
    ("ITL p90", "itl_p90_ms", 1),
    ("ok", "completed", 0),
    ("failed", "failed", 0),
)


class ReportError(LlmhostError):
    """A file given to `llmhost bench --plot` is not a readable bench report (a usage error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class PlotUnavailable(LlmhostError):
    """matplotlib is not installed; the table still works."""


@dataclass(frozen=True)
class SweepRow:
    """One concurrency level of a sweep; latencies in ms."""

    concurrency: int
    output_tok_s: float
    request_s: float
    ttft_median_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_median_ms: float
    itl_p90_ms: float
    completed: int
    failed: int


@dataclass(frozen=True)
class Sweep:
    """One report's levels, sorted by concurrency; `label` is its service, else its URL."""

    label: str
    model: str
    created: str
    rows: tuple[SweepRow, ...]

    @property
    def title(self) -> str:
        return f"{self.label} · {self.model} · {self.created.replace('T', ' ')}"


def read_report(path: Path) -> dict[str, Any]:
    """The JSON of a saved report; any unreadable file is one ReportError line."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ReportError(f"{path} is not a bench report: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} is not a bench report: JSON {type(data).__name__}, no object")
    return data


def sweep_of(report: Mapping[str, Any], source: str = "report") -> Sweep:
    """Rows of a `llmhost.bench-report/1` dict; `source` names it in errors."""
    schema = report.get("schema")
    if schema != REPORT_SCHEMA:
        raise ReportError(
            f"{source} is not a bench report: schema {schema!r}, expected {REPORT_SCHEMA!r}"
        )
    runs = report.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ReportError(f"{source} is not a bench report: it has no runs")
    rows, models = [], []
    for index, run in enumerate(runs, start=1):
        try:
            config, summary = run["config"], run["summary"]
            models.append(str(config["model"]))
            rows.append(_row(config["concurrency"], summary))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"{source}: run {index} is malformed ({exc!r})") from None
    label = report.get("service") or str(runs[0]["config"].get("url", "?"))
    return Sweep(
        label=str(label),
        model=", ".join(dict.fromkeys(models)),
        created=str(report.get("created", "?")),
        rows=tuple(sorted(rows, key=lambda r: r.concurrency)),
    )


def _row(concurrency: Any, summary: Mapping[str, Any]) -> SweepRow:
    values: dict[str, Any] = {"concurrency": _number(concurrency, "concurrency", int)}
    for field, key in SUMMARY_KEYS.items():
        values[field] = _number(summary[key], key, int if field in COUNTS else float)
    return SweepRow(**values)


def _number(value: Any, key: str, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} is {value!r}, not a number")
    return kind(value)


def table_lines(sweep: Sweep) -> list[str]:
    """A title line, then a header and one line per level, indented and right-aligned."""
    cells = [
        [f"{getattr(row, field):.{places}f}" for _, field, places in COLUMNS] for row in sweep.rows
    ]
    widths = [
        max(len(header), *(len(line[i]) for line in cells))
        for i, (header, _, _) in enumerate(COLUMNS)
    ]
    lines = [f"sweep {sweep.title}  (latencies in ms)"]
    for line in [[header for header, _, _ in COLUMNS], *cells]:
        lines.append(
            "".join(f"  {cell.rjust(width)}" for cell, width in zip(line, widths, strict=True))
        )
    return lines


def plot_name(reports: Sequence[Path]) -> str:
    """`<report>.png` for one report; the first three names joined by `-vs-` for several."""
    stems = [p.stem for p in reports]
    name = "-vs-".join(stems[:3]) + (f"-and-{len(stems) - 3}-more" if len(stems) > 3 else "")
    return f"{name}.png"


def new_figure(size: tuple[float, float]) -> Figure:
    """An empty matplotlib figure drawn off screen; PlotUnavailable without matplotlib."""
    try:
        import matplotlib  # noqa: F401  (fails first, and alone, when the extra is missing)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable(
            f"plot skipped: matplotlib is not installed ({PLOT_INSTALL})"
        ) from None
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def sweep_figure(sweeps: Sequence[Sweep]) -> Figure:
    """Output tok/s (top) and TTFT p90 (bottom) against concurrency, one line per sweep."""
    figure = new_figure((9, 7))
    from matplotlib.ticker import NullLocator

    throughput, ttft = figure.subplots(2, 1, sharex=True)
    for sweep in sweeps:
        levels = [row.concurrency for row in sweep.rows]
        throughput.plot(levels, [r.output_tok_s for r in sweep.rows], marker="o", label=sweep.title)
        ttft.plot(levels, [r.ttft_p90_ms for r in sweep.rows], marker="o", label=sweep.title)
    ticks = sorted({row.concurrency for sweep in sweeps for row in sweep.rows})
    ttft.set_xscale("log", base=2)
    ttft.set_xticks(ticks, [str(t) for t in ticks])
    ttft.xaxis.set_minor_locator(NullLocator())
    ttft.set_xlabel("concurrency (requests in flight)")
    throughput.set_ylabel("output tok/s")
    ttft.set_ylabel("TTFT p90 (ms)")
    for axes in (throughput, ttft):
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    throughput.legend(fontsize="small")
    figure.suptitle("llmhost bench sweep: throughput and TTFT p90 against concurrency")
    return figure


def write_plot(sweeps: Sequence[Sweep], path: Path) -> Path:
    """Draw `sweeps` into the PNG `path`; raises PlotUnavailable without matplotlib."""
    return save_png(sweep_figure(sweeps), path)
