"""`llmhost status`'s live numbers: llama-server's and vLLM's /metrics (and /slots) read over
HTTP from a server the test runs, tokens/s from two readings, errors as data."""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import replace

import pytest

from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config
from llmhost.plan.planner import make_plan
from llmhost.plan.services import METRICS, VLLM
from llmhost.verify.live import Sample, live, parse_prometheus, read_live
from tests.support import FIXTURES, H100_SNAPSHOT

LLAMA_METRICS = """# HELP llamacpp:tokens_predicted_total Number of generation tokens processed
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total {tokens}
llamacpp:requests_processing 2
llamacpp:requests_deferred 1
"""
VLLM_METRICS = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="m"}} 7
vllm:num_requests_waiting{{engine="0",model_name="m"}} 0
vllm:generation_tokens_total{{engine="0",model_name="m"}} {tokens}
vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} 0.25
"""
SLOTS = [
    {"id": 0, "n_ctx": 1000, "is_processing": True, "n_prompt_tokens": 300,
     "next_token": [{"n_decoded": 100}]},
    {"id": 1, "n_ctx": 1000, "is_processing": False},
]  # fmt: skip


class Server:
    """/metrics with a counter that grows by 50 per reading, /slots, and an API key."""

    def __init__(self, text: str, key: str | None = None) -> None:
        outer, self.tokens = self, 1000

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                if key and self.headers.get("Authorization") != f"Bearer {key}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.path == "/metrics":
                    outer.tokens += 50
                    body = text.format(tokens=outer.tokens).encode()
                elif self.path == "/slots":
                    body = json.dumps(SLOTS).encode()
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def services():
    plan = make_plan(gather(SnapshotSource(H100_SNAPSHOT)), Config(), "all")
    return {s.name: s for s in plan.services}


def test_prometheus_text_with_labels_and_comments():
    values = parse_prometheus(VLLM_METRICS.format(tokens=12) + "garbage line\n")
    assert values["vllm:num_requests_running"] == 7 and values["vllm:generation_tokens_total"] == 12


@pytest.mark.parametrize(("name", "text", "kv"), [("llama-gpu", LLAMA_METRICS, 20.0),
                                                  ("vllm-gpu", VLLM_METRICS, 25.0)])  # fmt: skip
def test_two_readings_give_tokens_per_second(services, name, text, kv):
    server = Server(text, key="k" * 32)
    try:
        svc = replace(services[name], port=server.port, bind_address="127.0.0.1")
        first, readings = read_live((svc,), "k" * 32, {})
        assert first[name].tokens_per_s is None and first[name].error is None  # one reading
        second, _ = read_live((svc,), "k" * 32, readings)
    finally:
        server.close()
    now = second[name]
    assert now.tokens_total == 1100 and now.tokens_per_s > 0
    assert now.kv_used_pct == pytest.approx(kv)  # llama: (300 + 100) of 2000 slot tokens
    assert now.running == (2 if name == "llama-gpu" else 7) and now.slots


def test_real_vllm_metrics_with_four_api_servers(services):
    """vLLM 0.26's /metrics from the H200 run, 4 API servers (Prometheus multi-process mode),
    read after its sweeps: one series per name, the engine's own totals."""
    text = (FIXTURES / "device" / "vllm-0.26-metrics-4-api-servers.txt").read_text()
    metrics = parse_prometheus(text)
    names = METRICS[VLLM]
    assert {names.running, names.waiting, names.tokens_total, names.kv_used} <= set(metrics)
    row = live(services["vllm-gpu"], None, Sample(1.0, metrics, metrics[names.kv_used]))
    assert row.running == 0 and row.waiting == 0 and row.kv_used_pct == 0.0
    assert row.tokens_total == 33011.0  # 4 sweeps x 64 requests x 128 tokens, and warm-ups


def test_rate_is_the_counters_difference_over_time(services):
    svc = services["llama-gpu"]
    before = Sample(10.0, {"llamacpp:tokens_predicted_total": 100.0}, None)
    after = Sample(12.0, {"llamacpp:tokens_predicted_total": 700.0}, 0.5)
    assert live(svc, before, after).tokens_per_s == 300.0
    restarted = Sample(13.0, {"llamacpp:tokens_predicted_total": 5.0}, None)
    assert live(svc, after, restarted).tokens_per_s is None  # a server restart resets it


def test_unreachable_or_refused_server_is_data_not_a_crash(services):
    server = Server(LLAMA_METRICS, key="k" * 32)
    svc = replace(services["llama-gpu"], port=server.port, bind_address="127.0.0.1")
    try:
        refused, _ = read_live((svc,), None, {})  # no key: 401
    finally:
        server.close()
    assert refused["llama-gpu"].error and refused["llama-gpu"].running is None
    gone, _ = read_live((svc,), None, {})
    assert gone["llama-gpu"].error
