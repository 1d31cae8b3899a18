"""Bench results as JSON, run-to-run comparison, and pass/fail gates against targets.

Summary keys are those of vLLM's result JSON (`vllm/benchmarks/serve.py::benchmark`:
`duration`, `output_throughput`, `p99_ttft_ms`, ...), so `compare` and `gate` also accept a
file written by `vllm bench serve --save-result`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmhost.plan.targets import LATENCY_METRICS, STATS, THROUGHPUT_KEYS, parse_target
from llmhost.verify.bench.client import RequestRecord
from llmhost.verify.bench.metrics import BenchSummary, tpot_s
from llmhost.verify.bench.runner import BenchResult

SCHEMA = "llmhost.bench/1"
REPORT_SCHEMA = "llmhost.bench-report/1"  # a saved `llmhost bench` report: runs + host + gates
HIGHER_IS_BETTER = frozenset({*THROUGHPUT_KEYS.values(), "completed"})
COMPARED_KEYS: tuple[str, ...] = (
    "completed",
    "failed",
    "total_output_tokens",
    *THROUGHPUT_KEYS.values(),
    *(f"{stat}_{metric}_ms" for metric in LATENCY_METRICS for stat in STATS),
)

ResultLike = BenchResult | Mapping[str, Any]


@dataclass(frozen=True)
class CompareRow:
    """One metric of two runs; `ratio` is new/old (None when old is 0)."""

    metric: str
    old: float
    new: float
    delta: float
    ratio: float | None
    higher_is_better: bool
    verdict: Literal["better", "worse", "same"]


@dataclass(frozen=True)
class GateCheck:
    """One target: `actual` must be <= `limit` (bound "max") or >= it (bound "min")."""

    target: str
    metric: str
    bound: Literal["max", "min"]
    limit: float
    actual: float | None
    passed: bool


def summary_dict(summary: BenchSummary) -> dict[str, float | int]:
    """Flat, vLLM-named summary keys."""
    flat: dict[str, float | int] = {
        "duration": summary.duration_s,
        "completed": summary.completed,
        "failed": summary.failed,
        "total_input_tokens": summary.total_input_tokens,
        "total_output_tokens": summary.total_output_tokens,
        "request_throughput": summary.request_throughput,
        "output_throughput": summary.output_throughput,
        "total_token_throughput": summary.total_token_throughput,
    }
    for metric in LATENCY_METRICS:
        dist = getattr(summary, metric)
        flat[f"mean_{metric}_ms"] = dist.mean_ms
        flat[f"median_{metric}_ms"] = dist.median_ms
        flat[f"std_{metric}_ms"] = dist.std_ms
        for p, value in dist.percentiles_ms:
            flat[f"p{p}_{metric}_ms"] = value
    return flat


def request_dict(record: RequestRecord, t0: float) -> dict[str, Any]:
    tpot = tpot_s(record) if record.success else None
    return {
        "success": record.success,
        "start_offset_ms": (record.start_time - t0) * 1000,
        "ttft_ms": record.ttft_s * 1000,
        "tpot_ms": None if tpot is None else tpot * 1000,
        "itl_ms": [gap * 1000 for gap in record.itl_s],
        "latency_ms": record.latency_s * 1000,
        "output_tokens": record.output_tokens,
        "prompt_tokens": record.prompt_tokens,
        "usage_reported": record.usage_reported,
        "token_chunks": record.token_chunks,
        "server_timings": record.server_timings,
        "error": record.error,
    }


def to_dict(result: BenchResult) -> dict[str, Any]:
    """JSON-serialisable form of a run (schema in docs/bench.md)."""
    t0 = min((r.start_time for r in result.records), default=0.0)
    return {
        "schema": SCHEMA,
        "config": asdict(result.config),
        "summary": summary_dict(result.summary),
        "requests": [request_dict(r, t0) for r in result.records],
    }


def _summary_of(result: ResultLike) -> Mapping[str, Any]:
    if isinstance(result, BenchResult):
        return summary_dict(result.summary)
    summary = result.get("summary")
    return summary if isinstance(summary, Mapping) else result


def compare(old: ResultLike, new: ResultLike) -> list[CompareRow]:
    """Rows for every summary metric present in both runs, in a stable order."""
    before, after = _summary_of(old), _summary_of(new)
    rows = []
    for key in COMPARED_KEYS:
        if key not in before or key not in after:
            continue
        a, b = float(before[key]), float(after[key])
        higher = key in HIGHER_IS_BETTER
        if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            verdict: Literal["better", "worse", "same"] = "same"
        else:
            verdict = "better" if (b > a) == higher else "worse"
        rows.append(
            CompareRow(
                metric=key,
                old=a,
                new=b,
                delta=b - a,
                ratio=b / a if a else None,
                higher_is_better=higher,
                verdict=verdict,
            )
        )
    return rows


def gate(result: ResultLike, targets: Mapping[str, float]) -> list[GateCheck]:
    """Check each target; a latency target fails outright when no request completed."""
    summary = _summary_of(result)
    completed = int(summary.get("completed", 0))
    checks = []
    for target, limit in targets.items():
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise ValueError(f"bench target {target!r} needs a number, got {limit!r}")
        key, bound = parse_target(target)
        value = summary.get(key)
        actual = None if value is None else float(value)
        if key.endswith("_ms") and completed == 0:
            actual = None
        passed = actual is not None and (actual <= limit if bound == "max" else actual >= limit)
        checks.append(GateCheck(target, key, bound, float(limit), actual, passed))
    return checks
