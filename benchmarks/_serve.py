"""Serve a model with a llama-server binary, measure it with `llmhost bench`, stop it: shared by
the benchmarks that compare builds (cpu_builds.py) and knobs (served_knobs.py) on the endpoint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

SUMMARY_KEYS = ("output_throughput", "median_ttft_ms", "median_tpot_ms", "p99_itl_ms", "failed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(server: subprocess.Popen, port: int, cmd: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"llama-server exited: {cmd}") from None
            time.sleep(0.5)
    raise SystemExit(f"llama-server not healthy after {timeout_s:.0f} s: {cmd}")


def serve_and_bench(
    server_bin: Path, model: Path, args: list[str], *, requests: int, max_tokens: int,
    env: dict[str, str] | None = None, probe: Callable[[int], dict] | None = None,
) -> dict:  # fmt: skip
    """`llmhost bench --concurrency 1` against llama-server started with `args`; `probe(pid)`
    (what the kernel shows of the running server) is called once the server is healthy."""
    port = free_port()
    cmd = [str(server_bin), "--model", str(model), *args, "--host", "127.0.0.1",
           "--port", str(port)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115 (lives as long as the server)
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=server_bin.parent,
                                  env={**os.environ, **(env or {})})  # fmt: skip
        try:
            _wait_healthy(server, port, cmd, 300)
            seen = probe(server.pid) if probe else {}
            proc = subprocess.run(
                [sys.executable, "-m", "llmhost.cli.main", "bench", "--url",
                 f"http://127.0.0.1:{port}", "--concurrency", "1", "--requests", str(requests),
                 "--max-tokens", str(max_tokens), "--json", "--out", tmp],
                capture_output=True, text=True,
            )  # fmt: skip
            if not proc.stdout.strip():
                raise SystemExit(f"llmhost bench failed: {proc.stderr[-1500:]}")
            summary = json.loads(proc.stdout)["runs"][0]["summary"]
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    return {**{k: summary.get(k) for k in SUMMARY_KEYS}, **seen}
