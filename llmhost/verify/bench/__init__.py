"""Streaming benchmark of an OpenAI-compatible server, with `vllm bench serve` definitions."""

from llmhost.verify.bench.client import (
    BenchError,
    HTTPStatusError,
    RequestRecord,
    RequestTimeout,
    ServerUnreachable,
    StreamError,
    StreamingClient,
)
from llmhost.verify.bench.metrics import BenchSummary, Distribution, percentile, summarize
from llmhost.verify.bench.report import CompareRow, GateCheck, compare, gate, to_dict
from llmhost.verify.bench.runner import BenchConfig, BenchResult, run_bench

__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "BenchSummary",
    "CompareRow",
    "Distribution",
    "GateCheck",
    "HTTPStatusError",
    "RequestRecord",
    "RequestTimeout",
    "ServerUnreachable",
    "StreamError",
    "StreamingClient",
    "compare",
    "gate",
    "percentile",
    "run_bench",
    "summarize",
    "to_dict",
]
