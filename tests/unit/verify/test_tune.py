"""`llmhost tune` without running llama-bench: its setups read back from the plan, its requests
checked, its records kept as this host's evidence beside the shipped one, and its table. The
real measurement runs in tests/e2e/test_tuning_live.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmhost.cpulist import cpumask_hex
from llmhost.errors import LlmhostError
from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config, HugepagesConfig
from llmhost.plan.evidence import (
    Evidence,
    Hardware,
    Metric,
    Record,
    Verdict,
    load_evidence,
    load_local_evidence,
    measure_commands,
    recommend,
    save_local_evidence,
    with_local,
)
from llmhost.plan.planner import make_plan
from llmhost.verify.tune.knobs import SETUP, TUNED
from llmhost.verify.tune.report import table
from llmhost.verify.tune.session import TuneRequest, TuneResult, base_knobs
from tests.support import H100_SNAPSHOT, SNAPSHOTS, ZEN4_SNAPSHOT

EMR = gather(SnapshotSource(H100_SNAPSHOT), containers=False)  # Emerald Rapids VM, no SMT
ZEN4 = gather(SnapshotSource(ZEN4_SNAPSHOT), containers=False)
ZEN3_SMT = gather(SnapshotSource(SNAPSHOTS / "ryzen9-5900xt-noavx512.tar.gz"), containers=False)
HUGETLB = Config(inference_cores=4, hugepages=HugepagesConfig(gib=1.0))


def _plan(facts=EMR, config=HUGETLB):
    return make_plan(facts, config, "cpu")


def test_setups_are_the_plans_knobs_changed_one_at_a_time():
    plan = _plan(ZEN3_SMT)
    base, cores = base_knobs(plan), plan.cores
    mask = cpumask_hex(cores.compute_cpus)
    pinned = ["-t", str(len(cores.compute_cpus)), "-C", mask, "--cpu-strict", "1"]
    assert SETUP["pinned"].bench_args(base, cores) == pinned
    assert SETUP["unpinned"].bench_args(base, cores) == pinned[:2]
    assert SETUP["pinned_hugetlb"].bench_args(base, cores) == [*pinned, "-lm", "none"]
    assert SETUP["pinned_mlock"].bench_args(base, cores) == [*pinned, "-lm", "mlock"]
    assert SETUP["pinned_fa_off"].bench_args(base, cores) == [*pinned, "-fa", "off"]
    # exactly the environment the plan deploys llama-cpu with on hugetlb pages
    deployed = plan.service("llama-cpu").knobs.env()["GLIBC_TUNABLES"]
    assert SETUP["pinned_hugetlb"].bench_env(base, cores) == {"GLIBC_TUNABLES": deployed}
    assert SETUP["pinned"].bench_env(base, cores) == {}
    assert SETUP["pinned_thp"].bench_env(base, cores) == {
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"
    }
    smt = SETUP["pinned_smt"].bench_args(base, cores)
    assert smt[:3] == ["-t", str(len(cores.inference_cpus)), "-C"]
    assert smt[3] == cpumask_hex(cores.inference_cpus)
    assert len(cores.inference_cpus) == 2 * len(cores.compute_cpus)  # both siblings of each core


def test_every_tuned_knob_compares_two_setups_that_exist():
    for c in TUNED.values():
        assert {c.candidate, c.baseline} <= set(SETUP), c.knob
        assert c.candidate != c.baseline


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"knobs": ("cpu.turbo",)}, "unknown knob(s) cpu.turbo"),
        ({"rounds": 1, "reps": 2}, "--rounds 1 x --reps 2 gives fewer than 3 samples"),
    ],
)
def test_a_request_that_cannot_reach_a_verdict_is_refused(kwargs, message):
    with pytest.raises(LlmhostError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        TuneRequest(Path("m.gguf"), **kwargs)
    assert e.value.exit_code == 2


def _record(knob: str, hardware: Hardware, ratio: float, source: str) -> Record:
    verdict = Verdict.POSITIVE if ratio > 1.1 else Verdict.NEGATIVE if ratio < 0.9 else Verdict.NIL
    low, high = ratio - 0.02, ratio + 0.02
    metric = Metric("tiny", "tg16", ratio, low, high, 3, 3, verdict)
    c = TUNED[knob]
    return Record(knob, c.title, c.scope, c.service, c.compares, hardware, (metric,), verdict,
                  source)  # fmt: skip


def test_this_hosts_records_set_aside_the_shipped_ones_of_the_same_knob_and_kind():
    shipped = load_evidence()
    emr = [r for r in shipped.records if r.knob == "cpu.pinning" and r.hardware.microarchitecture
           == EMR.cpu.microarchitecture]  # fmt: skip
    assert emr, "the shipped evidence measures pinning on Emerald Rapids"
    here = _record("cpu.pinning", Hardware.from_facts(EMR), 1.3, "llmhost tune on h 2026")
    merged = with_local(shipped, Evidence(0.02, (here,)))
    assert here in merged.records and not set(emr) & set(merged.records)
    others = [r for r in shipped.records if r.knob != "cpu.pinning" or r not in emr]
    assert set(others) <= set(merged.records)  # every other record stays
    rec = {r.knob: r for r in recommend(merged, EMR, _plan().services)}["cpu.pinning"]
    assert rec.verdict is Verdict.POSITIVE and "llmhost tune on h 2026" in rec.basis


def test_local_evidence_is_saved_whole_and_replaces_only_what_was_measured_again(tmp_path):
    path = tmp_path / "state" / "evidence.json"
    hw = Hardware.from_facts(ZEN4)
    pairs = (("cpu.pinning", 0.8), ("cpu.flash_attn", 1.2))
    first = [_record(k, hw, r, "llmhost tune on a 1") for k, r in pairs]
    save_local_evidence(first, path)
    save_local_evidence([_record("cpu.pinning", hw, 1.0, "llmhost tune on a 2")], path)
    records = {r.knob: r for r in load_local_evidence(path).records}
    assert records["cpu.pinning"].source == "llmhost tune on a 2"
    assert records["cpu.flash_attn"].source == "llmhost tune on a 1"
    assert json.loads(path.read_text())["generated_by"] == "llmhost tune"
    assert [p.name for p in path.parent.iterdir()] == ["evidence.json"]  # no temporary left


@pytest.mark.parametrize("text", ["{not json", '{"format": 99, "records": []}',
                                  '{"format": 1, "records": [{"knob": "x"}]}'])  # fmt: skip
def test_a_local_evidence_file_that_is_not_evidence_is_refused_in_one_line(tmp_path, text):
    path = tmp_path / "evidence.json"
    path.write_text(text)
    with pytest.raises(LlmhostError) as e:
        load_local_evidence(path)
    assert str(e.value).startswith(f"{path} is not llmhost evidence (") and "\n" not in str(e.value)
    assert e.value.fix == f"run `llmhost tune` again, or remove {path}"
    assert load_local_evidence(tmp_path / "absent.json").records == ()


def test_measure_commands_join_the_knobs_tune_measures_into_one_command():
    shipped = load_evidence()
    recs = recommend(shipped, EMR, _plan().services)
    tuned = [r for r in recs if r.knob in ("cpu.pinning", "cpu.hugetlb_weights")]
    assert measure_commands(tuned) == ("llmhost tune --knob cpu.hugetlb_weights --knob cpu.pinning")
    again = [replace(r, measured_here=True) for r in tuned]
    assert measure_commands(again).endswith("--knob cpu.pinning --rounds 6")


def test_the_table_shows_each_test_with_its_spread_and_what_was_not_measured():
    hw = Hardware.from_facts(ZEN4)
    result = TuneResult(hw, "tiny", "m.gguf", 3, 1, {}, {}, {"cpu.mlock": "memlock limit"},
                        (_record("cpu.pinning", hw, 1.25, "s"),), 1.0, "now")  # fmt: skip
    rows = table(result)
    assert rows[1].split() == ["cpu.pinning", "tg16", "+25.0%", "[+23%..+27%]", "3/3", "positive"]
    assert rows[2] == f"{'cpu.mlock':<22} not measured: memlock limit"


def test_builds_alone_run_the_plans_pinned_setup_in_each_build_interleaved(tmp_path):
    """--builds-only: the plan's build and each other build, the same pinned arguments, rounds
    rotating; one record per other build, named by it."""
    from llmhost.verify.tune.measure import BenchRun
    from llmhost.verify.tune.session import run_tune

    calls: list[tuple[str, list[str]]] = []

    def bench(name: str, speed: float):
        def run(model, args, env, memlock):
            calls.append((name, list(args)))
            pp, tg = int(args[args.index("-p") + 1]), int(args[args.index("-n") + 1])
            rows = [{"n_prompt": pp, "n_gen": 0, "samples_ts": [100.0 * speed]},
                    {"n_prompt": 0, "n_gen": tg, "samples_ts": [10.0 * speed]}]  # fmt: skip
            return BenchRun(rows, "")

        return run

    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    plan = _plan()
    request = TuneRequest(model, (), rounds=3, reps=1, prompt=64, gen=16)
    builds = {"official": bench("official", 1.0), "threadpool": bench("threadpool", 0.8)}
    result = run_tune(request, plan, EMR, bench("plan", 1.0), lambda _: None, builds=builds)
    assert set(result.setups) == {"pinned", "build_official", "build_threadpool"}
    pinned = SETUP["pinned"].bench_args(base_knobs(plan), plan.cores)
    assert {tuple(a[6:]) for _, a in calls} == {tuple(pinned)}  # after -p -n -r, alike
    order = [name for name, _ in calls]
    assert sorted(order) == sorted(["plan", "official", "threadpool"] * 3)
    assert order[:3] != order[3:6]  # the order rotates
    records = {r.knob: r for r in result.records}
    assert set(records) == {"cpu_build.plan_vs_official", "cpu_build.plan_vs_threadpool"}
    ratios = {m.test: m.ratio for m in records["cpu_build.plan_vs_threadpool"].metrics}
    assert ratios == {"pp64": 1.25, "tg16": 1.25}
    assert records["cpu_build.plan_vs_official"].verdict is Verdict.NIL


def test_a_vm_named_by_its_instruction_sets_is_judged_by_and_replaces_its_kins_records():
    """An AMX VM reporting an older model ("Sapphire/Emerald Rapids") reads the Emerald Rapids
    records, and its own `llmhost tune` records set those aside."""
    from tests.support import XEON_VM_SNAPSHOT

    vm = gather(SnapshotSource(XEON_VM_SNAPSHOT), containers=False)
    shipped = load_evidence()
    plan = make_plan(vm, replace(HUGETLB, inference_cores=1), "cpu")
    rec = {r.knob: r for r in recommend(shipped, vm, plan.services)}["cpu.pinning"]
    assert rec.verdict is not Verdict.NOT_MEASURED and "Emerald Rapids" in rec.basis
    here = _record("cpu.pinning", Hardware.from_facts(vm), 0.7, "llmhost tune on vm 2026")
    merged = with_local(shipped, Evidence(0.02, (here,)))
    pinning = [r for r in merged.records if r.knob == "cpu.pinning"
               and r.hardware.vendor == "GenuineIntel"]  # fmt: skip
    assert pinning == [here]
    rec = {r.knob: r for r in recommend(merged, vm, plan.services)}["cpu.pinning"]
    assert rec.verdict is Verdict.NEGATIVE and rec.measured_here


def test_the_table_keeps_its_columns_for_a_build_comparisons_longer_name():
    hw = Hardware.from_facts(ZEN4)
    metric = Metric("tiny", "tg16", 1.02, 0.98, 1.05, 3, 3, Verdict.NIL)
    record = Record("cpu_build.plan_vs_threadpool", "t", "cpu", "llama-cpu", "c", hw, (metric,),
                    Verdict.NIL, "s")  # fmt: skip
    head, row = table(TuneResult(hw, "tiny", "m.gguf", 3, 1, {}, {}, {}, (record,), 1.0, "now"))
    assert head.index("test") == row.index("tg16") and row.split()[-1] == "nil"
