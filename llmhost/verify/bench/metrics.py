"""Per-request timings -> benchmark summary, with the definitions of `vllm bench serve`.

Figures must be comparable with vLLM's, so every definition below follows vLLM
(vllm-project/vllm, read at commit 009e6d4a1cd6ba3fb2a9fc00f4ec06f5297232a1):

- `vllm/benchmarks/serve.py::calculate_metrics`: TPOT = (latency - ttft) / (output_len - 1),
  only for requests with output_len > 1; ITLs of all requests pooled into one list;
  throughputs = completed / duration and total_output / duration; failed requests excluded;
  an empty list reports 0 (`np.mean(xs or 0)`).
- mean / median / std / percentiles are numpy's `np.mean`, `np.median`, `np.std` (population,
  ddof=0) and `np.percentile` (default "linear" method), reimplemented here without numpy.
- `vllm/benchmarks/serve.py::benchmark`: duration spans from before the first measured
  request is sent to after the last one finishes; warm-up requests run before that window.

How TTFT, ITL and latency are taken from the stream is in `llmhost.verify.bench.client`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from llmhost.plan.targets import PERCENTILES
from llmhost.verify.bench.client import RequestRecord


@dataclass(frozen=True)
class Distribution:
    """Statistics of one latency metric over the measured requests, in milliseconds."""

    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: tuple[tuple[int, float], ...]

    def percentile(self, p: int) -> float:
        return dict(self.percentiles_ms)[p]


@dataclass(frozen=True)
class BenchSummary:
    """Aggregates of one run, named like the keys of vLLM's result JSON."""

    duration_s: float
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft: Distribution
    tpot: Distribution
    itl: Distribution
    e2el: Distribution


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with the default linear interpolation."""
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def distribution(
    values_s: Sequence[float], percentiles: Sequence[int] = PERCENTILES
) -> Distribution:
    """Seconds in, milliseconds out; an empty input gives zeros, as vLLM reports it."""
    values = list(values_s) or [0.0]
    return Distribution(
        mean_ms=statistics.fmean(values) * 1000,
        median_ms=percentile(values, 50) * 1000,
        std_ms=statistics.pstdev(values) * 1000,
        percentiles_ms=tuple((p, percentile(values, p) * 1000) for p in percentiles),
    )


def tpot_s(record: RequestRecord) -> float | None:
    """Mean time per output token after the first; None when there is no second token."""
    if record.output_tokens <= 1:
        return None
    return (record.latency_s - record.ttft_s) / (record.output_tokens - 1)


def summarize(records: Sequence[RequestRecord], duration_s: float) -> BenchSummary:
    """Aggregate the measured (non-warm-up) requests of one run."""
    if duration_s <= 0:
        raise ValueError(f"benchmark duration must be positive, got {duration_s}")
    done = [r for r in records if r.success]
    output = sum(r.output_tokens for r in done)
    prompt = sum(r.prompt_tokens for r in done)
    tpots = [t for t in map(tpot_s, done) if t is not None]
    return BenchSummary(
        duration_s=duration_s,
        completed=len(done),
        failed=len(records) - len(done),
        total_input_tokens=prompt,
        total_output_tokens=output,
        request_throughput=len(done) / duration_s,
        output_throughput=output / duration_s,
        total_token_throughput=(prompt + output) / duration_s,
        ttft=distribution([r.ttft_s for r in done]),
        tpot=distribution(tpots),
        itl=distribution([gap for r in done for gap in r.itl_s]),
        e2el=distribution([r.latency_s for r in done]),
    )
