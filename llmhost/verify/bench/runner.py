"""Run a closed-loop benchmark: N worker threads, each sending its next request when one ends.

This is `vllm bench serve --request-rate inf --max-concurrency N`
(vllm-project/vllm `vllm/benchmarks/serve.py::benchmark`): warm-up requests run first and are
not measured, and the duration spans the measured requests only. Threads suffice because the
client spends its time blocked on sockets; `benchmarks/client_capacity.py` shows it keeps up.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmhost.verify.bench.client import (
    DEFAULT_TIMEOUT_S,
    BenchError,
    Mode,
    RequestRecord,
    StreamingClient,
)
from llmhost.verify.bench.metrics import BenchSummary, summarize

DEFAULT_PROMPT = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle. "
    "Describe the weather, the sea and the keeper's thoughts in detail."
)


@dataclass(frozen=True)
class BenchConfig:
    """What was asked of the run; stored with the result so runs can be compared."""

    url: str
    model: str
    mode: Mode
    concurrency: int
    requests: int
    max_tokens: int
    warmup: int
    prompt: str
    timeout_s: float
    extra_body: dict[str, Any] | None = None


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run: its configuration, every measured request and the summary."""

    config: BenchConfig
    records: tuple[RequestRecord, ...]
    summary: BenchSummary


def run_bench(
    url: str,
    *,
    model: str | None = None,
    mode: Mode = "completions",
    concurrency: int = 1,
    requests: int = 8,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 64,
    warmup: int = 1,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    extra_body: dict[str, Any] | None = None,
) -> BenchResult:
    """Benchmark `url`; warm-up failures raise, measured failures are counted.

    Raises a `BenchError` subclass when the server cannot be used at all (unreachable, HTTP
    error or broken stream during warm-up) or when every measured request failed.
    `extra_body` is merged into each request (e.g. `{"ignore_eos": True}` for fixed lengths).
    """
    if concurrency < 1 or requests < 1 or warmup < 0 or max_tokens < 1:
        raise ValueError("concurrency, requests and max_tokens must be >= 1, warmup >= 0")
    if model is None:
        with StreamingClient(url, mode=mode, api_key=api_key, timeout_s=timeout_s) as probe:
            models = probe.list_models()
        if not models:
            raise BenchError(f"{url} lists no model under /v1/models; pass model= explicitly")
        model = models[0]
    config = BenchConfig(
        url=url,
        model=model,
        mode=mode,
        concurrency=concurrency,
        requests=requests,
        max_tokens=max_tokens,
        warmup=warmup,
        prompt=prompt,
        timeout_s=timeout_s,
        extra_body=extra_body,
    )

    def new_client() -> StreamingClient:
        return StreamingClient(url, mode=mode, model=model, api_key=api_key, timeout_s=timeout_s)

    def send(client: StreamingClient) -> RequestRecord:
        return client.stream(prompt, max_tokens=max_tokens, extra_body=extra_body)

    if warmup:
        _closed_loop(new_client, send, warmup, concurrency, raise_errors=True)
    start = time.perf_counter()
    records = _closed_loop(new_client, send, requests, concurrency, raise_errors=False)
    duration = time.perf_counter() - start
    if not any(r.success for r in records):
        raise BenchError(f"all {requests} requests to {url} failed; first: {records[0].error}")
    return BenchResult(config=config, records=tuple(records), summary=summarize(records, duration))


def _closed_loop(
    new_client: Callable[[], StreamingClient],
    send: Callable[[StreamingClient], RequestRecord],
    count: int,
    concurrency: int,
    *,
    raise_errors: bool,
) -> list[RequestRecord]:
    """Run `count` requests on `concurrency` threads, each with its own connection."""
    jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(count):
        jobs.put(index)
    results: list[RequestRecord | None] = [None] * count
    errors: list[Exception] = []

    def worker() -> None:
        with new_client() as client:
            while not errors:
                try:
                    index = jobs.get_nowait()
                except queue.Empty:
                    return
                started = time.perf_counter()
                try:
                    results[index] = send(client)
                except BenchError as exc:
                    if raise_errors:
                        errors.append(exc)
                        return
                    results[index] = RequestRecord(
                        success=False, start_time=started, error=str(exc)
                    )
                except Exception as exc:  # a bug must surface, not vanish with its thread
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, count))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
