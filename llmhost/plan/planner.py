"""Facts + config -> Plan: cores, hugepages, build flags, services. Pure: no I/O (model
headers are facts, gathered through the same Source).

Everything the CLI, the templates and the Ansible roles decide is decided here, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llmhost.cpulist import format_cpulist
from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts, our_labels
from llmhost.facts.cpu import CpuFacts
from llmhost.facts.gpu import GpuFacts
from llmhost.facts.isa import FEATURES as ISA_FEATURES
from llmhost.facts.isa import LEAVE_OUT_GROUPS
from llmhost.facts.isa import enabled as isa_enabled
from llmhost.facts.models import HfModel, ModelFacts, ModelHeader, ModelUnreadable
from llmhost.plan.config import Config, ServiceConfig
from llmhost.plan.evidence import (
    Evidence,
    Recommendation,
    Verdict,
    load_evidence,
    recommend,
    verdict_here,
)
from llmhost.plan.gpu_memory import (
    CACHE_TYPE_BYTES,
    UBATCH,
    GpuMemoryPlan,
    LlamaDemand,
    VllmDemand,
    plan_gpu_memory,
)
from llmhost.plan.services import (
    HOST_MEMORY_HEADROOM,
    LLAMA_CPP,
    REGISTRY,
    SERVING,
    TARGETS,
    VLLM,
    Knobs,
    LlamaKnobs,
    ServiceSpec,
    VllmKnobs,
)

HUGEPAGE_KB = 2048
IMAGES: dict[str, str] = {name: spec.image for name, spec in REGISTRY.items()}
# CUDA container versions we build on, newest last, with the Ubuntu of their images; a driver runs
# images up to its own CUDA (12.2: the 535 long-term branch, 12.4: 550).
CUDA_IMAGES: dict[str, str] = {
    "12.2.2": "ubuntu22.04",
    "12.4.1": "ubuntu22.04",
    "12.6.3": "ubuntu24.04",
    "12.8.1": "ubuntu24.04",
    "12.9.1": "ubuntu24.04",
    "13.0.1": "ubuntu24.04",
}
CUDA_IMAGE_VERSIONS: tuple[str, ...] = tuple(CUDA_IMAGES)
# The first CUDA release with machine code for each architecture (CUDA release notes: 12.8 added
# sm_100 and sm_120, 12.9 sm_103 and sm_121; 13.0 renamed Thor's sm_101 to sm_110).
MIN_CUDA_FOR_CC: dict[tuple[int, int], str] = {
    (10, 0): "12.8",
    (10, 1): "12.8",
    (10, 3): "12.9",
    (11, 0): "13.0",
    (12, 0): "12.8",
    (12, 1): "12.9",
}
# CUDA 13.0 dropped Maxwell, Pascal and Volta (sm_50 to sm_72): 12.9 is their last release.
LAST_CUDA_BELOW_TURING = "12.9"
TURING = (7, 5)
# Architecture-specific code ("a": FP4/MXFP4 block-scaled MMA on consumer Blackwell) named
# exactly, so a llama.cpp tree that does not rewrite 120 -> 120a still gets those kernels.
EXACT_ARCH: dict[tuple[int, int], str] = {(12, 0): "120a-real", (12, 1): "121a-real"}
# vLLM's images are CUDA 13 builds: they need a CUDA 13 driver (580+) and Turing or newer.
VLLM_MIN_DRIVER_CUDA = "13.0"
# Largest share of RAM llmhost will ever pin in hugepages; the host must keep working.
MAX_HUGEPAGE_RAM_FRACTION = 0.75


@dataclass(frozen=True)
class CorePlan:
    inference_cores: int
    inference_cpus: tuple[int, ...]  # every logical CPU of the chosen cores (isolated)
    compute_cpus: tuple[int, ...]  # one CPU per chosen core: where llama.cpp threads run
    housekeeping_cpus: tuple[int, ...]
    l3_domains_used: tuple[int, ...]
    reason: str

    @property
    def inference_cpulist(self) -> str:
        return format_cpulist(self.inference_cpus)

    @property
    def housekeeping_cpulist(self) -> str:
        return format_cpulist(self.housekeeping_cpus)


@dataclass(frozen=True)
class ModelMemory:
    service: str
    model: str
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int


@dataclass(frozen=True)
class HugepagePlan:
    page_kb: int
    pages: int
    models: tuple[ModelMemory, ...]
    headroom_pct: float
    reason: str

    @property
    def bytes(self) -> int:
        return self.pages * self.page_kb * 1024


@dataclass(frozen=True)
class BuildPlan:
    cpu_isa: tuple[str, ...]
    llama_cpu_cmake_flags: tuple[str, ...]
    cuda_architectures: str | None
    torch_cuda_arch_list: str | None
    cuda_version: str | None
    reason: str
    cpu_model: str = ""  # the CPU the build is for, as /proc/cpuinfo names it
    left_out: dict[str, str] = field(default_factory=dict)  # ISA feature -> why it is off
    compile_jobs: int = 1  # C++ compile jobs: one per CPU, as many as memory holds
    cuda_compile_jobs: int = 1  # nvcc jobs, which need several times more memory each


@dataclass(frozen=True)
class ServicePlan:
    """One service as it will run: its registry fields, its typed knobs, and the arguments and
    environment rendered from them (kept rendered so the plan's JSON shows them)."""

    name: str
    profile: str  # the profile that deploys it: its device, "cpu" or "gpu"
    engine: str
    serving: str
    image: str
    port: int
    container_port: int
    bind_address: str
    cpuset: str
    threads: int
    gpu: bool
    gpus: tuple[int, ...]
    model: str | None
    knobs: Knobs
    args: tuple[str, ...]
    env: dict[str, str]
    start_period_s: int
    targets: dict[str, float]
    bench_concurrency: int  # the smoke bench's concurrency, where `targets` apply
    api_key_env: str
    shm_size: str | None
    memlock: bool = False
    read_only_root: bool = False
    memory_limit_mib: int | None = None  # the container's host RAM cap; None: not sized


@dataclass(frozen=True)
class Plan:
    profile: str
    hostname: str
    cores: CorePlan
    hugepages: HugepagePlan
    build: BuildPlan
    services: tuple[ServicePlan, ...]
    kernel_params: dict[str, str]
    notes: tuple[str, ...]
    # What the measurements say about each tuning knob on this kind of host; annotation only.
    recommendations: tuple[Recommendation, ...] = ()
    gpu_memory: GpuMemoryPlan | None = None

    def service(self, name: str) -> ServicePlan | None:
        return next((s for s in self.services if s.name == name), None)


class PlanError(LlmhostError):
    """The facts cannot satisfy the configuration."""


# ---------------------------------------------------------------- cores


def choose_cores(cpu: CpuFacts, count: int) -> CorePlan:
    """Whole physical cores, never CPU 0's, filling the emptiest-of-housekeeping L3 first."""
    cpu0_core = next((s for s in cpu.smt_sibling_sets if 0 in s), (0,))
    candidates = [s for s in cpu.smt_sibling_sets if s != cpu0_core]
    if not candidates:
        raise PlanError(
            f"this host has {cpu.physical_cores} physical core(s); llmhost needs at least 2 "
            "(one for housekeeping, one for inference)"
        )
    if count > len(candidates):
        fix = f"set inference_cores: {len(candidates)} (or fewer) in llmhost.yaml"
        raise PlanError(
            f"asked for {count} inference cores but this host has {cpu.physical_cores} physical "
            f"cores and CPU 0's core stays for housekeeping: {fix}",
            fix=fix,
        )
    domain_of: dict[int, int] = {}
    for domain in cpu.l3_domains:
        for c in domain.cpus:
            domain_of[c] = domain.id
    by_domain: dict[int, list[tuple[int, ...]]] = {}
    for core in candidates:
        by_domain.setdefault(domain_of.get(core[0], 0), []).append(core)
    cpu0_domain = domain_of.get(0, 0)
    # Domains without CPU 0 first, then the largest; so housekeeping keeps CPU 0's L3 to itself.
    order = sorted(by_domain, key=lambda d: (d == cpu0_domain, -len(by_domain[d]), d))
    chosen: list[tuple[int, ...]] = []
    used: list[int] = []
    for domain_id in order:
        if len(chosen) == count:
            break
        take = by_domain[domain_id][: count - len(chosen)]
        chosen.extend(take)
        used.append(domain_id)
    inference = tuple(sorted(c for core in chosen for c in core))
    housekeeping = tuple(c for c in cpu.logical_cpus if c not in inference)
    smt = "with their SMT siblings" if cpu.smt_active else "(no SMT siblings on this host)"
    reason = (
        f"{count} of {cpu.physical_cores} physical cores {smt} from L3 domain(s) "
        f"{', '.join(map(str, used))} ({len(cpu.l3_domains)} in all); CPU 0's core and the rest "
        f"({format_cpulist(housekeeping)}) stay for the OS, IRQs and Docker"
    )
    return CorePlan(
        inference_cores=count,
        inference_cpus=inference,
        compute_cpus=tuple(sorted(core[0] for core in chosen)),
        housekeeping_cpus=housekeeping,
        l3_domains_used=tuple(used),
        reason=reason,
    )


def default_inference_cores(cpu: CpuFacts) -> int:
    """All physical cores but a quarter (at least one: CPU 0's) kept for the OS, IRQs and Docker:
    12 of a Ryzen 9 9950X's 16, 1 of 2, 24 of 32."""
    cores = cpu.physical_cores
    return max(1, cores - max(1, math.ceil(cores / 4)))


def default_profile(facts: HostFacts) -> str:
    """The profile the hardware suggests: the GPU services where an NVIDIA GPU is usable."""
    return "gpu" if facts.gpu.present else "cpu"


def kernel_params(cores: CorePlan, hugepages: HugepagePlan, boot_hugepages: bool) -> dict[str, str]:
    """The boot parameters (tuned's cpu-partitioning set) llmhost's GRUB drop-in carries."""
    isolated = cores.inference_cpulist
    params = {}
    if cores.inference_cpus:
        params = {
            "isolcpus": f"managed_irq,domain,{isolated}",
            "nohz_full": isolated,
            "rcu_nocbs": isolated,
            "irqaffinity": cores.housekeeping_cpulist,
        }
    if boot_hugepages and hugepages.pages:
        params.update(hugepagesz=f"{hugepages.page_kb // 1024}M", hugepages=str(hugepages.pages))
    return params


# ---------------------------------------------------------------- hugepages


def model_memory(service: str, header: ModelHeader, svc: ServiceConfig) -> ModelMemory:
    """Weights + KV cache for the service's tokens + compute buffers, as llama.cpp's CPU backend
    allocates them."""
    n_ctx = llama_kv_tokens(REGISTRY[service], svc)
    kv = int(header.kv_bytes_per_token * n_ctx * CACHE_TYPE_BYTES[svc.cache_type])
    # Compute buffer: logits for one ubatch + activations (f32), measured ~this size in llama.cpp.
    compute = 4 * UBATCH * (header.n_vocab + 4 * header.n_embd + 2 * header.n_ff)
    return ModelMemory(service, header.path, header.weights_bytes, kv, compute)


def memory_limit_mib(
    spec: ServiceSpec, svc: ServiceConfig, model: ModelHeader | HfModel | None, knobs: Knobs
) -> int | None:
    """The container's memory limit: what the model puts in host RAM (weights, and KV and
    compute buffers where llama.cpp keeps them on the CPU) plus the engine's processes, with
    HOST_MEMORY_HEADROOM. None where the model was not read: nothing to size it from."""
    if svc.memory_limit_gib is not None:
        return math.ceil(svc.memory_limit_gib * 1024)
    if isinstance(model, ModelHeader):
        mem = model_memory(spec.name, model, svc)
        need = mem.weights_bytes
        gpu_layers = knobs.gpu_layers if isinstance(knobs, LlamaKnobs) else None
        if gpu_layers is None or gpu_layers < model.n_layer:  # KV and compute on the CPU
            need += mem.kv_cache_bytes + mem.compute_bytes
    elif isinstance(model, HfModel):
        need = model.weights_bytes
    else:
        return None
    engine = spec.host_memory.base_mib + spec.host_memory.per_front_end_mib * knobs.front_ends
    return math.ceil((need / 2**20 + engine) * HOST_MEMORY_HEADROOM)


def plan_hugepages(
    config: Config, headers: Models, total_ram_kb: int, profile: str
) -> HugepagePlan:
    hp = config.hugepages
    if not hp.enabled:
        return HugepagePlan(HUGEPAGE_KB, 0, (), hp.headroom_pct, "hugepages disabled in config")
    if profile == "gpu":
        return HugepagePlan(
            HUGEPAGE_KB, 0, (), hp.headroom_pct, "gpu profile: weights live in GPU memory"
        )
    if hp.gib is not None:
        pages = math.ceil(hp.gib * 1024 * 1024 / HUGEPAGE_KB)
        reason = f"fixed size from config: {hp.gib} GiB"
        models: tuple[ModelMemory, ...] = ()
    else:
        svc = config.services["llama-cpu"]
        header = headers.get("llama-cpu")
        if not isinstance(header, ModelHeader):
            return HugepagePlan(
                HUGEPAGE_KB,
                0,
                (),
                hp.headroom_pct,
                "no model configured for llama-cpu: nothing to back with hugepages "
                "(set services.llama-cpu.model, or hugepages.gib for a fixed size)",
            )
        mem = model_memory("llama-cpu", header, svc)
        need = (mem.weights_bytes + mem.kv_cache_bytes + mem.compute_bytes) * (
            1 + hp.headroom_pct / 100
        )
        pages = math.ceil(need / (HUGEPAGE_KB * 1024)) + HUGEPAGE_SLACK_PAGES
        models = (mem,)
        mib = 1024 * 1024
        reason = (
            f"{Path(header.path).name}: weights {mem.weights_bytes / mib:.0f} MiB + KV cache "
            f"{mem.kv_cache_bytes / mib:.0f} MiB ({svc.ctx_size} tokens x "
            f"{parallel_of(REGISTRY['llama-cpu'], svc)} slots, "
            f"{svc.cache_type}) + compute {mem.compute_bytes / mib:.0f} MiB, "
            f"+{hp.headroom_pct:g}% headroom + {HUGEPAGE_SLACK_PAGES} pages for glibc's heap"
        )
    limit = int(total_ram_kb * MAX_HUGEPAGE_RAM_FRACTION / HUGEPAGE_KB)
    if total_ram_kb and pages > limit:
        raise PlanError(
            f"hugepages would take {pages * 2 / 1024:.1f} GiB, more than "
            f"{MAX_HUGEPAGE_RAM_FRACTION:.0%} of this host's {total_ram_kb / 1048576:.1f} GiB RAM: "
            "use a smaller model or context, or set hugepages.enabled: false"
        )
    return HugepagePlan(HUGEPAGE_KB, pages, models, hp.headroom_pct, reason)


# ---------------------------------------------------------------- build flags

# What leaving one feature out turns off (llmhost.facts.isa: AMX's kernels need AVX-512 VNNI, so
# they go with it).
LEAVE_OUT_SWITCHES = LEAVE_OUT_GROUPS


def cpu_cmake_flags(
    cpu: CpuFacts, leave_out: Iterable[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Explicit ISA switches (not -march=native) so an image built elsewhere matches this CPU;
    the features in `leave_out` (LEAVE_OUT_SWITCHES' keys) are switched off."""
    flags = ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF"]
    isa = isa_enabled(set(cpu.flags), tuple(leave_out))
    flags += [f"-D{f.switch}={'ON' if f.name in isa else 'OFF'}" for f in ISA_FEATURES]
    return tuple(flags), tuple(isa)


AMX_KNOB = "cpu_build.amx"
# Peak memory of one compile job: g++ on llama.cpp's largest units, nvcc on its template-heavy
# CUDA kernels (several GiB each; 32 at once exhaust a 64 GiB workstation).
CXX_JOB_MIB, NVCC_JOB_MIB = 1024, 4096


def compile_jobs(logical_cpus: int, available_kb: int, job_mib: int) -> int:
    """Parallel compile jobs: one per CPU, no more than the available memory holds."""
    by_memory = available_kb // 1024 // job_mib if available_kb else logical_cpus
    return max(1, min(logical_cpus, by_memory))


def isa_left_out(facts: HostFacts, evidence: Evidence) -> dict[str, str]:
    """ISA features this host's build goes without, and why: kernels that crashed in an image's
    self-test on this CPU (a refused image records it), and AMX unless measured faster here."""
    out: dict[str, str] = {}
    for image in facts.containers.images:
        feature = image.labels.get(our_labels.SELFTEST_LEAVE_OUT)
        if feature in LEAVE_OUT_SWITCHES and (
            image.labels.get(our_labels.SELFTEST_CPU) == facts.cpu.model_name
        ):
            tag = image.tags[0] if image.tags else "a refused image"
            detail = image.labels.get(our_labels.SELFTEST, "").removeprefix("failed: ")
            out[feature] = (
                f"its kernels crashed in the self-test of {tag} on this CPU ({detail}); "
                f"`docker rmi {tag}` lets the next plan try it again"
            )
    if facts.cpu.has("amx_int8") and "amx" not in out:
        verdict, basis = verdict_here(evidence, AMX_KNOB, facts)
        if verdict is not Verdict.POSITIVE:
            out["amx"] = (
                f"not measured faster than the same build without AMX on "
                f"{facts.cpu.microarchitecture} ({AMX_KNOB} {verdict}: {basis})"
            )
    return out


def plan_mlock(config: Config) -> tuple[bool, str | None]:
    """Whether llama-cpu locks its weights in RAM, and why when on: only where llmhost.yaml asks.
    Not from evidence alone: where the container's memlock limit cannot be raised (a dockerd
    without CAP_SYS_RESOURCE) llama-server cannot lock, so doctor would fail what the plan chose.
    """
    if not config.services["llama-cpu"].mlock:
        return False, None
    return True, "llama-cpu weights locked in RAM (services.llama-cpu.mlock)"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def cuda_plan(gpu: GpuFacts, override: str | None) -> tuple[str | None, str | None, str | None]:
    """(CMAKE_CUDA_ARCHITECTURES, TORCH_CUDA_ARCH_LIST, CUDA image version) for these GPUs: the
    newest CUDA image the driver runs that still has machine code for every one of them."""
    unknown = [g for g in gpu.gpus if not g.cc_tuple]
    if unknown:
        raise PlanError(
            f"GPU {unknown[0].index} ({unknown[0].name}) has an unknown compute capability: "
            "nothing is built for a guessed architecture; set images.cuda_version and check "
            "`nvidia-smi --query-gpu=compute_cap --format=csv`"
        )
    caps = sorted({g.cc_tuple for g in gpu.gpus if g.cc_tuple})
    if not caps:
        return None, None, None
    cmake = ";".join(EXACT_ARCH.get(cc, f"{cc[0]}{cc[1]}") for cc in caps)
    torch = ";".join(f"{a}.{b}" for a, b in caps)
    if override:
        if override not in CUDA_IMAGES:
            raise PlanError(
                f"images.cuda_version must be one of {', '.join(CUDA_IMAGES)} (got {override!r})",
                exit_code=2,
            )
        return cmake, torch, override
    if not gpu.cuda_driver_version or not _version_tuple(gpu.cuda_driver_version):
        raise PlanError(
            f"the NVIDIA driver's CUDA version is unknown ({gpu.cuda_driver_version!r}): "
            "set images.cuda_version, or check `nvidia-smi`"
        )
    driver = _version_tuple(gpu.cuda_driver_version)[:2]
    for cc in caps:
        need = MIN_CUDA_FOR_CC.get(cc)
        if need and driver < _version_tuple(need):
            raise PlanError(
                f"sm_{cc[0]}{cc[1]} GPUs need CUDA {need}+ but the driver supports "
                f"{gpu.cuda_driver_version}: upgrade the NVIDIA driver"
            )
    newest = min(
        (_version_tuple(LAST_CUDA_BELOW_TURING) if cc < TURING else (99, 9)) for cc in caps
    )
    usable = [v for v in CUDA_IMAGE_VERSIONS if _version_tuple(v)[:2] <= min(driver, newest)]
    if not usable:
        raise PlanError(
            f"the NVIDIA driver supports CUDA {gpu.cuda_driver_version}, older than every CUDA "
            f"image llmhost builds ({CUDA_IMAGE_VERSIONS[0]}+): upgrade the driver"
        )
    return cmake, torch, usable[-1]


def vllm_refusal(gpu: GpuFacts) -> str | None:
    """Why vLLM's CUDA 13 images cannot run on this host, or None."""
    old = [g for g in gpu.gpus if g.cc_tuple and g.cc_tuple < TURING]
    if old:
        return (
            f"vllm-gpu left out: its CUDA 13 images need Turing (sm_75) or newer, and "
            f"{old[0].name} is sm_{old[0].cc_tuple[0]}{old[0].cc_tuple[1]}; llama-gpu serves "
            "this GPU"
        )
    driver = _version_tuple(gpu.cuda_driver_version or "0")[:2]
    if driver < _version_tuple(VLLM_MIN_DRIVER_CUDA):
        return (
            f"vllm-gpu left out: its CUDA 13 images need a 580+ driver and this one "
            f"({gpu.driver_version}) supports CUDA {gpu.cuda_driver_version}; upgrade the driver "
            "to serve vLLM (llama-gpu uses the newest CUDA image this driver runs)"
        )
    return None


# ---------------------------------------------------------------- services


# Pages beyond the model's own needs: glibc's main heap and small allocations also come from
# the pool once the tunable is on (measured: ~16 pages for llama-server on a tiny model).
HUGEPAGE_SLACK_PAGES = 16
# llama.cpp GPU services' share of the CPUs the GPU engines get (vLLM's API server, tokenizer and
# engine process want more); at least one core, at most this many.
LLAMA_GPU_MAX_CORES = 4
# vLLM's HTTP front end is one Python process unless told otherwise: it parses, tokenizes,
# detokenizes and streams every request itself, so a burst of new users queues behind it
# (~2 ms each on the H200 machine's Xeon: TTFT p90 112 ms at 32 users, 143 ms at 64,
# benchmarks/results/h200-2026-11-29; 4 against 1 in one run: 57 against 93 ms at 32 users,
# benchmarks/results/h200x2-2026-11-30). More front-end processes share that work; the engine
# keeps a CPU per process of its own (the scheduler, and one per GPU worker when
# tensor-parallel), and each front end gets two.
VLLM_MAX_API_SERVERS = 4
Models = dict[str, ModelHeader | HfModel]


def serving_of(spec: ServiceSpec, svc: ServiceConfig) -> str:
    return svc.serving or spec.default_serving


def parallel_of(spec: ServiceSpec, svc: ServiceConfig) -> int | None:
    """Slots (llama.cpp) or max-num-seqs (vLLM): explicit, else the serving configuration's
    (None: vLLM's is sized by the GPU memory plan)."""
    return svc.parallel or SERVING[(spec.engine, spec.device, serving_of(spec, svc))].parallel


def llama_kv_tokens(spec: ServiceSpec, svc: ServiceConfig) -> int:
    """llama.cpp's --ctx-size: per-slot context x slots, or one shared pool (kv_unified)."""
    preset = SERVING[(spec.engine, spec.device, serving_of(spec, svc))]
    if svc.kv_tokens:
        return svc.kv_tokens
    if preset.kv_unified:
        return svc.ctx_size * preset.kv_tokens_per_ctx
    return svc.ctx_size * (parallel_of(spec, svc) or 1)


def vllm_api_servers(cpus: int, tensor_parallel_size: int) -> int:
    """Front-end processes for a vLLM engine given `cpus` host CPUs: 1 to VLLM_MAX_API_SERVERS."""
    engine = 1 + (tensor_parallel_size if tensor_parallel_size > 1 else 0)
    return max(1, min(VLLM_MAX_API_SERVERS, (cpus - engine) // 2))


def gpu_engine_cpus(
    cpu: CpuFacts, cores: CorePlan, profile: str, specs: list[ServiceSpec]
) -> tuple[dict[str, tuple[int, ...]], str]:
    """CPUs for the GPU engines' host threads, off CPU 0's core (the OS and IRQs) where the host
    has more: every other core with the gpu profile (nothing is isolated then), the housekeeping
    cores next to llama-cpu's isolated ones with `all`. llama.cpp's GPU services take a few
    cores, vLLM the rest."""
    gpu_specs = [s for s in specs if s.device == "gpu"]
    if not gpu_specs:
        return {}, ""
    cpu0_core = next((c for c in cpu.smt_sibling_sets if 0 in c), (0,))
    pool_cores = [c for c in cpu.smt_sibling_sets if not set(c) & set(cores.inference_cpus)] or [
        cpu0_core
    ]
    if len(pool_cores) > 1:
        pool_cores = [c for c in pool_cores if c != cpu0_core]
    llamas = [s for s in gpu_specs if s.engine == LLAMA_CPP]
    others = [s for s in gpu_specs if s.engine != LLAMA_CPP]
    n_llama = 0 if not others else min(LLAMA_GPU_MAX_CORES, max(1, len(pool_cores) // 4))
    out: dict[str, tuple[int, ...]] = {}
    for s in llamas:
        chosen = pool_cores[:n_llama] if others and len(pool_cores) > 1 else pool_cores
        out[s.name] = tuple(sorted(c for core in chosen for c in core))
    for s in others:
        chosen = pool_cores[n_llama:] if llamas and len(pool_cores) > 1 else pool_cores
        out[s.name] = tuple(sorted(c for core in chosen for c in core))
    where = (
        "every core but CPU 0's (nothing is isolated with the gpu profile)"
        if profile == "gpu"
        else "the cores llama-cpu's isolation leaves, CPU 0's excepted where there are more"
    )
    reason = (
        "GPU engines' host threads on "
        + where
        + ": "
        + ", ".join(f"{name} {format_cpulist(c)}" for name, c in out.items())
    )
    return out, reason


def _gpu_demands(config: Config, specs: list[ServiceSpec], models: Models) -> list:
    demands: list[LlamaDemand | VllmDemand] = []
    for spec in specs:
        svc = config.services[spec.name]
        model = models.get(spec.name)
        if spec.device != "gpu":
            continue
        if spec.engine == LLAMA_CPP:
            header = model if isinstance(model, ModelHeader) else None
            demands.append(
                LlamaDemand(
                    spec.name,
                    header,
                    llama_kv_tokens(spec, svc),
                    svc.cache_type,
                    svc.gpu_layers,
                    svc.gpus,
                )
            )
        elif spec.engine == VLLM:
            hf = model if isinstance(model, HfModel) else None
            demands.append(
                VllmDemand(
                    spec.name,
                    hf,
                    svc.ctx_size,
                    svc.kv_cache_dtype,
                    parallel_of(spec, svc),
                    svc.gpu_memory_utilization,
                    svc.tensor_parallel_size,
                    svc.gpus,
                )
            )
    return demands


def _knobs(
    spec: ServiceSpec,
    svc: ServiceConfig,
    cores: CorePlan,
    cpus: tuple[int, ...],
    threads: int,
    use_pages: bool,
    memory: GpuMemoryPlan | None,
    cors_origin: str,
    mlock: bool = False,
) -> Knobs:
    preset = SERVING[(spec.engine, spec.device, serving_of(spec, svc))]
    model = f"/models/{svc.model}" if svc.model else None
    cuda_graphs = preset.cuda_graphs if svc.cuda_graphs is None else svc.cuda_graphs
    if spec.engine == VLLM:
        place = memory.placements[spec.name] if memory else None
        tp = place.tensor_parallel_size if place else 1
        return VllmKnobs(
            port=spec.container_port,
            model=model,
            max_model_len=svc.ctx_size,
            max_num_seqs=(place.max_num_seqs if place else None) or parallel_of(spec, svc) or 1,
            gpu_memory_utilization=(place.utilization if place else None) or 0.9,
            kv_cache_dtype=svc.kv_cache_dtype,
            tensor_parallel_size=tp,
            chunked_prefill=preset.chunked_prefill,
            prefix_caching=preset.prefix_caching,
            cuda_graphs=cuda_graphs,
            api_servers=svc.api_servers or vllm_api_servers(len(cpus), tp),
            cors_origin=cors_origin,
        )
    on_gpu = spec.device == "gpu"
    flash = preset.flash_attn if svc.flash_attn is None else ("on" if svc.flash_attn else "off")
    return LlamaKnobs(
        port=spec.container_port,
        model=model,
        ctx_size=llama_kv_tokens(spec, svc),
        parallel=parallel_of(spec, svc) or 1,
        kv_unified=preset.kv_unified,
        cache_type=svc.cache_type,
        threads=threads,
        gpu_layers=svc.gpu_layers if on_gpu else None,
        flash_attn=flash,
        cuda_graphs=cuda_graphs,
        cpu_mask=() if on_gpu else cores.compute_cpus,
        load_mode_none=use_pages,
        hugetlb_malloc=use_pages,
        mlock=mlock and not on_gpu,
        prompt_cache_mib=preset.prompt_cache_mib,
        cors_origin=cors_origin,
    )


def plan_services(
    config: Config,
    cores: CorePlan,
    hugepages: HugepagePlan,
    profile: str,
    cpu: CpuFacts,
    memory: GpuMemoryPlan | None,
    excluded: set[str] | None = None,
    models: Models | None = None,
    mlock: bool = False,
) -> tuple[tuple[ServicePlan, ...], str]:
    """One ServicePlan per registry entry the profile deploys (less `excluded`), knobs rendered
    to arguments, memory limits from `models`; `mlock`: the CPU service locks its weights."""
    specs = [
        s
        for s in REGISTRY.values()
        if profile in ("all", s.device) and s.name not in (excluded or set())
    ]
    engine_cpus, cpu_reason = gpu_engine_cpus(cpu, cores, profile, specs)
    services = []
    for spec in specs:
        svc = config.services[spec.name]
        on_gpu = spec.device == "gpu"
        cpus = engine_cpus[spec.name] if on_gpu else cores.inference_cpus
        threads = min(4, len(cpus)) if on_gpu else len(cores.compute_cpus)
        use_pages = not on_gpu and hugepages.pages > 0
        knobs = _knobs(
            spec, svc, cores, cpus, threads, use_pages, memory, config.cors_origin, mlock
        )
        model = (models or {}).get(spec.name)
        concurrency, targets = TARGETS[(spec.engine, spec.device, serving_of(spec, svc))]
        place = memory.placements.get(spec.name) if memory else None
        services.append(
            ServicePlan(
                name=spec.name,
                profile=spec.device,
                engine=spec.engine,
                serving=serving_of(spec, svc),
                image=spec.image,
                port=svc.port,
                container_port=spec.container_port,
                bind_address=config.bind_address,
                cpuset=format_cpulist(cpus),
                threads=threads,
                gpu=on_gpu,
                gpus=place.gpus if place else (),
                model=svc.model,
                knobs=knobs,
                args=knobs.args(),
                env=knobs.env(),
                start_period_s=spec.start_period_s,
                targets={**targets, **svc.targets},
                bench_concurrency=concurrency,
                api_key_env=spec.api_key_env,
                shm_size=spec.shm_size,
                read_only_root=spec.read_only_root,
                memory_limit_mib=memory_limit_mib(spec, svc, model, knobs),
                memlock=knobs.memlock,
            )
        )
    return tuple(services), cpu_reason


# ---------------------------------------------------------------- the plan


def model_paths(config: Config) -> dict[str, str]:
    """Every configured model (path -> kind): the model facts a plan needs gathered."""
    paths: dict[str, str] = {}
    for spec in REGISTRY.values():
        if config.services[spec.name].model:  # a path two kinds claim: read as the first's
            path = str(Path(config.models_dir) / config.services[spec.name].model)
            paths.setdefault(path, spec.model_kind)
    return paths


_KIND_NAMES = {"gguf": "a GGUF file", "hf": "a model directory"}


def _kind(found: ModelFacts) -> str:
    if isinstance(found, ModelUnreadable):
        return found.kind
    return "hf" if isinstance(found, HfModel) else "gguf"


def profile_models(facts: HostFacts, config: Config, profile: str) -> Models:
    """The profile's services' models, from the facts; one that could not be read refuses the
    plan, naming the service. Facts gathered without models plan without them (a build)."""
    models: Models = {}
    for spec in REGISTRY.values():
        svc = config.services[spec.name]
        if profile not in ("all", spec.device) or not svc.model:
            continue
        path = str(Path(config.models_dir) / svc.model)
        found: ModelFacts | None = facts.models.get(path)
        if found is not None and _kind(found) != spec.model_kind:
            other, wanted = _KIND_NAMES[_kind(found)], _KIND_NAMES[spec.model_kind]
            why = (
                f"model {path} is also another service's {other}: one path cannot be both"
                if isinstance(found, ModelUnreadable)
                else f"model {path} is {other}, not {wanted} (llama.cpp serves a GGUF file, "
                "vLLM a model directory)"
            )
            found = ModelUnreadable(path, spec.model_kind, why)
        if isinstance(found, ModelUnreadable):
            raise PlanError(f"{spec.name}: {found.error}", fix=f"services.{spec.name}.model")
        if found is not None:
            models[spec.name] = found
    return models


def gpu_profile_cores(cpu: CpuFacts) -> CorePlan:
    """The gpu profile isolates nothing: CPU 0's core keeps the OS and IRQs, the GPU engines'
    host threads get the other cores (isolated cores would sit idle without llama-cpu)."""
    cpu0_core = next((c for c in cpu.smt_sibling_sets if 0 in c), (0,))
    return CorePlan(
        inference_cores=0,
        inference_cpus=(),
        compute_cpus=(),
        housekeeping_cpus=tuple(c for c in cpu.logical_cpus),
        l3_domains_used=(),
        reason=(
            "gpu profile: no CPU isolation (no llama-cpu to give isolated cores to; CPU 0's core "
            f"{format_cpulist(cpu0_core)} keeps the OS and IRQs)"
        ),
    )


def make_plan(
    facts: HostFacts,
    config: Config,
    profile: str | None = None,
    evidence: Evidence | None = None,
) -> Plan:
    """Decide everything for `profile` (default: the config's) from the facts, the configured
    models' included (`gather(..., models=model_paths(config))`). `evidence` decides AMX and adds
    per-knob recommendations (default: the shipped evidence, no recommendations)."""
    notes: list[str] = []
    if not (profile or config.profile):
        notes.append(
            f"profile {default_profile(facts)}: "
            + ("an NVIDIA GPU is usable" if facts.gpu.present else "no usable NVIDIA GPU")
            + " (set profile in llmhost.yaml, or --profile, to choose)"
        )
    profile = profile or config.profile or default_profile(facts)
    if profile not in ("cpu", "gpu", "all"):
        raise PlanError(f"unknown profile {profile!r}: use cpu, gpu or all", exit_code=2)
    count = config.inference_cores or default_inference_cores(facts.cpu)
    if profile != "gpu" and config.inference_cores is None:
        notes.append(
            f"{count} of {facts.cpu.physical_cores} cores for inference: a quarter stays for "
            "the OS, IRQs and Docker (set inference_cores to choose)"
        )
    cores = gpu_profile_cores(facts.cpu) if profile == "gpu" else choose_cores(facts.cpu, count)
    models = profile_models(facts, config, profile)
    hugepages = plan_hugepages(config, models, facts.memory.total_kb, profile)
    left_out = isa_left_out(facts, evidence or load_evidence())
    cmake_flags, isa = cpu_cmake_flags(facts.cpu, left_out)
    notes += [f"{feature} left out of the CPU build: {why}" for feature, why in left_out.items()]
    cuda_arch = torch_arch = cuda_version = None
    memory = None
    excluded: set[str] = set()
    if profile in ("gpu", "all"):
        if not facts.gpu.present:
            raise PlanError(
                f"profile {profile} needs an NVIDIA GPU, and none was found "
                f"({facts.gpu.error or 'no devices'}): use --profile cpu"
            )
        cuda_arch, torch_arch, cuda_version = cuda_plan(facts.gpu, config.images.cuda_version)
        refusal = vllm_refusal(facts.gpu)
        if refusal:
            notes.append(refusal)
            excluded = {s.name for s in REGISTRY.values() if s.engine == VLLM}
        specs = [s for s in REGISTRY.values() if s.device == "gpu" and s.name not in excluded]
        memory = plan_gpu_memory(facts.gpu, _gpu_demands(config, specs, models))
        notes += list(memory.notes)
    elif facts.gpu.present:
        notes.append("an NVIDIA GPU is present: --profile all also deploys the GPU services")
    build = BuildPlan(
        cpu_isa=isa,
        llama_cpu_cmake_flags=cmake_flags,
        cuda_architectures=cuda_arch,
        torch_cuda_arch_list=torch_arch,
        cuda_version=cuda_version,
        reason=f"{facts.cpu.microarchitecture}: {', '.join(isa) or 'no SIMD extensions'}"
        + (f"; GPUs sm_{cuda_arch} on CUDA {cuda_version}" if cuda_arch else ""),
        cpu_model=facts.cpu.model_name,
        left_out=left_out,
        compile_jobs=compile_jobs(
            len(facts.cpu.logical_cpus), facts.memory.available_kb, CXX_JOB_MIB
        ),
        cuda_compile_jobs=compile_jobs(
            len(facts.cpu.logical_cpus), facts.memory.available_kb, NVCC_JOB_MIB
        ),
    )
    if not facts.cpu.has("avx512f"):
        notes.append("no AVX-512 on this CPU: the CPU image uses AVX2 kernels")
    mlock, mlock_why = plan_mlock(config)
    if mlock_why:
        notes.append(mlock_why)
    services, cpu_reason = plan_services(
        config, cores, hugepages, profile, facts.cpu, memory, excluded, models, mlock
    )
    if cpu_reason:
        notes.append(cpu_reason)
    return Plan(
        profile=profile,
        hostname=facts.hostname,
        cores=cores,
        hugepages=hugepages,
        build=build,
        services=services,
        kernel_params=kernel_params(cores, hugepages, config.hugepages.boot_time),
        notes=tuple(notes),
        recommendations=() if evidence is None else recommend(evidence, facts, services),
        gpu_memory=memory,
    )
