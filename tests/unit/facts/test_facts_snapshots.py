"""Detection over real captured snapshots: the CI machines' kinds and the H100 device machine."""

from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config
from llmhost.plan.planner import make_plan
from llmhost.verify.doctor.host_checks import cpu_microarchitecture
from llmhost.verify.doctor.result import Context
from tests.support import H100_SNAPSHOT, XEON_VM_SNAPSHOT, ZEN4_SNAPSHOT


def test_zen4_epyc_snapshot():
    facts = gather(SnapshotSource(ZEN4_SNAPSHOT))
    cpu = facts.cpu
    assert (cpu.vendor, cpu.family, cpu.model) == ("AuthenticAMD", 25, 0x11)
    assert cpu.microarchitecture == "Zen 4"
    assert cpu.codename == "Genoa"
    for flag in (
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512dq",
        "avx512_vnni",
        "avx512_bf16",
    ):
        assert cpu.has(flag), flag
    assert not cpu.has("avx_vnni") and not cpu.has("amx_tile")
    assert cpu.logical_cpus == (0, 1) and cpu.physical_cores == 2
    assert [d.cpus for d in cpu.l3_domains] == [(0, 1)]
    assert facts.gpu.gpus == ()
    assert facts.gpu.error and "no NVIDIA driver" in facts.gpu.error
    assert facts.memory.pool(2048) is not None
    assert facts.memory.thp_enabled == "madvise"


def test_h100_snapshot_gpu_and_cpu():
    facts = gather(SnapshotSource(H100_SNAPSHOT))
    assert facts.gpu.driver_version == "580.159.04"
    assert facts.gpu.cuda_driver_version == "13.0"
    (gpu,) = facts.gpu.gpus
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.compute_capability == "9.0"
    assert gpu.architecture == "Hopper"
    assert gpu.memory_total_mib == 81559
    assert gpu.pcie_generation == 5 and gpu.pcie_width == 16
    cpu = facts.cpu
    assert cpu.vendor == "GenuineIntel" and cpu.model == 0xCF
    assert cpu.microarchitecture == "Emerald Rapids"
    for flag in ("amx_tile", "amx_int8", "amx_bf16", "avx_vnni", "avx512_vnni", "avx512_bf16"):
        assert cpu.has(flag), flag
    assert len(cpu.logical_cpus) == 16 and cpu.physical_cores == 16


def test_h100_snapshot_plan():
    facts = gather(SnapshotSource(H100_SNAPSHOT))
    plan = make_plan(facts, Config(), "gpu")
    assert plan.build.cuda_architectures == "90"
    assert plan.build.torch_cuda_arch_list == "9.0"
    assert plan.build.cuda_version.startswith("13.0")
    # AMX follows the shipped evidence for Emerald Rapids (tests/unit/plan/test_plan.py covers
    # the rule).
    amx = "-DGGML_AMX_INT8=ON" in plan.build.llama_cpu_cmake_flags
    assert amx == ("amx" not in plan.build.left_out)
    assert "-DGGML_AVX512_VNNI=ON" in plan.build.llama_cpu_cmake_flags
    # The gpu profile isolates nothing; the GPU engines get every core but CPU 0's: llama-gpu
    # a quarter (15 cores -> 3), vLLM the rest.
    assert plan.cores.inference_cpus == () and plan.kernel_params == {}
    assert [s.name for s in plan.services] == ["llama-gpu", "vllm-gpu"]
    assert plan.service("llama-gpu").cpuset == "1-3"
    assert plan.service("vllm-gpu").cpuset == "4-15"
    # With llama-cpu (profile all) the 12 isolated cores are its own; the GPU engines share the
    # housekeeping cores but CPU 0.
    plan = make_plan(facts, Config(), "all")
    assert plan.cores.inference_cpus == tuple(range(1, 13))
    assert plan.cores.housekeeping_cpus == (0, 13, 14, 15)
    assert plan.service("llama-gpu").cpuset == "13"
    assert plan.service("vllm-gpu").cpuset == "14-15"


def test_zen4_snapshot_plan_cpu():
    facts = gather(SnapshotSource(ZEN4_SNAPSHOT))
    plan = make_plan(facts, Config(inference_cores=1), "cpu")
    flags = plan.build.llama_cpu_cmake_flags
    assert "-DGGML_AVX512=ON" in flags and "-DGGML_AVX512_VNNI=ON" in flags
    assert "-DGGML_AVX512_BF16=ON" in flags and "-DGGML_AVX_VNNI=OFF" in flags
    assert "-DGGML_AMX_TILE=OFF" in flags and "-DGGML_NATIVE=OFF" in flags
    assert plan.cores.inference_cpus == (1,) and plan.cores.housekeeping_cpus == (0,)


def test_a_vm_reporting_an_older_cpu_model_is_named_by_its_instruction_sets():
    """This CI machine kind reports Rocket Lake's model, which has no AMX, yet offers AMX and
    AVX-512 FP16: it is a Sapphire or Emerald Rapids host, and the plan judges AMX by the
    Emerald Rapids evidence (the CPU image's self-test still gates it)."""
    facts = gather(SnapshotSource(XEON_VM_SNAPSHOT))
    cpu = facts.cpu
    assert (cpu.vendor, cpu.family, cpu.model) == ("GenuineIntel", 6, 0xA7)
    assert cpu.microarchitecture == "Sapphire/Emerald Rapids"
    plan = make_plan(facts, Config(inference_cores=1), "cpu")
    assert "amx" not in plan.build.left_out
    assert "-DGGML_AMX_INT8=ON" in plan.build.llama_cpu_cmake_flags
    finding = cpu_microarchitecture(Context(facts, Config(), "cpu", plan, None, None, False))
    assert "the model it reports is Rocket Lake's, which has no amx_tile" in finding.detail
    emr = gather(SnapshotSource(H100_SNAPSHOT))  # a model that agrees keeps its name
    assert emr.cpu.microarchitecture == "Emerald Rapids"
    context = Context(emr, Config(), "cpu", None, None, None, False)
    assert "reports" not in cpu_microarchitecture(context).detail
