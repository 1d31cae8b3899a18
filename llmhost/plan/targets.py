"""Bench targets, the gates a plan sets for its services: the keys and what each bounds.

Summary keys are those of vLLM's result JSON (`p90_ttft_ms`, `output_throughput`, ...), which
`llmhost bench` writes too.
"""

from __future__ import annotations

from typing import Literal

PERCENTILES: tuple[int, ...] = (90, 99)
LATENCY_METRICS: tuple[str, ...] = ("ttft", "tpot", "itl", "e2el")
STATS: tuple[str, ...] = ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES))
# Gate aliases for throughput-like figures: target key stem -> summary key.
THROUGHPUT_KEYS: dict[str, str] = {
    "output_tok_s": "output_throughput",
    "total_tok_s": "total_token_throughput",
    "request_s": "request_throughput",
}


def parse_target(target: str) -> tuple[str, Literal["max", "min"]]:
    """Map a target key to (summary key, bound); unknown keys are refused.

    `<ttft|tpot|itl|e2el>_<mean|median|std|p90|p99>_ms` are ceilings;
    `output_tok_s_min`, `total_tok_s_min`, `request_s_min`, `completed_min` are floors;
    `failed_max` is a ceiling on failed requests.
    """
    metric, _, rest = target.partition("_")
    stat, _, unit = rest.partition("_")
    if metric in LATENCY_METRICS and stat in STATS and unit == "ms":
        return f"{stat}_{metric}_ms", "max"
    stem, _, bound = target.rpartition("_")
    if bound == "min" and stem in THROUGHPUT_KEYS:
        return THROUGHPUT_KEYS[stem], "min"
    if target == "completed_min":
        return "completed", "min"
    if target == "failed_max":
        return "failed", "max"
    valid = [f"{m}_{s}_ms" for m in LATENCY_METRICS for s in STATS]
    valid += [f"{k}_min" for k in THROUGHPUT_KEYS] + ["completed_min", "failed_max"]
    raise ValueError(f"unknown bench target {target!r}; valid targets: {', '.join(valid)}")
