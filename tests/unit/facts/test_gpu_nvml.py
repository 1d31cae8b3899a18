"""GPU facts through the NVML boundary, for hardware this machine lacks."""

import json

import pytest

from llmhost.facts import gather
from llmhost.facts.gpu import architecture_for, cuda_version_from_int, from_nvml
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config
from llmhost.plan.planner import PlanError, make_plan
from tests.support import (
    CPUINFO,
    FIXTURES,
    H100,
    NO_DRIVER,
    RTX_5090,
    FakeGpu,
    FakeNvml,
    write_host_tree,
)


@pytest.mark.parametrize(("value", "text"), [(13000, "13.0"), (12080, "12.8"), (12020, "12.2")])
def test_cuda_version(value, text):
    assert cuda_version_from_int(value) == text


@pytest.mark.parametrize(
    ("cc", "arch"),
    [
        ((12, 0), "Blackwell"),
        ((10, 0), "Blackwell"),
        ((9, 0), "Hopper"),
        ((8, 9), "Ada Lovelace"),
        ((8, 6), "Ampere"),
        ((7, 5), "Turing"),
        ((3, 5), "unknown (sm_35)"),
    ],
)
def test_architecture(cc, arch):
    assert architecture_for(cc) == arch


def test_blackwell_rtx5090():
    facts = from_nvml(FakeNvml(driver="580.95.05", cuda=13000, gpus=[RTX_5090]))
    (gpu,) = facts.gpus
    assert gpu.architecture == "Blackwell" and gpu.compute_capability == "12.0"
    assert gpu.memory_total_mib == 32607
    assert facts.cuda_driver_version == "13.0" and facts.error is None


def test_h100_matches_what_nvml_returned_on_the_device():
    raw = json.loads((FIXTURES / "device" / "h100-nvml.json").read_text())
    facts = from_nvml(FakeNvml(gpus=[H100]))
    (gpu,) = facts.gpus
    assert repr(facts.driver_version) == raw["driver"]
    assert gpu.compute_capability == "9.0"
    assert repr(gpu.name) == raw["gpus"][0]["nvmlDeviceGetName"]
    assert gpu.memory_total_mib == int(raw["gpus"][0]["nvmlDeviceGetMemoryInfo"]) // 2**20


def test_no_driver_is_a_fact():
    facts = from_nvml(FakeNvml(init_error=NO_DRIVER))
    assert facts.gpus == () and facts.driver_version is None
    assert facts.error == "no NVIDIA driver: libnvidia-ml.so (NVML) is not installed"


def test_driver_not_loaded():
    facts = from_nvml(FakeNvml(init_error="Driver Not Loaded"))
    assert facts.error == "the NVIDIA kernel driver is not loaded"


def test_real_pynvml_without_library_is_a_fact():
    pynvml = pytest.importorskip("pynvml")
    facts = from_nvml(pynvml)  # no libnvidia-ml.so on CI machines
    if facts.gpus:
        pytest.skip("this machine has an NVIDIA driver")
    assert facts.error and "NVIDIA" in facts.error


def _host(tmp_path, nvml):
    cpuinfo = (CPUINFO / "ryzen9-9950x.txt").read_text()
    write_host_tree(tmp_path, cpuinfo, cores=16, threads_per_core=2, cores_per_l3=8)
    return gather(LiveSource(str(tmp_path), nvml_module=nvml), containers=False)


def test_reference_box_plan(tmp_path):
    """The reference workstation: Ryzen 9 9950X + RTX 5090, CUDA 13 driver."""
    facts = _host(tmp_path, FakeNvml(driver="580.95.05", gpus=[RTX_5090]))
    assert facts.cpu.microarchitecture == "Zen 5"
    assert facts.cpu.codename == "Granite Ridge"
    plan = make_plan(facts, Config(), "all")
    assert plan.build.cuda_architectures == "120a-real"  # FP4 kernels, named exactly
    assert plan.build.torch_cuda_arch_list == "12.0"
    assert plan.build.cuda_version == "13.0.1"
    flags = plan.build.llama_cpu_cmake_flags
    assert "-DGGML_AVX512=ON" in flags and "-DGGML_AVX_VNNI=ON" in flags
    assert "-DGGML_AVX512_VNNI=ON" in flags and "-DGGML_AVX512_BF16=ON" in flags
    assert "-DGGML_AMX_TILE=OFF" in flags
    # 12 whole cores: all of CCD1 (cores 8-15) first, then cores 1-4 of CCD0; never core 0.
    assert plan.cores.inference_cpulist == "1-4,8-15,17-20,24-31"
    assert plan.cores.housekeeping_cpulist == "0,5-7,16,21-23"
    assert plan.cores.compute_cpus == (1, 2, 3, 4, *range(8, 16))
    assert plan.cores.l3_domains_used == (1, 0)
    llama_cpu = plan.service("llama-cpu")
    assert llama_cpu.threads == 12 and llama_cpu.cpuset == "1-4,8-15,17-20,24-31"
    # The GPU engines on the housekeeping cores but CPU 0's: llama-gpu one, vLLM the rest.
    assert plan.service("llama-gpu").cpuset == "5,21"
    assert plan.service("vllm-gpu").cpuset == "6-7,22-23"


def test_blackwell_on_old_driver_is_refused(tmp_path):
    facts = _host(tmp_path, FakeNvml(driver="565.57", cuda=12070, gpus=[RTX_5090]))
    with pytest.raises(PlanError, match=r"sm_120 GPUs need CUDA 12\.8"):
        make_plan(facts, Config(), "gpu")


def test_cuda12_driver_gets_a_cuda12_image(tmp_path):
    ada = FakeGpu("NVIDIA GeForce RTX 4090", "GPU-4090", (8, 9), 25757220864)
    facts = _host(tmp_path, FakeNvml(driver="570.86", cuda=12080, gpus=[ada]))
    plan = make_plan(facts, Config(), "gpu")
    assert plan.build.cuda_version == "12.8.1" and plan.build.cuda_architectures == "89"


def test_mixed_gpus_list_every_arch(tmp_path):
    facts = _host(tmp_path, FakeNvml(gpus=[RTX_5090, H100]))
    plan = make_plan(facts, Config(), "gpu")
    assert plan.build.cuda_architectures == "90;120a-real"
    assert plan.build.torch_cuda_arch_list == "9.0;12.0"


def test_gpu_profile_without_gpu(tmp_path):
    facts = _host(tmp_path, FakeNvml(init_error=NO_DRIVER))
    with pytest.raises(PlanError, match="needs an NVIDIA GPU"):
        make_plan(facts, Config(), "gpu")


# ---------------------------------------------------------------- the CUDA and architecture matrix

GTX_1080 = FakeGpu("NVIDIA GeForce GTX 1080", "GPU-1080", (6, 1), 8589934592)
V100 = FakeGpu("Tesla V100-SXM2-32GB", "GPU-v100", (7, 0), 34359738368)
B200 = FakeGpu("NVIDIA B200", "GPU-b200", (10, 0), 193273528320)


@pytest.mark.parametrize(
    ("gpu", "driver", "cuda", "image", "arch", "vllm"),
    [
        (RTX_5090, "580.95.05", 13000, "13.0.1", "120a-real", True),
        (RTX_5090, "570.86.10", 12080, "12.8.1", "120a-real", False),
        (GTX_1080, "580.95.05", 13000, "12.9.1", "61", False),  # CUDA 13 has no sm_61
        (V100, "580.95.05", 13000, "12.9.1", "70", False),  # nor sm_70
        (H100, "535.247.01", 12020, "12.2.2", "90", False),  # the 535 long-term branch
        (H100, "550.163.01", 12040, "12.4.1", "90", False),  # the 550 one
        (B200, "580.95.05", 13000, "13.0.1", "100", True),
    ],
)  # fmt: skip
def test_cuda_matrix(tmp_path, gpu, driver, cuda, image, arch, vllm):
    """Each GPU gets a CUDA image its driver runs and that still has its machine code, its exact
    architectures, and vllm-gpu only where vLLM's CUDA 13 images run (else a note says why)."""
    facts = _host(tmp_path, FakeNvml(driver=driver, cuda=cuda, gpus=[gpu]))
    plan = make_plan(facts, Config(), "gpu")
    assert plan.build.cuda_version == image
    assert plan.build.cuda_architectures == arch
    assert (plan.service("vllm-gpu") is not None) == vllm
    if not vllm:
        assert any(n.startswith("vllm-gpu left out:") for n in plan.notes), plan.notes
    assert plan.service("llama-gpu") is not None


def test_cuda_image_names_follow_the_version():
    from llmhost.actions.build import cuda_image

    assert cuda_image("12.2.2", "devel") == "nvidia/cuda:12.2.2-devel-ubuntu22.04"
    assert cuda_image("13.0.1", "runtime") == "nvidia/cuda:13.0.1-runtime-ubuntu24.04"


@pytest.mark.parametrize(
    ("nvml", "message"),
    [
        (FakeNvml(driver="580.95.05", cuda=13000,
                  gpus=[FakeGpu("NVIDIA Mystery", "GPU-x", None, 1 << 34)]),  # type: ignore[arg-type]
         "unknown compute capability: nothing is built for a guessed architecture"),
        (FakeNvml(driver="565.57", cuda=12070, gpus=[RTX_5090]), r"sm_120 GPUs need CUDA 12\.8"),
    ],
)  # fmt: skip
def test_unknown_gpu_or_driver_is_one_clear_refusal(tmp_path, nvml, message):
    facts = _host(tmp_path, nvml)
    with pytest.raises(PlanError, match=message):
        make_plan(facts, Config(), "gpu")


def test_a_cuda_version_llmhost_does_not_build_is_a_usage_error(tmp_path):
    from llmhost.plan.config import parse_config

    facts = _host(tmp_path, FakeNvml(gpus=[H100]))
    with pytest.raises(PlanError, match=r"images.cuda_version must be one of") as exc:
        make_plan(facts, parse_config({"images": {"cuda_version": "11.8.0"}}), "gpu")
    assert exc.value.exit_code == 2
