"""Tuning evidence: the verdict rule, benchmarks/evidence.py over fixture and committed results,
matching to snapshot hosts, the plan's annotations and the doctor check."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config, HugepagesConfig
from llmhost.plan.evidence import (
    EVIDENCE_PATH,
    Evidence,
    Verdict,
    combine,
    load_evidence,
    metric_verdict,
    parse_evidence,
)
from llmhost.plan.planner import make_plan
from llmhost.verify.doctor import run_doctor
from tests.support import H100_SNAPSHOT, REPO, ZEN4_SNAPSHOT

ROOT = REPO
RESULTS = ROOT / "benchmarks" / "results"
H100_RUN = RESULTS / "h100-2026-11-23"


def _load_script():
    path = ROOT / "benchmarks" / "evidence.py"
    if str(path.parent) not in sys.path:  # as `python benchmarks/evidence.py` runs: _results.py
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("evidence_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


script = _load_script()
P, N, NEG = Verdict.POSITIVE, Verdict.NIL, Verdict.NEGATIVE
EMR = gather(SnapshotSource(H100_SNAPSHOT), containers=False)
ZEN4 = gather(SnapshotSource(ZEN4_SNAPSHOT), containers=False)
# hugepages.gib gives the pool a size without a model, so hugetlb weights are applied.
HUGETLB = Config(inference_cores=8, hugepages=HugepagesConfig(gib=1.0))


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("ratio", "low", "high", "samples", "verdict"),
    [
        (1.05, 1.01, 1.10, 3, P),
        (1.02, 1.01, 1.03, 3, N),  # at the noise threshold, not above it
        (1.021, 1.001, 1.03, 6, P),
        (1.10, 0.99, 1.20, 6, N),  # spread straddles 1.0
        (1.10, 1.00, 1.20, 6, N),  # touching 1.0 is not clear of it
        (0.95, 0.90, 0.99, 3, NEG),
        (0.985, 0.90, 0.99, 3, N),  # below 1 but within the noise threshold
        (0.90, 0.80, 1.01, 3, N),
        (1.50, 1.50, 1.50, 1, N),  # one sample is no spread
        (0.50, 0.40, 0.60, 2, N),
    ],
)
def test_metric_verdict(ratio, low, high, samples, verdict):
    assert metric_verdict(ratio, low, high, samples) is verdict


@pytest.mark.parametrize(
    ("verdicts", "knob"),
    [([P, N], P), ([P, NEG], N), ([NEG, N], NEG), ([N, N], N), ([], N), ([P, P], P)],
)
def test_combine(verdicts, knob):
    assert combine(verdicts) is knob


# ---------------------------------------------------------------- fixture results


def _samples(scale: float, spread: float = 0.01) -> list[float]:
    return [100 * scale * (1 - spread), 100 * scale, 100 * scale * (1 + spread)]


def write_fixture_results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    (root / "sub").mkdir(parents=True)
    zen4 = {"vendor": "AuthenticAMD", "microarchitecture": "Zen 4", "physical_cores": 2,
            "logical_cpus": 2, "virtual": True}  # fmt: skip
    knobs = {
        "benchmark": "cpu_knobs",
        "hardware": zen4,
        "model_type": "llama 1B Q4_0",
        "runs": {
            "unpinned": {"pp512": _samples(1.0), "tg128": _samples(1.0)},
            "pinned": {"pp512": _samples(1.10), "tg128": _samples(1.0, 0.2)},
            "pinned_hugetlb": {"pp512": _samples(1.10), "tg128": _samples(0.9)},
        },
    }
    (root / "cpu_knobs-zen.json").write_text(json.dumps(knobs))
    builds = {
        "benchmark": "cpu_builds",
        "cpu": "Zen 4",
        "threads": 2,
        "samples": {
            "m.gguf": {
                "plan": {"pp512": _samples(1.3), "tg64": _samples(1.0)},
                "avx2": {"pp512": _samples(1.0), "tg64": _samples(1.0)},
            }
        },
    }
    (root / "sub" / "cpu_builds-vm.json").write_text(json.dumps(builds))
    (root / "doctor_latency.json").write_text(json.dumps({"benchmark": "doctor_latency"}))
    return root


@pytest.fixture
def fixture_evidence(tmp_path) -> Evidence:
    return parse_evidence(script.build_evidence(write_fixture_results(tmp_path)))


def test_fixture_results_become_records(fixture_evidence):
    records = {r.knob: r for r in fixture_evidence.records}
    assert set(records) == {
        "cpu.pinning",
        "cpu.hugetlb_weights",
        "cpu.pinning_hugetlb",
        "cpu_build.plan_vs_avx2",
    }  # no THP run, no official build: those knobs are simply absent
    pinning = records["cpu.pinning"]
    assert [(m.test, m.ratio, m.low, m.high, m.verdict) for m in pinning.metrics] == [
        ("pp512", 1.1, 1.089, 1.111, P),
        ("tg128", 1.0, 0.8, 1.2, N),
    ]
    assert pinning.verdict is P
    assert pinning.source == "benchmarks/results/cpu_knobs-zen.json"
    assert pinning.hardware.label() == "AMD Zen 4 2 vCPU"
    assert records["cpu.hugetlb_weights"].verdict is NEG  # pp as pinned, tg 0.9 of it
    assert records["cpu.pinning_hugetlb"].verdict is N  # pp 1.1, tg 0.9 vs unpinned: mixed
    build = records["cpu_build.plan_vs_avx2"]
    assert build.hardware.vendor == "AuthenticAMD"  # from llmhost's microarchitecture tables
    assert build.hardware.label() == "AMD Zen 4, 2 threads"
    assert build.source == "benchmarks/results/sub/cpu_builds-vm.json"
    assert [m.verdict for m in build.metrics] == [P, N]


def test_cpu_builds_files_of_one_host_are_pooled_per_model(tmp_path):
    """A run split over two device calls: each file alone has too few samples to judge."""
    root = tmp_path / "results"
    (root / "run").mkdir(parents=True)
    xeon = {"vendor": "GenuineIntel", "microarchitecture": "Emerald Rapids",
            "physical_cores": 16, "logical_cpus": 16, "virtual": True,
            "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_architecture": "Hopper"}  # fmt: skip
    for i, scale in enumerate((1.1, 1.2), start=1):
        run = {
            "benchmark": "cpu_builds",
            "host": "vm",
            "cpu": "Emerald Rapids",
            "threads": 8,
            "hardware": xeon,
            "samples": {
                "7b.gguf": {
                    "plan": {"pp512": [100 * scale, 101 * scale]},
                    "official": {"pp512": [100.0, 99.0]},
                }
            },
        }
        (root / "run" / f"cpu_builds-7b-{i}.json").write_text(json.dumps(run))
    records = parse_evidence(script.build_evidence(root)).records
    assert [r.knob for r in records] == ["cpu_build.plan_vs_official"]
    (record,) = records
    assert record.source == (
        "benchmarks/results/run/cpu_builds-7b-1.json, benchmarks/results/run/cpu_builds-7b-2.json"
    )
    assert record.hardware.label() == "Intel Emerald Rapids 16 vCPU"  # the recorded hardware
    assert record.hardware.gpu_name is None  # a CPU build comparison: the GPU is no part of it
    (metric,) = record.metrics
    assert (metric.workload, metric.n, metric.baseline_n) == ("7b.gguf", 4, 4)
    # plan 110, 111.1, 120, 121.2 (median 115.55) over official's median 99.5
    assert (metric.ratio, metric.low, metric.high) == (1.1613, 1.1055, 1.2181)
    assert metric.verdict is P


def test_load_evidence_from_a_path(tmp_path, fixture_evidence):
    path = tmp_path / "evidence.json"
    path.write_text(script.render(script.build_evidence(tmp_path / "results")))
    assert load_evidence(path) == fixture_evidence
    assert load_evidence(tmp_path / "absent.json").records == ()
    assert parse_evidence({"format": 99, "records": [{"junk": 1}]}).records == ()


# ---------------------------------------------------------------- the committed results


def test_packaged_evidence_is_what_the_script_derives():
    """llmhost/data/evidence.json must be regenerated (python benchmarks/evidence.py) whenever
    benchmarks/results/ changes."""
    assert EVIDENCE_PATH.read_text() == script.render(script.build_evidence(RESULTS))


def test_h100_records_match_the_run_summary():
    summary = json.loads((H100_RUN / "summary.json").read_text())
    ratios = summary["cpu_emerald_rapids_16c_1b_q4_0"]["ratios_vs_threads8_unpinned"]
    records = {r.knob: r for r in load_evidence().records if r.source.endswith("summary.json")}
    both = records["cpu.pinning_hugetlb"]
    assert [m.ratio for m in both.metrics] == [
        round(ratios["pinned8_hugetlb"][t], 4) for t in ("pp512", "tg128")
    ]
    assert both.hardware.microarchitecture == "Emerald Rapids"
    assert both.hardware.label() == "Intel Emerald Rapids 16 vCPU"
    assert both.verdict is P  # tg128 +6 %, min-max 1.03-1.11
    assert records["cpu.pinning"].verdict is N  # tg128 +6 % but min-max 0.98-1.13
    assert records["gpu.flash_attn"].hardware.gpu_architecture == "Hopper"
    assert records["gpu.flash_attn"].verdict is P
    assert records["gpu.cuda_graphs"].verdict is P


# ---------------------------------------------------------------- hosts


def recs(facts, config, profile, evidence=None):
    plan = make_plan(facts, config, profile, evidence=evidence or load_evidence())
    return {r.knob: r for r in plan.recommendations}


def test_emerald_rapids_snapshot_gets_the_xeon_measurements():
    r = recs(EMR, HUGETLB, "all")
    both = r["cpu.pinning_hugetlb"]
    assert both.applied and both.recommended
    assert both.text.startswith("recommended: pp512 +9.9%")
    assert "on Intel Emerald Rapids 16 vCPU (benchmarks/results/h100-2026-11-23/summary.json)" in (
        both.text
    )
    for knob in ("cpu.pinning", "cpu.hugetlb_weights"):  # each alone: within the noise
        assert r[knob].applied and r[knob].verdict is N
        assert r[knob].text.startswith(
            "applied by config, not measured positive on this kind of host "
            "(measured nil on Intel Emerald Rapids 16 vCPU: "
        )
    assert r["cpu.hugetlb_weights"].turn_off == "hugepages.enabled: false in llmhost.yaml"
    assert r["cpu.pinning"].turn_off is None  # llmhost has no setting for it: measure instead
    assert r["cpu.pinning"].measure == "llmhost tune --knob cpu.pinning"
    assert not r["cpu.thp_weights"].applied
    assert r["gpu.flash_attn"].recommended and r["gpu.flash_attn"].host_kind == "Hopper"
    assert r["gpu.cuda_graphs"].recommended


def test_zen4_snapshot_gets_the_zen4_measurements():
    """The committed Zen 4 results (the CI VM) judge Zen 4 hosts: pinning measured nil there,
    so it is applied by config but not recommended, and the text names the Zen 4 run."""
    r = recs(ZEN4, Config(inference_cores=1), "cpu")
    pin = r["cpu.pinning"]
    assert pin.applied and not pin.recommended
    assert pin.verdict is Verdict.NIL
    assert pin.text.startswith(
        "applied by config, not measured positive on this kind of host (measured nil on AMD Zen 4"
    )
    assert "cpu_knobs-vm.json" in pin.text
    assert not r["cpu.hugetlb_weights"].applied  # no model, no pool
    assert not any(k.startswith("gpu.") for k in r)  # no GPU service planned
    assert r["cpu_build.plan_vs_avx2"].recommended


def test_a_host_kind_without_measurements_says_so():
    """Records only from another microarchitecture: 'not measured' here, naming where it was."""
    full = load_evidence()
    others = replace(full, records=tuple(
        rec for rec in full.records if rec.hardware.microarchitecture != "Zen 4"))  # fmt: skip
    pin = recs(ZEN4, Config(inference_cores=1), "cpu", evidence=others)["cpu.pinning"]
    assert pin.applied and pin.verdict is Verdict.NOT_MEASURED and not pin.recommended
    assert pin.text.startswith(
        "applied by config, not measured positive on this kind of host (Zen 4: not measured; "
        "measured nil on Intel Emerald Rapids 16 vCPU"
    )


def test_evidence_annotates_and_changes_nothing():
    plain = make_plan(EMR, HUGETLB, "all")
    annotated = make_plan(EMR, HUGETLB, "all", evidence=load_evidence())
    assert plain.recommendations == () and annotated.recommendations
    assert replace(annotated, recommendations=()) == plain
    llama = annotated.service("llama-cpu")
    assert "--cpu-strict" in llama.args and "GLIBC_TUNABLES" in llama.env


def test_same_kind_needs_the_same_vendor(fixture_evidence):
    other = replace(EMR, cpu=replace(EMR.cpu, microarchitecture="Zen 4"))  # Intel named Zen 4
    r = recs(other, Config(inference_cores=1), "cpu", fixture_evidence)
    assert r["cpu.pinning"].verdict is Verdict.NOT_MEASURED
    assert recs(ZEN4, Config(inference_cores=1), "cpu", fixture_evidence)["cpu.pinning"].recommended


# ---------------------------------------------------------------- doctor


def tuning_check(facts, config, profile, evidence):
    report = run_doctor(facts, config, profile, live=False, evidence=evidence)
    return next(r for r in report.results if r.id == "tuning.evidence")


def test_doctor_ok_when_every_applied_knob_is_positive_here(fixture_evidence):
    pinning_only = Evidence(
        fixture_evidence.noise_threshold,
        tuple(r for r in fixture_evidence.records if r.knob in ("cpu.pinning",)),
    )
    result = tuning_check(ZEN4, Config(inference_cores=1), "cpu", pinning_only)
    assert result.status == "ok"
    assert result.detail == "measured positive on Zen 4: CPU pinning (llama-cpu)"


def test_doctor_warns_with_the_fix_when_an_applied_knob_measured_negative(fixture_evidence):
    config = Config(inference_cores=1, hugepages=HugepagesConfig(gib=0.1))
    result = tuning_check(ZEN4, config, "cpu", fixture_evidence)
    assert result.status == "warn"
    assert "weights on 2 MiB hugetlb pages: measured negative on AMD Zen 4 2 vCPU" in (
        result.detail
    )
    assert result.remediation == (
        "measure this host: llmhost tune --knob cpu.hugetlb_weights --knob cpu.pinning_hugetlb; "
        "or turn it off: hugepages.enabled: false in llmhost.yaml"
    )


def test_doctor_skips_when_nothing_applied_was_measured_here(fixture_evidence):
    result = tuning_check(EMR, Config(inference_cores=8), "cpu", fixture_evidence)
    assert result.status == "skip"
    assert result.detail.startswith("nothing applied was measured on Emerald Rapids")
    assert "llmhost tune --knob cpu.pinning" in result.detail
    assert "turn it off" not in result.detail


def test_doctor_skips_without_a_plan_or_evidence():
    too_many = Config(inference_cores=64)
    assert tuning_check(ZEN4, too_many, "cpu", load_evidence()).status == "skip"
    empty = Evidence(0.02, ())
    assert tuning_check(EMR, Config(inference_cores=8), "cpu", empty).status == "skip"


def test_doctor_on_the_real_evidence_for_the_xeon():
    result = tuning_check(EMR, HUGETLB, "cpu", load_evidence())
    assert result.status == "warn"  # pinning alone and hugetlb alone measured nil there
    assert "CPU pinning: measured nil on Intel Emerald Rapids 16 vCPU" in result.detail


def test_budgeted_rounds_rotate_and_stop_before_a_round_that_does_not_fit() -> None:
    from _results import budgeted_rounds  # on sys.path since _load_script

    ran = list(budgeted_rounds(5, ["a", "b", "c"], "t", lambda est: est < 2, lambda r, _: r))
    assert ran == [(0, ["a", "b", "c"]), (1, ["b", "c", "a"])]
    assert len(list(budgeted_rounds(4, ["a"], "t", lambda _est: True))) == 4
