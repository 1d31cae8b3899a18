"""Live doctor checks and their /proc parsers, over files captured from real llama-server
containers on the 2-CPU CI host (tests/fixtures/proc/*/case.json says how each was started;
tests/generators/proc_capture.py made them). The plan is this host's: inference CPU 1,
housekeeping CPU 0."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmhost.facts import gather
from llmhost.facts.memory import gather_memory
from llmhost.facts.models import ModelHeader
from llmhost.facts.processes import (
    INSPECT_KEY,
    ServiceProcess,
    gather_processes,
    parse_cmdline,
    parse_memlock_limit,
    parse_smaps,
    parse_stat,
    parse_status,
)
from llmhost.facts.sources import CommandOutput, LiveSource, RecordingSource, SnapshotSource
from llmhost.plan.config import Config, HugepagesConfig, ServiceConfig
from llmhost.plan.planner import make_plan
from llmhost.verify.doctor import live_checks as lc
from llmhost.verify.doctor.result import Context, Finding
from tests.support import FIXTURES, ZEN4_SNAPSHOT, with_models

PROC = FIXTURES / "proc"
HOST = gather(SnapshotSource(ZEN4_SNAPSHOT))  # the CI host: AMD EPYC, CPUs 0-1


class CaseSource(LiveSource):
    """A captured case: its /proc and /sys files under root/, the engine's answer in commands/."""

    def __init__(self, case: str) -> None:
        self.case = PROC / case
        super().__init__(str(self.case / "root"))

    def command(self, key: str) -> CommandOutput:
        path = self.case / "commands" / key
        if not path.exists():
            return CommandOutput(error=f"{key} was not captured")
        return CommandOutput(stdout=path.read_text())


def meta(case: str) -> dict:
    return json.loads((PROC / case / "case.json").read_text())


def context(case: str, hugepages: HugepagesConfig | None = None) -> Context:
    """Facts as doctor gathers them (pool and processes from the case), and this host's plan
    for the case's configuration."""
    source = CaseSource(case)
    facts = replace(
        HOST, memory=gather_memory(source), processes=gather_processes(source), source=case
    )
    info = meta(case)
    header = ModelHeader(**info["model_header"])
    config = Config(
        inference_cores=1,
        project=info["project"],
        services={
            **Config().services,
            "llama-cpu": ServiceConfig(port=18101, model=Path(header.path).name, ctx_size=1024),
        },
        hugepages=hugepages or HugepagesConfig(),
    )
    plan = make_plan(with_models(facts, config, {"llama-cpu": header}), config, "cpu")
    return Context(facts, config, "cpu", plan, None, None, live=False)


def check(case: str, fn, hugepages: HugepagesConfig | None = None) -> Finding:
    return fn(context(case, hugepages))


HEADROOM_100 = HugepagesConfig(headroom_pct=100)


# ---------------------------------------------------------------- parsers


def test_parse_stat_reads_processor_after_comm_with_spaces_and_parens() -> None:
    real = (PROC / "hugetlb-ok/root/proc/850/task/850/stat").read_text()
    assert parse_stat(real)[0] == 1
    tricky = real.replace("(llama-server)", "(a) b (c)")
    assert parse_stat(tricky) == parse_stat(real)
    assert parse_stat("12 (x) S 1") == (None, 0)


def test_parse_status_affinity_and_locked() -> None:
    status = parse_status((PROC / "mlock-locked/root/proc/30879/status").read_text())
    assert status["Cpus_allowed_list"] == "1"
    assert status["VmLck"] == "2260 kB"


def test_parse_cmdline_and_args() -> None:
    args = parse_cmdline((PROC / "hugetlb-ok/root/proc/850/cmdline").read_text())
    assert args[0] == "/app/llama-server"
    proc = ServiceProcess("llama-cpu", "p", "c", 1, (), None, (), {}, args=args)
    assert proc.arg("--load-mode") == "none" and proc.arg("--threads") == "1"
    assert proc.arg("--model", "-m") == "/models/tiny.gguf"
    assert replace(proc, args=("-m=/x", "--mlock")).arg("--model", "-m") == "/x"
    assert proc.arg("--absent") is None


@pytest.mark.parametrize(
    ("text", "kb"),
    [
        ((PROC / "hugetlb-ok/root/proc/850/limits").read_text(), 8192),
        ("Max locked memory         unlimited            unlimited            bytes\n", None),
        ("", None),
    ],
)
def test_parse_memlock_limit(text: str, kb: int | None) -> None:
    assert parse_memlock_limit(text) == kb


def test_parse_smaps_lists_hugetlb_mappings_and_the_model_file() -> None:
    text = (PROC / "hugetlb-ok/root/proc/850/smaps").read_text()
    mappings, model_kb = parse_smaps(text, "tiny.gguf")
    assert len(mappings) == 22 and {m.page_kb for m in mappings} == {2048}
    assert sum(m.hugetlb_kb for m in mappings) == 45056  # = Private_Hugetlb of smaps_rollup
    weights = max(mappings, key=lambda m: m.hugetlb_kb)
    assert (weights.size_kb, weights.hugetlb_kb, weights.perms) == (10240, 10240, "rw-p")
    assert model_kb == 0  # --load-mode none: the model file is read, not mapped
    _, libs_kb = parse_smaps(text, "libggml-cpu.so.0.25.3")
    assert libs_kb > 0


def test_gather_reads_pid_threads_memory_through_the_source() -> None:
    facts = gather_processes(CaseSource("hugetlb-ok"))
    (proc,) = facts.services
    assert (proc.service, proc.project, proc.pid, proc.cpuset) == (
        "llama-cpu",
        "llmhost-tune",
        850,
        (1,),
    )
    assert proc.env == {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2"}
    assert proc.memory is not None and proc.memory.hugetlb_kb == 45056
    assert len(proc.threads) == 10 and all(t.cpus_allowed == (1,) for t in proc.threads)


def test_smaps_is_scanned_only_when_the_rollup_shows_hugetlb() -> None:
    recorder = RecordingSource(CaseSource("hugepages-disabled"))
    (proc,) = gather_processes(recorder).services
    assert proc.memory is not None and proc.memory.model_mapped_kb is None
    assert not any(p.endswith("/smaps") for p in recorder.files)


def test_engine_unreachable_is_a_fact() -> None:
    facts = gather_processes(CaseSource("no-such-case"))
    assert facts.services == () and "not captured" in (facts.error or "")


def test_snapshot_replays_the_same_facts(tmp_path: Path) -> None:
    recorder = RecordingSource(CaseSource("threads-share-cpu"))
    live = gather_processes(recorder)
    gather_memory(recorder)
    snapshot = recorder.write(tmp_path / "s.tar.gz", {})
    assert gather_processes(SnapshotSource(snapshot)) == live


# ---------------------------------------------------------------- compute threads


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("hugetlb-ok", [(850, (1,))]),  # one-CPU cpuset: the main thread
        ("thread-on-housekeeping", [(28903, (0,)), (28990, (1,))]),  # pinned by --cpu-strict
        ("threads-share-cpu", [(28977, (1,)), (29020, (1,))]),
    ],
)
def test_compute_threads_rule(case: str, expected: list) -> None:
    (proc,) = gather_processes(CaseSource(case)).services
    assert [(t.tid, t.cpus_allowed) for t in lc.compute_threads(proc)] == expected


def test_threads_ok_prints_the_thread_to_cpu_map() -> None:
    finding = check("hugetlb-ok", lc.threads_pinned, HEADROOM_100)
    assert finding.status == "ok", finding
    assert "850->CPU 1 (ran on 1)" in finding.detail
    assert "9 other thread(s) on cpuset 1" in finding.detail


def test_thread_on_housekeeping_cpu_fails() -> None:
    finding = check("thread-on-housekeeping", lc.threads_pinned)
    assert finding.status == "fail"
    assert "thread 28903 may run on housekeeping CPU(s) 0" in finding.detail
    assert "2 compute thread(s), plan 1" in finding.detail
    assert "container cpuset 0-1, plan 1" in finding.detail
    assert finding.remediation == "llmhost deploy --profile cpu"


def test_two_threads_on_one_cpu_fail() -> None:
    finding = check("threads-share-cpu", lc.threads_pinned)
    assert finding.status == "fail"
    assert "threads 28977 and 29020 share CPU 1" in finding.detail


def _with_threads(proc: ServiceProcess, **changes) -> ServiceProcess:
    return replace(proc, threads=tuple(replace(t, **changes) for t in proc.threads))


def test_last_cpu_outside_affinity_fails() -> None:
    ctx = context("hugetlb-ok", HEADROOM_100)
    (proc,) = ctx.facts.processes.services
    moved = replace(ctx.facts.processes, services=(_with_threads(proc, last_cpu=0),))
    finding = lc.threads_pinned(replace(ctx, facts=replace(ctx.facts, processes=moved)))
    assert finding.status == "fail" and "last ran on CPU 0, outside its affinity" in finding.detail


def test_threads_skip_when_not_running_or_unreadable() -> None:
    ctx = context("hugetlb-ok", HEADROOM_100)
    other = replace(ctx, config=replace(ctx.config, project="elsewhere"))
    assert lc.threads_pinned(other).detail == "llama-cpu is not running (project elsewhere)"
    (proc,) = ctx.facts.processes.services
    hidden = replace(ctx.facts.processes, services=(replace(proc, error="cannot read"),))
    finding = lc.threads_pinned(replace(ctx, facts=replace(ctx.facts, processes=hidden)))
    assert finding.status == "skip" and "cannot read" in finding.detail


# ---------------------------------------------------------------- hugepages


def test_weights_on_hugepages_ok_prints_pages_used() -> None:
    finding = check("hugetlb-ok", lc.weights_on_hugepages, HEADROOM_100)
    assert finding.status == "ok", finding
    assert "22 x 2 MiB pages in use (44 MiB) in 22 hugetlb mapping(s), 51 mapped" in finding.detail
    assert "need >= 5; plan 91; pool 75 total, 22 in use, 29 reserved, 24 available" in (
        finding.detail
    )


def test_pool_exhausted_with_sigbus_health_checks_fails() -> None:
    finding = check("pool-exhausted", lc.weights_on_hugepages)
    assert finding.status == "fail"
    assert "2 of the last 5 health checks died of SIGBUS" in finding.detail
    assert "pool 41 total, 19 in use, 20 reserved, 2 available" in finding.detail
    assert "headroom_pct" in (finding.remediation or "")


def test_weights_fallen_back_to_4k_pages_fail() -> None:
    finding = check("pool-short", lc.weights_on_hugepages, HEADROOM_100)
    assert finding.status == "fail"
    assert "3 pages in use, the weights alone need 5" in finding.detail
    assert finding.remediation == "sysctl -w vm.nr_hugepages=91 && llmhost deploy --profile cpu"


def test_server_mapping_more_than_planned_warns() -> None:
    # The same server, judged against a fixed 0.08 GiB (41-page) plan: it maps 51.
    finding = check("hugetlb-ok", lc.weights_on_hugepages, HugepagesConfig(gib=0.08))
    assert finding.status == "warn" and "maps 51 pages, more than the plan's" in finding.detail


def test_no_glibc_tunable_fails() -> None:
    finding = check("thread-on-housekeeping", lc.weights_on_hugepages)
    assert finding.status == "fail" and "without GLIBC_TUNABLES" in finding.detail


def test_hugepages_not_planned_is_skipped() -> None:
    finding = check("hugepages-disabled", lc.weights_on_hugepages, HugepagesConfig(enabled=False))
    assert finding.status == "skip" and finding.detail.startswith("not planned")


# ---------------------------------------------------------------- pool used / mlock


def test_reserved_pool_unused_warns() -> None:
    finding = check("hugepages-disabled", lc.pool_used, HugepagesConfig(enabled=False))
    assert finding.status == "warn"
    assert finding.detail.startswith("reserved pool unused: 41 x 2 MiB pages (82 MiB)")
    assert finding.remediation == "sysctl -w vm.nr_hugepages=0"


def test_reserved_pool_in_use_is_ok() -> None:
    finding = check("hugetlb-ok", lc.pool_used, HEADROOM_100)
    assert finding.status == "ok" and "llama-cpu (llmhost-tune): 22" in finding.detail


def test_mlock_requested_but_nothing_locked_fails() -> None:
    finding = check("mlock-not-locked", lc.mlock_effective)
    assert finding.status == "fail"
    assert "mlock requested but VmLck 0 kB (memlock limit 8 MiB)" in finding.detail
    assert "memlock" in (finding.remediation or "")


def test_mlock_in_effect_is_ok() -> None:
    finding = check("mlock-locked", lc.mlock_effective)
    assert finding.status == "ok" and "VmLck 2 MiB" in finding.detail


def test_mlock_not_requested_is_skipped() -> None:
    assert check("hugetlb-ok", lc.mlock_effective, HEADROOM_100).status == "skip"


def test_checks_are_registered() -> None:
    from llmhost.verify.doctor.registry import CHECKS

    ids = [c[0] for c in CHECKS]
    assert {"live.hugepages", "live.threads", "live.pool_used", "live.mlock"} <= set(ids)


def test_inspect_summary_keeps_no_secrets() -> None:
    from llmhost.facts.sources import _inspect_summary

    summary = _inspect_summary(
        {
            "Id": "x",
            "State": {"Pid": 7, "Health": {"Log": [{"ExitCode": 135, "Output": "Bus error"}]}},
            "HostConfig": {"CpusetCpus": "1"},
            "Config": {
                "Env": ["LLAMA_API_KEY=secret", "GLIBC_TUNABLES=glibc.malloc.hugetlb=2"],
                "Labels": {"io.llmhost.service": "llama-cpu", "other": "x"},
            },
        }
    )
    assert "secret" not in json.dumps(summary)
    assert summary["Config"]["Env"] == ["GLIBC_TUNABLES=glibc.malloc.hugetlb=2"]
    assert summary["Config"]["Labels"] == {"io.llmhost.service": "llama-cpu"}
    assert summary["State"]["Health"]["Log"] == [{"ExitCode": 135}]
    assert INSPECT_KEY == "docker-inspect-llmhost"
