"""The planner: table-driven over topologies, plus hugepage sizing from a real GGUF header."""

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from llmhost.facts import gather, our_labels
from llmhost.facts.containers import ContainerFacts, ImageInfo
from llmhost.facts.cpu import L3Domain, gather_cpu
from llmhost.facts.models import read_model_header
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config, HugepagesConfig, ServiceConfig
from llmhost.plan.evidence import Evidence, Hardware, Metric, Record, Verdict
from llmhost.plan.planner import (
    HUGEPAGE_SLACK_PAGES,
    PlanError,
    choose_cores,
    make_plan,
    model_memory,
)
from tests.support import CPUINFO, with_model_files, write_host_tree

ZEN5 = (CPUINFO / "ryzen9-9950x.txt").read_text()
GENOA = (CPUINFO / "epyc-genoa-2cpu.txt").read_text()
EMR = (CPUINFO / "xeon-emerald-rapids.txt").read_text()


def cpu_facts(tmp_path, cpuinfo, **topo):
    return gather_cpu(LiveSource(str(write_host_tree(tmp_path, cpuinfo, **topo))))


@pytest.mark.parametrize(
    ("topo", "count", "inference", "housekeeping"),
    [
        # 9950X: 2 CCDs x 8 cores, SMT siblings n / n+16.
        (
            {"cores": 16, "threads_per_core": 2, "cores_per_l3": 8},
            12,
            "1-4,8-15,17-20,24-31",
            "0,5-7,16,21-23",
        ),
        ({"cores": 16, "threads_per_core": 2, "cores_per_l3": 8}, 8, "8-15,24-31", "0-7,16-23"),
        ({"cores": 16, "threads_per_core": 2, "cores_per_l3": 8}, 15, "1-15,17-31", "0,16"),
        # 7950X3D-like 2 CCDs, no SMT.
        ({"cores": 16, "threads_per_core": 1, "cores_per_l3": 8}, 4, "8-11", "0-7,12-15"),
        # One L3 (Intel): lowest cores after CPU 0.
        ({"cores": 16, "threads_per_core": 1}, 12, "1-12", "0,13-15"),
        # 4 CCDs of 4 cores (EPYC-like): fill whole CCDs without CPU 0 first.
        (
            {"cores": 16, "threads_per_core": 2, "cores_per_l3": 4},
            6,
            "4-9,20-25",
            "0-3,10-19,26-31",
        ),
        ({"cores": 2, "threads_per_core": 1}, 1, "1", "0"),
    ],
)
def test_choose_cores(tmp_path, topo, count, inference, housekeeping):
    plan = choose_cores(cpu_facts(tmp_path, ZEN5, **topo), count)
    assert plan.inference_cpulist == inference
    assert plan.housekeeping_cpulist == housekeeping
    assert plan.inference_cores == count
    assert 0 in plan.housekeeping_cpus
    assert "L3" in plan.reason


def test_too_few_cores_is_a_clear_error(tmp_path):
    cpu = cpu_facts(tmp_path, GENOA, cores=2)
    with pytest.raises(PlanError, match=r"asked for 12 .* set inference_cores: 1") as exc:
        choose_cores(cpu, 12)
    assert exc.value.fix == "set inference_cores: 1 (or fewer) in llmhost.yaml"


def test_single_core_host(tmp_path):
    with pytest.raises(PlanError, match="needs at least 2"):
        choose_cores(cpu_facts(tmp_path, GENOA, cores=1), 1)


def test_l3_domains_from_sysfs(tmp_path):
    cpu = cpu_facts(tmp_path, ZEN5, cores=16, threads_per_core=2, cores_per_l3=8)
    assert cpu.l3_domains == (
        L3Domain(0, (*range(0, 8), *range(16, 24)), 32768),
        L3Domain(1, (*range(8, 16), *range(24, 32)), 32768),
    )
    assert cpu.smt_sibling_sets[0] == (0, 16) and cpu.physical_cores == 16


@pytest.mark.parametrize(
    ("cpuinfo", "on", "off"),
    [
        (ZEN5, {"AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "AVX512_VBMI"}, {"AMX_TILE"}),
        (GENOA, {"AVX512", "AVX512_VNNI", "AVX512_BF16"}, {"AVX_VNNI", "AMX_INT8"}),
        (EMR, {"AVX512", "AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX_VNNI"}, set()),
    ],
)
def test_cmake_flags_match_cpu(tmp_path, cpuinfo, on, off):
    facts = gather(LiveSource(str(write_host_tree(tmp_path, cpuinfo, cores=4))), containers=False)
    evidence = amx_evidence(facts, Verdict.POSITIVE)
    flags = make_plan(
        facts, Config(inference_cores=2), evidence=evidence
    ).build.llama_cpu_cmake_flags
    assert "-DGGML_NATIVE=OFF" in flags
    assert not any("march=native" in f for f in flags)
    for name in on:
        assert f"-DGGML_{name}=ON" in flags
    for name in off:
        assert f"-DGGML_{name}=OFF" in flags


def amx_evidence(facts, verdict: Verdict) -> Evidence:
    """Evidence with one cpu_build.amx record on this host's kind of CPU, of `verdict`."""
    ratio = {Verdict.POSITIVE: 1.5, Verdict.NEGATIVE: 0.7}.get(verdict, 1.0)
    metric = Metric("llama 1B Q4_0", "pp512", ratio, ratio * 0.95, ratio * 1.05, 3, 3, verdict)
    hardware = Hardware(vendor=facts.cpu.vendor, microarchitecture=facts.cpu.microarchitecture)
    record = Record("cpu_build.amx", "AMX", "cpu", "llama-cpu", "plan vs plan without AMX",
                    hardware, (metric,), verdict, "results.json")  # fmt: skip
    return Evidence(0.02, (record,))


@pytest.mark.parametrize(
    ("evidence", "amx_on", "why"),
    [
        (None, False, "not measured"),
        (Verdict.NIL, False, "cpu_build.amx nil"),
        (Verdict.NEGATIVE, False, "cpu_build.amx negative"),
        (Verdict.POSITIVE, True, None),
    ],
)
def test_amx_only_where_measured_faster(tmp_path, evidence, amx_on, why):
    facts = gather(LiveSource(str(write_host_tree(tmp_path, EMR, cores=4))), containers=False)
    known = Evidence(0.02, ()) if evidence is None else amx_evidence(facts, evidence)
    plan = make_plan(facts, Config(inference_cores=2), evidence=known)
    flags = plan.build.llama_cpu_cmake_flags
    for switch in ("AMX_TILE", "AMX_INT8", "AMX_BF16"):
        assert f"-DGGML_{switch}={'ON' if amx_on else 'OFF'}" in flags
    assert "-DGGML_AVX512_VNNI=ON" in flags  # the rest of the ISA stays
    if why:
        assert why in plan.build.left_out["amx"]
        assert any(n.startswith("amx left out of the CPU build") for n in plan.notes)
    else:
        assert "amx" not in plan.build.left_out


def test_a_refused_image_leaves_its_feature_out(tmp_path):
    """A self-test crash recorded on a refused image of this CPU turns the feature off; an image
    refused on another CPU model does not."""
    facts = gather(LiveSource(str(write_host_tree(tmp_path, EMR, cores=4))), containers=False)
    labels = {
        our_labels.SELFTEST: "failed: llama-bench died with SIGILL at `vdpbf16ps`",
        our_labels.SELFTEST_LEAVE_OUT: "avx512_bf16",
        our_labels.SELFTEST_CPU: facts.cpu.model_name,
    }
    other = {
        **labels,
        our_labels.SELFTEST_CPU: "AMD EPYC 9654",
        our_labels.SELFTEST_LEAVE_OUT: "avx_vnni",
    }
    images = (ImageInfo(("llmhost/llama-cpu:refused",), labels, 0),
              ImageInfo(("elsewhere:refused",), other, 0))  # fmt: skip
    facts = dataclasses.replace(
        facts, containers=ContainerFacts(engine_reachable=True, engine_error=None, images=images)
    )
    plan = make_plan(
        facts, Config(inference_cores=2), evidence=amx_evidence(facts, Verdict.POSITIVE)
    )
    flags = plan.build.llama_cpu_cmake_flags
    assert "-DGGML_AVX512_BF16=OFF" in flags and "-DGGML_AVX_VNNI=ON" in flags
    assert "-DGGML_AMX_INT8=ON" in flags
    why = plan.build.left_out["avx512_bf16"]
    assert "SIGILL" in why and "docker rmi llmhost/llama-cpu:refused" in why


def test_avx2_only_cpu_turns_avx512_off(tmp_path):
    no512 = GENOA.replace(" avx512", " no512x")
    facts = gather(LiveSource(str(write_host_tree(tmp_path, no512, cores=4))), containers=False)
    plan = make_plan(facts, Config(inference_cores=2))
    flags = plan.build.llama_cpu_cmake_flags
    assert "-DGGML_AVX2=ON" in flags and "-DGGML_AVX512=OFF" in flags
    assert "-DGGML_AVX512_VNNI=OFF" in flags
    assert any("no AVX-512" in n for n in plan.notes)


def write_gguf(path, *, n_layer=4, n_embd=256, n_head=8, n_head_kv=4, n_ff=512, n_vocab=1000):
    """A real GGUF file (llama metadata + F32 tensors of the right shapes)."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_layer)
    w.add_embedding_length(n_embd)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_feed_forward_length(n_ff)
    w.add_context_length(4096)
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    w.add_tensor("token_embd.weight", np.zeros((n_vocab, n_embd), dtype=np.float32))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.ffn_up.weight", np.zeros((n_ff, n_embd), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_model_header_and_memory(tmp_path):
    header = read_model_header(write_gguf(tmp_path / "m.gguf"))
    assert (header.architecture, header.n_layer, header.n_embd) == ("llama", 4, 256)
    assert (header.n_head, header.n_head_kv, header.head_dim_k, header.n_vocab) == (8, 4, 32, 1000)
    assert header.weights_bytes == 4 * (1000 * 256 + 4 * 512 * 256)
    mem = model_memory("llama-cpu", header, ServiceConfig(port=1, ctx_size=1024, parallel=2))
    # K and V: layers x kv_heads x (32 + 32) dims x 2048 tokens x 2 bytes (f16)
    assert mem.kv_cache_bytes == 4 * 4 * 64 * 2048 * 2
    q8 = model_memory(
        "llama-cpu", header, ServiceConfig(port=1, ctx_size=1024, parallel=2, cache_type="q8_0")
    )
    assert q8.kv_cache_bytes == int(4 * 4 * 64 * 2048 * 34 / 32)


def test_hugepages_sized_from_model(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    facts = gather(
        LiveSource(str(write_host_tree(tmp_path / "h", GENOA, cores=2))), containers=False
    )
    svc = ServiceConfig(port=8001, model="m.gguf", ctx_size=1024, parallel=2)
    config = Config(
        inference_cores=1,
        models_dir=str(tmp_path),
        services={**Config().services, "llama-cpu": svc},
    )
    plan = make_plan(with_model_files(facts, config), config, "cpu")
    (mem,) = plan.hugepages.models
    need = (mem.weights_bytes + mem.kv_cache_bytes + mem.compute_bytes) * 1.10
    assert plan.hugepages.pages == -(-int(need) // (2 * 2**20)) + HUGEPAGE_SLACK_PAGES
    assert "m.gguf" in plan.hugepages.reason and "headroom" in plan.hugepages.reason
    assert plan.service("llama-cpu").args[:2] == ("--model", "/models/m.gguf")
    # gpu profile: weights live on the GPU; disabled: nothing.
    assert (
        make_plan(facts, replace(config, hugepages=HugepagesConfig(enabled=False))).hugepages.pages
        == 0
    )


def test_hugepages_boot_params_and_limits(tmp_path):
    facts = gather(
        LiveSource(str(write_host_tree(tmp_path, GENOA, cores=2, meminfo_kb=8 << 20))),
        containers=False,
    )
    config = Config(inference_cores=1, hugepages=HugepagesConfig(gib=1, boot_time=True))
    plan = make_plan(facts, config)
    assert plan.hugepages.pages == 512
    assert plan.kernel_params["hugepages"] == "512" and plan.kernel_params["hugepagesz"] == "2M"
    assert plan.kernel_params["isolcpus"] == "managed_irq,domain,1"
    assert plan.kernel_params["irqaffinity"] == "0"
    with pytest.raises(PlanError, match="more than 75%"):
        make_plan(facts, replace(config, hugepages=HugepagesConfig(gib=7)))


def test_no_model_means_no_pages(tmp_path):
    facts = gather(LiveSource(str(write_host_tree(tmp_path, GENOA, cores=2))), containers=False)
    plan = make_plan(facts, Config(inference_cores=1))
    assert plan.hugepages.pages == 0 and "no model configured" in plan.hugepages.reason


def test_missing_and_bad_models(tmp_path):
    from llmhost.errors import LlmhostError

    with pytest.raises(LlmhostError, match="does not exist"):
        read_model_header(tmp_path / "nope.gguf")
    (tmp_path / "bad.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(LlmhostError, match="not a GGUF file"):
        read_model_header(tmp_path / "bad.gguf")


def test_unknown_profile(tmp_path):
    facts = gather(LiveSource(str(write_host_tree(tmp_path, GENOA, cores=2))), containers=False)
    with pytest.raises(PlanError, match="unknown profile"):
        make_plan(facts, Config(inference_cores=1), "tpu")


@pytest.mark.parametrize(
    ("cpus", "available_gib", "job_mib", "jobs"),
    [
        (32, 64, 4096, 16),  # a 9950X with 64 GiB free: nvcc capped by memory, not cores
        (32, 128, 1024, 32),  # g++ jobs: one per CPU
        (2, 1, 4096, 1),  # never fewer than one
        (16, 0, 1024, 16),  # memory unknown: one per CPU
    ],
)
def test_compile_jobs_fit_in_memory(cpus, available_gib, job_mib, jobs):
    from llmhost.plan.planner import compile_jobs

    assert compile_jobs(cpus, available_gib * 1024 * 1024, job_mib) == jobs


def test_build_plan_caps_nvcc_jobs_by_memory(tmp_path):
    root = write_host_tree(tmp_path, ZEN5, cores=16, threads_per_core=2, meminfo_kb=64 << 20)
    plan = make_plan(gather(LiveSource(str(root)), containers=False), Config(inference_cores=2))
    assert plan.build.compile_jobs == 32
    assert plan.build.cuda_compile_jobs < plan.build.compile_jobs


@pytest.mark.parametrize(("physical", "inference"), [(2, 1), (4, 3), (8, 6), (16, 12), (32, 24)])
def test_default_inference_cores(tmp_path, physical, inference):
    """12 on a Ryzen 9 9950X's 16 cores, as the design asks; a quarter kept elsewhere."""
    from llmhost.plan.planner import default_inference_cores

    cpu = cpu_facts(tmp_path, ZEN5, cores=physical, threads_per_core=2)
    assert default_inference_cores(cpu) == inference


def _mlock_plan(tmp_path, cpuinfo: str, mlock: bool | None = None):
    facts = gather(LiveSource(str(write_host_tree(tmp_path, cpuinfo, cores=4))), containers=False)
    llama = replace(Config().services["llama-cpu"], mlock=mlock)
    config = Config(inference_cores=2, services={**Config().services, "llama-cpu": llama})
    return make_plan(facts, config, "cpu"), config


@pytest.mark.parametrize(
    ("cpuinfo", "mlock", "locked"),
    [
        (EMR, None, False),  # measured faster there, but only configured mlock is planned
        (EMR, False, False),
        (GENOA, None, False),  # not measured on Zen 4: off until `llmhost tune` says otherwise
        (GENOA, True, True),
    ],
)
def test_mlock_follows_the_evidence_unless_configured(tmp_path, cpuinfo, mlock, locked):
    from llmhost.actions.deploy import render_compose

    plan, config = _mlock_plan(tmp_path, cpuinfo, mlock)
    svc = plan.service("llama-cpu")
    assert svc.memlock is locked
    assert tuple(svc.args[-2:]) == ("--load-mode", "mlock") if locked else "mlock" not in svc.args
    compose = render_compose(plan, config)
    assert ("memlock: -1" in compose) is locked
    noted = [n for n in plan.notes if n.startswith("llama-cpu weights locked in RAM")]
    assert bool(noted) is locked
    if locked and mlock is None:
        assert "cpu.mlock measured faster on Emerald Rapids" in noted[0]
        assert "services.llama-cpu.mlock: false turns it off" in noted[0]
    (rec,) = [r for r in plan.recommendations if r.knob == "cpu.mlock"] or [None]
    if rec is not None:
        assert rec.applied is locked


def test_mlock_with_the_hugepage_pool_reads_the_weights_into_locked_hugetlb_buffers(tmp_path):
    """--load-mode mlock reads the weights (no mmap) into malloc'd buffers: glibc's hugetlb
    tunable still puts them in the pool, and the lock keeps them there."""
    plan, _ = _mlock_plan(tmp_path, EMR, True)
    svc = plan.service("llama-cpu")
    if plan.hugepages.pages:
        assert "glibc.malloc.hugetlb=2" in svc.env["GLIBC_TUNABLES"]
    assert svc.args.count("--load-mode") == 1
