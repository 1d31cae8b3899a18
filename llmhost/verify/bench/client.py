"""Streaming OpenAI-compatible client that times one request the way `vllm bench serve` does.

Timing follows vllm-project/vllm `vllm/benchmarks/lib/endpoint_request_func.py`
(commit 02cfb534df5674737558730b10f23d1b7aef9b7c), functions
`async_request_openai_completions` and `async_request_openai_chat_completions`:

- the clock starts just before the request is sent (`st = time.perf_counter()`);
- every SSE data message whose `choices` list is non-empty is a token chunk, even when its
  text is empty (a chat role delta, a final `finish_reason` chunk);
- TTFT = first token chunk - start; ITL = gaps between successive token chunks;
- latency (E2EL) = last token chunk - start (the trailing usage chunk carries no token);
- output tokens = `usage.completion_tokens`, requested with `stream_options.include_usage`.

Two deliberate differences, both about robustness rather than timing: `usage` is read from
any chunk that carries it (llama-server puts it on the last `choices` chunk of
/v1/completions, which vLLM's `elif` would skip), and a stream must end with `data: [DONE]`,
so a server that dies mid-generation is an error instead of a short, "successful" request.

Standard library only: one keep-alive `http.client` connection per client, one client per
worker thread.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from llmhost.errors import LlmhostError

Mode = Literal["completions", "chat"]
ENDPOINTS: dict[str, str] = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
DEFAULT_TIMEOUT_S = 300.0
_READ_SIZE = 64 * 1024
_DRAIN_TIMEOUT_S = 2.0
_ERROR_BODY_LIMIT = 64 * 1024
_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class BenchError(LlmhostError):
    """A benchmark request could not be made or did not complete."""


class ServerUnreachable(BenchError):
    """No TCP connection: refused, unknown host, or connect timed out."""


class HTTPStatusError(BenchError):
    """The server answered with a non-200 status; `message` is its error text."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {message}")
        self.status = status
        self.message = message


class StreamError(BenchError):
    """The stream broke: an error event, a cut connection, or no `[DONE]`."""


class RequestTimeout(BenchError):
    """The request did not finish within its time limit."""


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched server-sent event."""

    data: str
    event: str = "message"


@dataclass(frozen=True)
class RequestRecord:
    """Timings of one request, as vLLM's `RequestFuncOutput` holds them (seconds)."""

    success: bool
    start_time: float
    ttft_s: float = 0.0
    itl_s: tuple[float, ...] = ()
    latency_s: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    usage_reported: bool = False
    token_chunks: int = 0
    text: str = ""
    server_timings: dict[str, float] | None = field(default=None, compare=False)
    error: str = ""


class SSEDecoder:
    """Incremental text/event-stream parser (WHATWG rules: `data:` lines, blank-line dispatch)."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        events: list[SSEEvent] = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8")
            if not line:
                if self._data:
                    events.append(SSEEvent("\n".join(self._data), self._event or "message"))
                self._data, self._event = [], ""
                continue
            if line.startswith(":"):
                continue  # comment, used as keep-alive ping
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return events


@dataclass
class _StreamState:
    start: float
    ttft_s: float | None = None
    last: float = 0.0
    itl: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    done: bool = False


class StreamingClient:
    """Sends streaming requests to one OpenAI-compatible server; not thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        mode: Mode = "completions",
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if mode not in ENDPOINTS:
            raise ValueError(f"mode must be one of {sorted(ENDPOINTS)}, got {mode!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL must look like http://host:port, got {url!r}")
        self.url = url
        self.mode: Mode = mode
        self.model = model
        self.timeout_s = timeout_s
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/").removesuffix("/v1")
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = False

    def __enter__(self) -> StreamingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._conn_used = None, False

    def list_models(self) -> list[str]:
        """Model ids from /v1/models, the way vLLM picks a default model."""
        resp, _ = self._send("GET", "/v1/models", None, time.perf_counter() + self.timeout_s)
        try:
            payload = json.loads(resp.read())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise BenchError(f"{self._full('/v1/models')} returned no model list: {exc}") from exc
        return [str(m["id"]) for m in payload.get("data", []) if "id" in m]

    def stream(
        self, prompt: str, *, max_tokens: int, extra_body: dict[str, Any] | None = None
    ) -> RequestRecord:
        """Send one streaming request and time it; raises a `BenchError` subclass on failure."""
        path = ENDPOINTS[self.mode]
        body = json.dumps(self._payload(prompt, max_tokens, extra_body)).encode()
        deadline = time.perf_counter() + self.timeout_s
        resp, start = self._send("POST", path, body, deadline)
        state = _StreamState(start=start, last=start)
        try:
            self._consume(resp, state, deadline)
        except BaseException:
            self.close()
            raise
        return self._record(state)

    def _payload(
        self, prompt: str, max_tokens: int, extra_body: dict[str, Any] | None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model or "default",
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.mode == "chat":
            payload["messages"] = [{"role": "user", "content": prompt}]
        else:
            payload["prompt"] = prompt
        payload.update(extra_body or {})
        return payload

    def _full(self, path: str) -> str:
        port = f":{self._port}" if self._port else ""
        return f"{self._scheme}://{self._host}{port}{self._prefix}{path}"

    def _connection(self) -> http.client.HTTPConnection:
        sock = self._conn.sock if self._conn is not None else None
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.close()  # an idle keep-alive socket that reads as ready was closed by the server
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self._scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self._host, self._port, timeout=self.timeout_s)
            self._conn_used = False
        return self._conn

    def _send(
        self, method: str, path: str, body: bytes | None, deadline: float
    ) -> tuple[http.client.HTTPResponse, float]:
        """Send, read the status line, return the response and when the request was sent.

        A keep-alive connection the server dropped is retried once on a fresh one; the clock
        restarts then, so the failed attempt does not count against TTFT.
        """
        url = self._full(path)
        for attempt in (1, 2):
            conn = self._connection()
            reused = self._conn_used
            sent_at = time.perf_counter()
            conn.timeout = max(deadline - sent_at, 0.001)
            if conn.sock is None:
                self._connect(conn, url)
            try:
                conn.request(method, self._prefix + path, body=body, headers=self._headers)
                if conn.sock is not None:
                    conn.sock.settimeout(max(deadline - time.perf_counter(), 0.001))
                resp = conn.getresponse()
            except _STALE_CONNECTION as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise StreamError(f"{url}: connection closed before a response: {exc}") from exc
            except TimeoutError as exc:
                self.close()
                raise RequestTimeout(f"{url}: no response within {self.timeout_s:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise StreamError(f"{url}: request failed before a response: {exc!r}") from exc
            self._conn_used = True
            if resp.status != 200:
                message = _error_message(resp)
                self.close()
                raise HTTPStatusError(resp.status, message, url)
            return resp, sent_at
        raise AssertionError("unreachable")

    def _connect(self, conn: http.client.HTTPConnection, url: str) -> None:
        try:
            conn.connect()
        except ConnectionRefusedError as exc:
            self.close()
            raise ServerUnreachable(
                f"cannot connect to {url}: connection refused (is the server running?)"
            ) from exc
        except OSError as exc:  # unknown host, unreachable network, connect timeout
            self.close()
            raise ServerUnreachable(f"cannot connect to {url}: {exc}") from exc

    def _consume(
        self, resp: http.client.HTTPResponse, state: _StreamState, deadline: float
    ) -> None:
        decoder = SSEDecoder()
        url = self._full(ENDPOINTS[self.mode])
        sock = self._conn.sock if self._conn is not None else None
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise RequestTimeout(f"{url}: stream not finished within {self.timeout_s:g} s")
            if sock is not None:
                sock.settimeout(remaining)
            try:
                data = resp.read1(_READ_SIZE)
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"{url}: stream not finished within {self.timeout_s:g} s"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                raise StreamError(
                    f"{url}: connection lost after {len(state.itl) + (state.ttft_s is not None)}"
                    f" token chunks: {exc!r}"
                ) from exc
            if not data:
                break
            now = time.perf_counter()
            for event in decoder.feed(data):
                _apply(event, state, now, url)
                if state.done:
                    break
            if state.done:
                self._drain(resp, sock)
                break
        if not state.done:
            got = len(state.itl) + (state.ttft_s is not None)
            raise StreamError(f"{url}: stream ended before 'data: [DONE]' after {got} token chunks")
        if state.ttft_s is None:
            raise StreamError(f"{url}: stream finished without a single token chunk")

    def _drain(self, resp: http.client.HTTPResponse, sock: socket.socket | None) -> None:
        """Read what follows `[DONE]` so the connection can be reused; else drop it."""
        try:
            if sock is not None:
                sock.settimeout(_DRAIN_TIMEOUT_S)
            while resp.read1(_READ_SIZE):
                pass
        except (OSError, http.client.HTTPException):
            self.close()
            return
        if not resp.isclosed():
            self.close()

    def _record(self, state: _StreamState) -> RequestRecord:
        usage = state.usage or {}
        completion = usage.get("completion_tokens")
        chunks = len(state.itl) + 1
        return RequestRecord(
            success=True,
            start_time=state.start,
            ttft_s=state.ttft_s or 0.0,
            itl_s=tuple(state.itl),
            latency_s=state.last - state.start,
            output_tokens=int(completion) if completion else chunks,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            usage_reported=bool(completion),
            token_chunks=chunks,
            text="".join(state.text),
            server_timings=state.timings,
        )


def _apply(event: SSEEvent, state: _StreamState, now: float, url: str) -> None:
    """Fold one SSE event into the request state, timing token chunks as vLLM does."""
    if event.data == "[DONE]":
        state.done = True
        return
    try:
        chunk = json.loads(event.data)
    except ValueError as exc:
        raise StreamError(f"{url}: stream sent invalid JSON: {event.data[:200]!r}") from exc
    if event.event == "error" or not isinstance(chunk, dict):
        raise StreamError(f"{url}: server error mid-stream: {event.data[:500]}")
    if "error" in chunk or chunk.get("object") == "error":
        raise StreamError(f"{url}: server error mid-stream: {_describe_error(chunk)}")
    if choices := chunk.get("choices"):
        if state.ttft_s is None:
            state.ttft_s = now - state.start
        else:
            state.itl.append(now - state.last)
        state.last = now
        first = choices[0]
        piece = first.get("text") if "text" in first else (first.get("delta") or {}).get("content")
        if piece:
            state.text.append(piece)
    if usage := chunk.get("usage"):
        state.usage = usage
    if timings := chunk.get("timings"):
        state.timings = timings


def _describe_error(payload: Any) -> str:
    """The human part of an OpenAI-style, llama-server or vLLM error body."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return json.dumps(payload)[:500]


def _error_message(resp: http.client.HTTPResponse) -> str:
    try:
        raw = resp.read(_ERROR_BODY_LIMIT)
    except (OSError, http.client.HTTPException):
        return resp.reason or "no body"
    try:
        return _describe_error(json.loads(raw))
    except ValueError:
        return raw.decode("utf-8", "replace").strip()[:500] or (resp.reason or "no body")
