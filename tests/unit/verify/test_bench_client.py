"""Bench client: SSE parsing (unit), and end to end against a real llama-server.

The end-to-end tests need a llama-server binary in $LLMHOST_LLAMA_SERVER and a model: the GGUF
in $LLMHOST_BENCH_GGUF, else the synthetic tiny model of tests/e2e/infra.py. Without them they
skip; the main CI benches the Docker container instead.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmhost.verify.bench import (
    BenchError,
    HTTPStatusError,
    RequestTimeout,
    ServerUnreachable,
    StreamError,
    StreamingClient,
    run_bench,
)
from llmhost.verify.bench.capacity import measure_client_capacity
from llmhost.verify.bench.client import SSEDecoder, SSEEvent, _apply, _StreamState
from llmhost.verify.bench.metrics import tpot_s
from tests.support import REPO

LLAMA_SERVER_ENV = "LLMHOST_LLAMA_SERVER"
MODEL_ENV = "LLMHOST_BENCH_GGUF"
API_KEY = "llmhost-bench-key"
FIXED_LENGTH = {"ignore_eos": True}  # random weights may sample EOS; lengths must be exact

# Client TPOT spans first -> last token chunk *received*; llama-server's predicted_per_token_ms
# spans first -> last token *sampled* (server-common.h, server_slot_stats::t_gen_per_token_ms),
# over the same n - 1 steps. The two spans differ only by the difference of two loopback
# deliveries (JSON encoding, one send, a Python thread waking): the median difference is
# 0.1-0.2 ms. So the *median* over a run's requests must agree within 15 ms plus 5 % of the span
# (timer granularity). A single request may lose scheduler slices at one end: on a 2-core runner
# oversubscribed by parallel compiles one reached 7.9 ms, and in CI, beside the background guest
# image build, a first chunk of a concurrent request arrived 36 ms late. Each request therefore
# only has to stay within a few slices (SPAN_OUTLIER_MS) and inside the hard bounds that no
# scheduling can break: TTFT covers the server's prompt time, E2EL its prompt plus generation.
SPAN_ABS_TOL_MS = 15.0
SPAN_REL_TOL = 0.05
SPAN_OUTLIER_MS = 150.0


def span_tolerance_ms(server_span_ms: float) -> float:
    return SPAN_ABS_TOL_MS + SPAN_REL_TOL * server_span_ms


# --- SSE parsing (pure) -----------------------------------------------------------------------

LLAMA_COMPLETION_STREAM = (
    b'data: {"choices":[{"text":" main","index":0,"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"text":"\xe3\x82\xb4","index":0,"finish_reason":null}]}\n\n'
    b": ping\n\n"
    b'data: {"choices":[{"text":"","index":0,"finish_reason":"length"}],'
    b'"usage":{"completion_tokens":2,"prompt_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


@pytest.mark.parametrize(
    "split",
    [
        pytest.param(lambda b: [b], id="whole"),
        pytest.param(lambda b: [b[i : i + 1] for i in range(len(b))], id="byte-by-byte"),
        pytest.param(lambda b: [b[i : i + 7] for i in range(0, len(b), 7)], id="7-byte-reads"),
        pytest.param(lambda b: [b.replace(b"\n", b"\r\n")], id="crlf"),
    ],
)
def test_sse_decoder_is_independent_of_read_boundaries(split) -> None:
    events = decode(split(LLAMA_COMPLETION_STREAM))
    assert [e.data for e in events] == [
        '{"choices":[{"text":" main","index":0,"finish_reason":null}]}',
        '{"choices":[{"text":"ゴ","index":0,"finish_reason":null}]}',
        '{"choices":[{"text":"","index":0,"finish_reason":"length"}],'
        '"usage":{"completion_tokens":2,"prompt_tokens":3}}',
        "[DONE]",
    ]


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: a\ndata: b\n\n", [SSEEvent("a\nb")]),
        (b"data:no-space\n\n", [SSEEvent("no-space")]),
        (b"event: error\ndata: {}\n\n", [SSEEvent("{}", "error")]),
        (b":\n\n:comment\n\n", []),
        (b"id: 7\nretry: 10\n\n", []),
        (b"data: unterminated", []),
    ],
)
def test_sse_decoder_follows_the_event_stream_rules(
    stream: bytes, expected: list[SSEEvent]
) -> None:
    assert decode([stream]) == expected


def fold(*events: SSEEvent) -> _StreamState:
    state = _StreamState(start=0.0)
    for now, event in enumerate(events, start=1):
        _apply(event, state, float(now), "http://x/v1/completions")
    return state


def test_token_chunks_are_timed_like_vllm() -> None:
    state = fold(*decode([LLAMA_COMPLETION_STREAM]))
    assert state.done
    assert state.ttft_s == 1.0
    assert state.itl == [1.0, 1.0]  # the empty finish_reason chunk counts, as in vLLM
    assert state.last == 3.0
    assert state.usage == {"completion_tokens": 2, "prompt_tokens": 3}
    assert "".join(state.text) == " mainゴ"


def test_chat_role_delta_starts_the_clock_like_vllm() -> None:
    state = fold(
        SSEEvent('{"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}'),
        SSEEvent('{"choices":[{"index":0,"delta":{"content":"Hi"}}]}'),
        SSEEvent('{"choices":[],"usage":{"completion_tokens":1,"prompt_tokens":5}}'),
    )
    assert state.ttft_s == 1.0
    assert state.itl == [1.0]
    assert state.last == 2.0  # the usage chunk carries no token
    assert "".join(state.text) == "Hi"


@pytest.mark.parametrize(
    "event",
    [
        # llama-server, tools/server/server-context.cpp: format_oai_sse(json {{"error", ...}})
        SSEEvent('{"error":{"code":500,"message":"boom mid-stream","type":"server_error"}}'),
        SSEEvent('{"object":"error","message":"boom mid-stream","code":500}'),  # vLLM
        SSEEvent('{"message":"boom mid-stream"}', event="error"),
    ],
)
def test_error_event_mid_stream_raises(event: SSEEvent) -> None:
    with pytest.raises(StreamError, match="boom mid-stream"):
        fold(SSEEvent('{"choices":[{"text":"a"}]}'), event)


def test_invalid_json_raises_stream_error() -> None:
    with pytest.raises(StreamError, match="invalid JSON"):
        fold(SSEEvent("{not json"))


# --- errors that need no server -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable, match="connection refused"):
        StreamingClient(url, model="m").stream("hi", max_tokens=4)
    with pytest.raises(ServerUnreachable):
        run_bench(url, model="m", requests=2, warmup=1)
    with pytest.raises(BenchError, match="all 2 requests"):
        run_bench(url, model="m", requests=2, warmup=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "127.0.0.1:8080"}, "http://host:port"),
        ({"url": "http://127.0.0.1:1", "mode": "embeddings"}, "mode must be"),
        ({"url": "http://127.0.0.1:1", "timeout_s": 0}, "timeout_s"),
    ],
)
def test_client_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    url = kwargs.pop("url")
    with pytest.raises(ValueError, match=message):
        StreamingClient(url, **kwargs)


def test_client_capacity_is_far_above_any_inference_server() -> None:
    """Self-measurement against an instant loopback SSE server (not an e2e stand-in)."""
    capacity = measure_client_capacity(tokens_per_request=1000, requests=4, concurrency=2)
    assert capacity.tokens_per_s > 5000


# --- end to end against a real llama-server ---------------------------------------------------


def llama_server_binary() -> Path:
    value = os.environ.get(LLAMA_SERVER_ENV)
    if not value and os.environ.get("LLMHOST_E2E") == "1":
        from tests.e2e import infra  # CI: the binary from the product image built in this run

        value = str(infra.ensure_llama_server_binary())
    if not value:
        pytest.skip(f"set {LLAMA_SERVER_ENV} to a llama-server binary to run bench e2e tests")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"{LLAMA_SERVER_ENV}={value} is not an executable file")
    return path


def tiny_model() -> Path:
    if value := os.environ.get(MODEL_ENV):
        if not Path(value).is_file():
            pytest.skip(f"{MODEL_ENV}={value} is not a file")
        return Path(value)
    infra_path = REPO / "tests" / "e2e" / "infra.py"
    spec = importlib.util.spec_from_file_location("llmhost_e2e_infra", infra_path)
    if spec is None or spec.loader is None:
        pytest.skip(f"no model: set {MODEL_ENV} (cannot load {infra_path})")
    try:
        infra = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
        if spec.name not in sys.modules:
            sys.modules[spec.name] = infra  # dataclasses resolve annotations through it
            spec.loader.exec_module(infra)
        return infra.ensure_tiny_gguf()
    except (ImportError, OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        pytest.skip(
            f"no model: set {MODEL_ENV} or make tests/e2e/infra.ensure_tiny_gguf work ({exc})"
        )


@contextmanager
def llama_server(binary: Path, model: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    server_args = ["--host", "127.0.0.1", "-c", "4096", "-np", "2", "-t", "2", "--metrics"]
    cmd = [str(binary), "-m", str(model), *server_args, "--port", str(port), "--api-key", API_KEY]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama-server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama-server not healthy after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary, model = llama_server_binary(), tiny_model()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llama_server(binary, model, log) as (url, _):
        yield url


def tokens_predicted_total(url: str) -> float:
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        text = resp.read().decode()
    match = re.search(r"^llamacpp:tokens_predicted_total\s+(\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def assert_agrees_with_server_timings(records, max_tokens: int) -> None:
    """The client's spans match llama-server's own timings: each within scheduling noise and
    the hard bounds, the median within delivery noise."""
    assert records
    gaps, tpot_gaps, steps = [], [], max_tokens - 1
    for record in records:
        timings = record.server_timings
        assert timings is not None, "llama-server sends `timings` with the last chunk"
        assert record.usage_reported
        assert record.output_tokens == timings["predicted_n"] == max_tokens
        client_span_ms = (record.latency_s - record.ttft_s) * 1000
        server_span_ms = timings["predicted_ms"]
        gap = abs(client_span_ms - server_span_ms)
        assert gap <= SPAN_OUTLIER_MS + SPAN_REL_TOL * server_span_ms, (record, timings)
        gaps.append(gap - span_tolerance_ms(server_span_ms))
        tpot_gaps.append(
            abs(tpot_s(record) * 1000 - timings["predicted_per_token_ms"])
            - span_tolerance_ms(server_span_ms) / steps
        )
        # TTFT includes the server's prompt processing; E2EL includes prompt and generation.
        assert record.ttft_s * 1000 >= timings["prompt_ms"]
        assert record.latency_s * 1000 >= timings["prompt_ms"] + timings["predicted_ms"]
    assert statistics.median(gaps) <= 0, gaps  # median gap within its tolerance
    assert statistics.median(tpot_gaps) <= 0, tpot_gaps


@pytest.mark.e2e
def test_completions_bench_agrees_with_llama_server_timings(server: str) -> None:
    max_tokens = 48
    result = run_bench(
        server,
        mode="completions",
        requests=6,
        max_tokens=max_tokens,
        api_key=API_KEY,
        extra_body=FIXED_LENGTH,
    )
    assert result.config.model  # taken from /v1/models
    assert (result.summary.completed, result.summary.failed) == (6, 0)
    assert result.summary.total_output_tokens == 6 * max_tokens
    assert_agrees_with_server_timings(result.records, max_tokens)
    mean_server_tpot = sum(r.server_timings["predicted_per_token_ms"] for r in result.records) / 6
    steps = max_tokens - 1
    assert result.summary.tpot.mean_ms == pytest.approx(
        mean_server_tpot, abs=span_tolerance_ms(mean_server_tpot * steps) / steps
    )


@pytest.mark.e2e
def test_chat_bench_with_concurrency_agrees_with_llama_server_timings(server: str) -> None:
    max_tokens = 32
    result = run_bench(
        server,
        mode="chat",
        concurrency=2,
        requests=6,
        max_tokens=max_tokens,
        api_key=API_KEY,
        extra_body=FIXED_LENGTH,
    )
    assert (result.summary.completed, result.summary.failed) == (6, 0)
    assert_agrees_with_server_timings(result.records, max_tokens)
    starts = sorted(r.start_time for r in result.records)
    assert starts[1] - starts[0] < result.records[0].latency_s  # two ran side by side


@pytest.mark.e2e
def test_warmup_requests_reach_the_server_but_not_the_stats(server: str) -> None:
    before = tokens_predicted_total(server)
    result = run_bench(
        server, requests=3, warmup=2, max_tokens=8, api_key=API_KEY, extra_body=FIXED_LENGTH
    )
    assert len(result.records) == 3
    assert result.summary.total_output_tokens == 3 * 8
    deadline = time.monotonic() + 5  # the server updates its counters after the last chunk
    while tokens_predicted_total(server) - before < 5 * 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tokens_predicted_total(server) - before == 5 * 8


@pytest.mark.e2e
def test_one_client_streams_again_after_the_server_closed_its_connection(server: str) -> None:
    # llama-server closes the connection after each stream despite its Keep-Alive header
    with StreamingClient(server, model="m", api_key=API_KEY) as client:
        records = [client.stream(str(i), max_tokens=4, extra_body=FIXED_LENGTH) for i in range(3)]
    assert [r.output_tokens for r in records] == [4, 4, 4]


@pytest.mark.e2e
def test_http_error_carries_status_and_server_message(server: str) -> None:
    with pytest.raises(HTTPStatusError, match="HTTP 401: Invalid API Key") as info:
        StreamingClient(server, model="m", api_key="wrong").stream("hi", max_tokens=4)
    assert info.value.status == 401
    with pytest.raises(HTTPStatusError, match="401"):
        run_bench(server, requests=1)  # no key: /v1/models is refused too


@pytest.mark.e2e
def test_slow_stream_times_out(server: str) -> None:
    client = StreamingClient(server, model="m", api_key=API_KEY, timeout_s=0.3)
    with pytest.raises(RequestTimeout, match=r"0\.3 s"):
        client.stream("hi", max_tokens=3000, extra_body=FIXED_LENGTH)


@pytest.mark.e2e
def test_server_dying_mid_stream_is_a_stream_error(tmp_path: Path) -> None:
    binary, model = llama_server_binary(), tiny_model()
    with llama_server(binary, model, tmp_path / "server.log") as (url, proc):
        client = StreamingClient(url, model="m", api_key=API_KEY, timeout_s=60)
        client.stream("warm", max_tokens=2)
        killer = threading.Timer(1.0, proc.kill)
        killer.start()
        try:
            with pytest.raises(StreamError, match=r"connection lost|before 'data: \[DONE\]'"):
                client.stream("hi", max_tokens=20000, extra_body=FIXED_LENGTH)
        finally:
            killer.cancel()
