"""Bench metrics, comparison and gates on hand-computed timelines (vLLM definitions)."""

from __future__ import annotations

import json
import math

import pytest

from llmhost.plan.targets import parse_target
from llmhost.verify.bench.client import RequestRecord
from llmhost.verify.bench.metrics import distribution, percentile, summarize, tpot_s
from llmhost.verify.bench.report import compare, gate, summary_dict, to_dict
from llmhost.verify.bench.runner import BenchConfig, BenchResult


def ok(
    ttft: float,
    itl: tuple[float, ...] = (),
    tokens: int | None = None,
    prompt: int = 0,
    start: float = 0.0,
) -> RequestRecord:
    """A successful request whose latency is ttft + sum(itl), as a stream produces it."""
    return RequestRecord(
        success=True,
        start_time=start,
        ttft_s=ttft,
        itl_s=itl,
        latency_s=ttft + sum(itl),
        output_tokens=len(itl) + 1 if tokens is None else tokens,
        prompt_tokens=prompt,
        usage_reported=tokens is not None,
        token_chunks=len(itl) + 1,
    )


FAILED = RequestRecord(success=False, start_time=0.0, error="HTTP 500")


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([1.0, 2.0, 3.0, 4.0], 90, 3.7),  # rank 0.9 * 3 = 2.7 -> 3 + 0.7 * (4 - 3)
        ([1.0, 2.0, 3.0, 4.0], 99, 3.97),
        ([4.0, 1.0, 3.0, 2.0], 90, 3.7),  # order of input does not matter
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([10.0, 20.0], 90, 19.0),
        ([5.0], 99, 5.0),
        ([1.0, 1.0, 1.0, 100.0], 50, 1.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90, 9.1),
    ],
)
def test_percentile_linear_interpolation(values: list[float], p: float, expected: float) -> None:
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    values = [0.013, 0.52, 0.0071, 1.9, 0.33, 0.33, 0.048, 2.6, 0.9]
    for p in (0, 1, 25, 50, 75, 90, 95, 99, 99.9, 100):
        assert percentile(values, p) == pytest.approx(float(np.percentile(values, p)))


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], 101), ([1.0], -1)])
def test_percentile_refuses_bad_input(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


def test_distribution_is_in_ms_with_population_std() -> None:
    dist = distribution([0.1, 0.3])
    assert dist.mean_ms == pytest.approx(200.0)
    assert dist.median_ms == pytest.approx(200.0)
    assert dist.std_ms == pytest.approx(100.0)  # np.std, ddof=0
    assert dist.percentile(90) == pytest.approx(280.0)
    assert dist.percentile(99) == pytest.approx(298.0)


def test_distribution_of_nothing_is_zero_like_vllm() -> None:
    dist = distribution([])
    assert (dist.mean_ms, dist.median_ms, dist.std_ms) == (0.0, 0.0, 0.0)
    assert dict(dist.percentiles_ms) == {90: 0.0, 99: 0.0}


@pytest.mark.parametrize(
    ("record", "expected_s"),
    [
        # chunks at 0.5, 0.6, 0.75, 0.8 s: (0.8 - 0.5) / (4 - 1)
        (ok(0.5, (0.1, 0.15, 0.05)), 0.1),
        # usage says 7 tokens in 4 chunks (tokens bundled): (0.8 - 0.5) / (7 - 1)
        (ok(0.5, (0.1, 0.15, 0.05), tokens=7), 0.05),
        (ok(0.2, (0.1,), tokens=2), 0.1),
        (ok(0.25, tokens=1), None),  # one token: no TPOT
        (ok(0.25, (0.0,), tokens=1), None),  # a trailing empty chunk does not make a second token
    ],
)
def test_tpot(record: RequestRecord, expected_s: float | None) -> None:
    result = tpot_s(record)
    if expected_s is None:
        assert result is None
    else:
        assert result == pytest.approx(expected_s)


def test_summary_of_hand_computed_timeline() -> None:
    records = [
        ok(0.5, (0.1, 0.15, 0.05), tokens=4, prompt=10, start=0.0),  # tpot 0.1, e2el 0.8
        ok(0.3, (0.2,), tokens=2, prompt=10, start=0.1),  # tpot 0.2, e2el 0.5
        ok(0.7, tokens=1, prompt=10, start=0.2),  # no tpot, no itl, e2el 0.7
        FAILED,
    ]
    s = summarize(records, duration_s=2.0)
    assert (s.completed, s.failed) == (3, 1)
    assert (s.total_input_tokens, s.total_output_tokens) == (30, 7)
    assert s.request_throughput == pytest.approx(1.5)
    assert s.output_throughput == pytest.approx(3.5)
    assert s.total_token_throughput == pytest.approx(18.5)
    assert s.ttft.mean_ms == pytest.approx(500.0)
    assert s.ttft.median_ms == pytest.approx(500.0)
    assert s.ttft.percentile(90) == pytest.approx(660.0)  # [300, 500, 700], rank 1.8
    # TPOT only over requests with more than one token: [100, 200] ms
    assert s.tpot.mean_ms == pytest.approx(150.0)
    assert s.tpot.percentile(99) == pytest.approx(199.0)
    # ITLs pooled over requests: [100, 150, 50, 200] ms
    assert s.itl.mean_ms == pytest.approx(125.0)
    assert s.itl.median_ms == pytest.approx(125.0)
    assert s.itl.percentile(90) == pytest.approx(185.0)  # sorted [50,100,150,200], rank 2.7
    assert s.e2el.mean_ms == pytest.approx((800 + 500 + 700) / 3)
    assert s.e2el.std_ms == pytest.approx(
        math.sqrt(((800 - 2000 / 3) ** 2 + (500 - 2000 / 3) ** 2 + (700 - 2000 / 3) ** 2) / 3)
    )


def test_summary_of_single_token_requests_has_zero_tpot_and_itl() -> None:
    s = summarize([ok(0.1, tokens=1), ok(0.3, tokens=1)], duration_s=0.5)
    assert s.tpot.mean_ms == 0.0
    assert s.itl.mean_ms == 0.0
    assert s.ttft.mean_ms == pytest.approx(200.0)
    assert s.output_throughput == pytest.approx(4.0)


def test_summary_when_everything_failed() -> None:
    s = summarize([FAILED, FAILED], duration_s=1.0)
    assert (s.completed, s.failed, s.total_output_tokens) == (0, 2, 0)
    assert s.request_throughput == 0.0
    assert s.ttft.percentile(99) == 0.0


def test_summary_refuses_non_positive_duration() -> None:
    with pytest.raises(ValueError):
        summarize([ok(0.1)], duration_s=0.0)


def result_of(records: list[RequestRecord], duration_s: float) -> BenchResult:
    config = BenchConfig(
        url="http://127.0.0.1:8080",
        model="m",
        mode="completions",
        concurrency=1,
        requests=len(records),
        max_tokens=4,
        warmup=1,
        prompt="hi",
        timeout_s=30.0,
    )
    return BenchResult(
        config=config, records=tuple(records), summary=summarize(records, duration_s)
    )


def test_to_dict_is_json_with_vllm_keys() -> None:
    result = result_of([ok(0.5, (0.1, 0.15, 0.05), tokens=4, start=100.0), FAILED], 2.0)
    data = json.loads(json.dumps(to_dict(result)))
    assert data["schema"] == "llmhost.bench/1"
    assert data["config"]["mode"] == "completions"
    summary = data["summary"]
    for key in (
        "duration",
        "completed",
        "failed",
        "output_throughput",
        "request_throughput",
        "mean_ttft_ms",
        "median_tpot_ms",
        "p90_itl_ms",
        "p99_e2el_ms",
        "std_ttft_ms",
    ):
        assert key in summary
    first = data["requests"][0]
    assert first["ttft_ms"] == pytest.approx(500.0)
    assert first["itl_ms"] == pytest.approx([100.0, 150.0, 50.0])
    assert first["tpot_ms"] == pytest.approx(100.0)
    assert data["requests"][1]["success"] is False
    assert data["requests"][1]["tpot_ms"] is None


OLD = {"completed": 8, "failed": 0, "output_throughput": 10.0, "p90_ttft_ms": 100.0}
NEW = {"completed": 8, "failed": 0, "output_throughput": 12.0, "p90_ttft_ms": 150.0}


@pytest.mark.parametrize(
    ("metric", "delta", "ratio", "verdict"),
    [
        ("output_throughput", 2.0, 1.2, "better"),
        ("p90_ttft_ms", 50.0, 1.5, "worse"),
        ("completed", 0.0, 1.0, "same"),
        ("failed", 0.0, None, "same"),  # ratio undefined when old is 0
    ],
)
def test_compare_rows(metric: str, delta: float, ratio: float | None, verdict: str) -> None:
    rows = {row.metric: row for row in compare(OLD, NEW)}
    row = rows[metric]
    assert row.delta == pytest.approx(delta)
    assert row.ratio == (None if ratio is None else pytest.approx(ratio))
    assert row.verdict == verdict


def test_compare_accepts_results_and_their_dicts_alike() -> None:
    fast = result_of([ok(0.1, (0.01, 0.01), tokens=3)], 1.0)
    slow = result_of([ok(0.4, (0.02, 0.02), tokens=3)], 2.0)
    from_results = compare(fast, slow)
    from_dicts = compare(to_dict(fast), json.loads(json.dumps(to_dict(slow))))
    assert from_results == from_dicts
    rows = {row.metric: row for row in from_results}
    assert rows["mean_ttft_ms"].ratio == pytest.approx(4.0)
    assert rows["mean_ttft_ms"].verdict == "worse"
    assert rows["output_throughput"].ratio == pytest.approx(0.5)
    assert rows["output_throughput"].verdict == "worse"
    assert "duration" not in rows


SUMMARY = {
    "completed": 8,
    "failed": 1,
    "p90_ttft_ms": 1500.0,
    "p99_tpot_ms": 80.0,
    "output_throughput": 4.0,
    "request_throughput": 0.5,
}


@pytest.mark.parametrize(
    ("target", "limit", "metric", "bound", "passed"),
    [
        ("ttft_p90_ms", 2000, "p90_ttft_ms", "max", True),
        ("ttft_p90_ms", 1000, "p90_ttft_ms", "max", False),
        ("ttft_p90_ms", 1500, "p90_ttft_ms", "max", True),  # the limit itself passes
        ("tpot_p99_ms", 50, "p99_tpot_ms", "max", False),
        ("output_tok_s_min", 5, "output_throughput", "min", False),
        ("output_tok_s_min", 4, "output_throughput", "min", True),
        ("request_s_min", 0.25, "request_throughput", "min", True),
        ("failed_max", 0, "failed", "max", False),
        ("completed_min", 8, "completed", "min", True),
    ],
)
def test_gate(target: str, limit: float, metric: str, bound: str, passed: bool) -> None:
    (check,) = gate({"summary": SUMMARY}, {target: limit})
    assert (check.metric, check.bound, check.passed) == (metric, bound, passed)
    assert check.actual == SUMMARY[metric]


def test_gate_checks_every_target_of_a_result() -> None:
    result = result_of([ok(0.5, (0.1,), tokens=2)], 1.0)
    checks = gate(result, {"ttft_p90_ms": 2000, "output_tok_s_min": 5})
    assert [(c.target, c.passed) for c in checks] == [
        ("ttft_p90_ms", True),
        ("output_tok_s_min", False),
    ]


def test_gate_fails_latency_targets_when_nothing_completed() -> None:
    (check,) = gate({"completed": 0, "p90_ttft_ms": 0.0}, {"ttft_p90_ms": 2000})
    assert check.actual is None
    assert not check.passed


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ({"ttft_p95_ms": 1}, "unknown bench target"),
        ({"latency_ms": 1}, "unknown bench target"),
        ({"output_tok_s_max": 1}, "unknown bench target"),
        ({"ttft_p90_ms": True}, "needs a number"),
        ({"ttft_p90_ms": "2000"}, "needs a number"),
    ],
)
def test_gate_refuses_bad_targets(targets: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gate({"summary": SUMMARY}, targets)


def test_every_latency_target_names_a_summary_key() -> None:
    keys = summary_dict(summarize([ok(0.1, (0.1,))], 1.0))
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p90", "p99"):
            assert parse_target(f"{metric}_{stat}_ms")[0] in keys
