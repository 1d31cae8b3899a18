"""`llmhost tune`'s table, its JSON result and its plot (matplotlib, the `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmhost.facts import to_jsonable
from llmhost.verify.bench.sweep import new_figure, save_png
from llmhost.verify.tune.session import TuneResult

RESULT_FORMAT = 1


def table(result: TuneResult) -> list[str]:
    """One row per knob and llama-bench test: median ratio, min-max spread, verdict."""
    w = max([22, *(len(r.knob) for r in result.records), *(len(k) for k in result.skipped)])
    rows = [f"{'knob':<{w}} {'test':<7} {'ratio':>7}  {'spread':<13} {'samples':<8} verdict"]
    for record in result.records:
        for m in record.metrics:
            spread = f"[{m.low - 1:+.0%}..{m.high - 1:+.0%}]"
            rows.append(
                f"{record.knob:<{w}} {m.test:<7} {m.ratio - 1:>+7.1%}  {spread:<13} "
                f"{f'{m.n}/{m.baseline_n}':<8} {m.verdict}"
            )
    rows += [f"{knob:<{w}} not measured: {why}" for knob, why in result.skipped.items()]
    return rows


def to_dict(result: TuneResult) -> dict[str, Any]:
    return {"format": RESULT_FORMAT, "benchmark": "llmhost tune", **to_jsonable(result)}


def write_plot(result: TuneResult, path: Path) -> Path:
    """Each knob's median ratio per test with its min-max spread; 1.0 is the baseline.
    PlotUnavailable without matplotlib."""
    bars = [(f"{r.knob} {m.test}", m) for r in result.records for m in r.metrics]
    figure = new_figure((9, 1.2 + 0.4 * max(len(bars), 1)))
    axes = figure.subplots()
    colors = {"positive": "tab:green", "negative": "tab:red"}
    for i, (_, m) in enumerate(bars):
        axes.barh(i, m.ratio - 1, left=1, color=colors.get(str(m.verdict), "tab:gray"))
        axes.plot([m.low, m.high], [i, i], color="black", linewidth=1.5)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(range(len(bars)), [name for name, _ in bars])
    axes.invert_yaxis()
    axes.set_xlabel("tokens/s against the baseline (bar: median; line: min-max of the samples)")
    axes.grid(True, axis="x", alpha=0.3)
    figure.suptitle(
        f"llmhost tune: {result.workload} on {result.hardware.label()}, "
        f"{result.rounds} interleaved rounds x {result.reps}"
    )
    return save_png(figure, path)
