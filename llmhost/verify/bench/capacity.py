"""How many streamed tokens/s the bench client itself can absorb.

A loopback-only SSE server in this process answers /v1/completions with llama-server-shaped
chunks as fast as it can; `run_bench` against it gives the client's ceiling. The server
shares the interpreter (and the GIL) with the client, so the figure is a lower bound: a real
server whose output rate comes near it would need a second look.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmhost.verify.bench.runner import BenchResult, run_bench

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ClientCapacity:
    """Streamed output tokens/s the client sustained against the instant server."""

    tokens_per_s: float
    requests_per_s: float
    concurrency: int
    requests: int
    tokens_per_request: int
    mean_itl_ms: float


def _event(payload: object) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk, so connections stay alive as with llama-server."""
    return b"%x\r\n%s\r\n" % (len(data), data)


_TOKEN = _chunk(
    _event(
        {
            "choices": [{"text": " tok", "index": 0, "logprobs": None, "finish_reason": None}],
            "object": "text_completion",
            "model": "capacity",
        }
    )
)


class _InstantSSEHandler(BaseHTTPRequestHandler):
    """Streams `max_tokens` token chunks, a usage chunk and `[DONE]`, with no delay."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "capacity"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        tokens = int(request.get("max_tokens", 16))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(tokens):
            self.wfile.write(_TOKEN)
        usage = {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": tokens + 1}
        final = {"choices": [{"text": "", "index": 0, "finish_reason": "length"}], "usage": usage}
        self.wfile.write(_chunk(_event(final)) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


@contextmanager
def instant_sse_server() -> Iterator[str]:
    """Serve on an ephemeral 127.0.0.1 port; yields the base URL."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _InstantSSEHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def measure_client_capacity(
    *, tokens_per_request: int = 2000, requests: int = 8, concurrency: int = 4
) -> ClientCapacity:
    """Run the real client, runner and metrics against the instant server."""
    with instant_sse_server() as url:
        result: BenchResult = run_bench(
            url,
            model="capacity",
            concurrency=concurrency,
            requests=requests,
            max_tokens=tokens_per_request,
            warmup=1,
            timeout_s=60.0,
        )
    summary = result.summary
    return ClientCapacity(
        tokens_per_s=summary.output_throughput,
        requests_per_s=summary.request_throughput,
        concurrency=concurrency,
        requests=requests,
        tokens_per_request=tokens_per_request,
        mean_itl_ms=summary.itl.mean_ms,
    )
