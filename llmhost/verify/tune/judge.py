"""Samples of two setups -> a Record: the knob's median ratio per workload and llama-bench test,
its spread, and the verdict by llmhost.plan.evidence's rule."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from llmhost.plan.evidence import Hardware, Metric, Record, combine, metric_verdict
from llmhost.verify.tune.knobs import Comparison


@dataclass(frozen=True)
class Stats:
    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, data: list[float] | dict) -> Stats:
        """From raw samples, or from a {median, min, max, n} summary of them."""
        if isinstance(data, dict):
            return cls(data["median"], data["min"], data["max"], data["n"])
        return cls(statistics.median(data), min(data), max(data), len(data))


# runs: workload -> configuration -> llama-bench test -> samples (or their Stats summary)
Runs = dict[str, dict[str, dict[str, list[float] | dict]]]


def compare(
    c: Comparison, runs: Runs, names: dict[str, str], hardware: Hardware, source: str
) -> Record | None:
    """The knob's configuration over its baseline, per workload and llama-bench test; `names`
    maps a setup's name to the one a results file used."""
    metrics = []
    for workload, configs in runs.items():
        knob = configs.get(names.get(c.candidate, c.candidate))
        base = configs.get(names.get(c.baseline, c.baseline))
        if not knob or not base:
            continue
        for test in sorted(set(knob) & set(base)):
            k, b = Stats.of(knob[test]), Stats.of(base[test])
            ratio, low, high = (round(v / b.median, 4) for v in (k.median, k.low, k.high))
            verdict = metric_verdict(ratio, low, high, min(k.n, b.n))
            metrics.append(Metric(workload, test, ratio, low, high, k.n, b.n, verdict))
    if not metrics:
        return None
    return Record(
        knob=c.knob,
        title=c.title,
        scope=c.scope,
        service=c.service,
        compares=c.compares,
        hardware=hardware,
        metrics=tuple(metrics),
        verdict=combine(m.verdict for m in metrics),
        source=source,
    )
