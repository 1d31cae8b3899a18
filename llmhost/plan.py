"""Facts + config -> Plan: cores, hugepages, build flags, services. Pure: no I/O but model headers.

Everything the CLI, the templates and the Ansible roles decide is decided here, once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llmhost import selftest
from llmhost.config import SERVICE_PROFILES, Config, ServiceConfig
from llmhost.cpulist import cpumask_hex, format_cpulist
from llmhost.errors import LlmhostError
from llmhost.evidence import (
    Evidence,
    Recommendation,
    Verdict,
    load_evidence,
    recommend,
    verdict_here,
)
from llmhost.facts import HostFacts
from llmhost.facts.cpu import CpuFacts
from llmhost.facts.gpu import GpuFacts
from llmhost.models import ModelHeader, read_model_header

HUGEPAGE_KB = 2048
IMAGES: dict[str, str] = {
    "llama-cpu": "llmhost/llama-cpu:latest",
    "llama-gpu": "llmhost/llama-cuda:latest",
    "vllm-gpu": "llmhost/vllm:latest",
}
# CUDA container versions we build on, newest last; a driver runs images up to its own CUDA.
CUDA_IMAGE_VERSIONS: tuple[str, ...] = ("12.8.1", "12.9.1", "13.0.1")
# Blackwell consumer/workstation parts (sm_120) need CUDA 12.8 or newer.
MIN_CUDA_FOR_CC: dict[tuple[int, int], str] = {(12, 0): "12.8", (12, 1): "12.9", (10, 0): "12.8"}
# Bytes per KV-cache element by llama.cpp cache type (q8_0: 34 bytes / 32 values).
CACHE_TYPE_BYTES: dict[str, float] = {"f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
UBATCH = 512
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


@dataclass(frozen=True)
class ServicePlan:
    name: str
    profile: str
    image: str
    port: int
    container_port: int
    bind_address: str
    cpuset: str
    threads: int
    gpu: bool
    model: str | None
    args: tuple[str, ...]
    env: dict[str, str]
    start_period_s: int
    targets: dict[str, float]


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


def kernel_params(cores: CorePlan, hugepages: HugepagePlan, boot_hugepages: bool) -> dict[str, str]:
    """The boot parameters (tuned's cpu-partitioning set) llmhost's GRUB drop-in carries."""
    isolated = cores.inference_cpulist
    params = {
        "isolcpus": f"managed_irq,domain,{isolated}",
        "nohz_full": isolated,
        "rcu_nocbs": isolated,
        "irqaffinity": cores.housekeeping_cpulist,
    }
    if boot_hugepages and hugepages.pages:
        params.update(hugepagesz="2M", hugepages=str(hugepages.pages))
    return params


# ---------------------------------------------------------------- hugepages


def model_memory(service: str, header: ModelHeader, svc: ServiceConfig) -> ModelMemory:
    """Weights + KV cache for ctx x slots + compute buffers, as llama.cpp's CPU backend
    allocates them."""
    n_ctx = svc.ctx_size * svc.parallel
    per_token = header.n_layer * header.n_head_kv * (header.head_dim_k + header.head_dim_v)
    kv = int(per_token * n_ctx * CACHE_TYPE_BYTES[svc.cache_type])
    # Compute buffer: logits for one ubatch + activations (f32), measured ~this size in llama.cpp.
    compute = 4 * UBATCH * (header.n_vocab + 4 * header.n_embd + 2 * header.n_ff)
    return ModelMemory(service, header.path, header.weights_bytes, kv, compute)


def plan_hugepages(
    config: Config, headers: dict[str, ModelHeader], total_ram_kb: int, profile: str
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
        if header is None:
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
            f"{mem.kv_cache_bytes / mib:.0f} MiB ({svc.ctx_size} tokens x {svc.parallel} slots, "
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

# GGML_AVX512 compiles F+CD+VL+DQ+BW together; its extensions need all of them.
AVX512_BASE = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")
# (cpuinfo flags required, CMake switch)
_ISA_SWITCHES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("avx",), "GGML_AVX"),
    (("avx2",), "GGML_AVX2"),
    (("fma",), "GGML_FMA"),
    (("f16c",), "GGML_F16C"),
    (("bmi2",), "GGML_BMI2"),
    (("avx_vnni",), "GGML_AVX_VNNI"),
    (AVX512_BASE, "GGML_AVX512"),
    (("avx512_vbmi",), "GGML_AVX512_VBMI"),
    (("avx512_vnni",), "GGML_AVX512_VNNI"),
    (("avx512_bf16",), "GGML_AVX512_BF16"),
    (("amx_tile",), "GGML_AMX_TILE"),
    (("amx_int8",), "GGML_AMX_INT8"),
    (("amx_bf16",), "GGML_AMX_BF16"),
)


# What leaving one feature out turns off (AMX's kernels need AVX-512 VNNI, so they go with it).
_AMX = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
LEAVE_OUT_SWITCHES: dict[str, tuple[str, ...]] = {
    "amx": _AMX,
    "avx512": ("GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", *_AMX),
    "avx512_vnni": ("GGML_AVX512_VNNI", *_AMX),
    "avx512_bf16": ("GGML_AVX512_BF16",),
    "avx512_vbmi": ("GGML_AVX512_VBMI",),
    "avx_vnni": ("GGML_AVX_VNNI",),
}


def cpu_cmake_flags(
    cpu: CpuFacts, leave_out: Iterable[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Explicit ISA switches (not -march=native) so an image built elsewhere matches this CPU;
    the features in `leave_out` (LEAVE_OUT_SWITCHES' keys) are switched off."""
    flags = ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=OFF", "-DGGML_CPU_ALL_VARIANTS=OFF"]
    off = {s for feature in leave_out for s in LEAVE_OUT_SWITCHES.get(feature, ())}
    isa: list[str] = []
    for needed, switch in _ISA_SWITCHES:
        on = all(cpu.has(f) for f in needed) and switch not in off
        if switch.startswith("GGML_AVX512_") and not all(cpu.has(f) for f in AVX512_BASE):
            on = False
        flags.append(f"-D{switch}={'ON' if on else 'OFF'}")
        if on:
            isa.append(switch.removeprefix("GGML_").lower())
    return tuple(flags), tuple(isa)


AMX_KNOB = "cpu_build.amx"


def isa_left_out(facts: HostFacts, evidence: Evidence) -> dict[str, str]:
    """ISA features this host's build goes without, and why: kernels that crashed in an image's
    self-test on this CPU (a refused image records it), and AMX unless measured faster here."""
    out: dict[str, str] = {}
    for image in facts.containers.images:
        feature = image.labels.get(selftest.LABEL_LEAVE_OUT)
        if feature in LEAVE_OUT_SWITCHES and (
            image.labels.get(selftest.LABEL_CPU) == facts.cpu.model_name
        ):
            tag = image.tags[0] if image.tags else "a refused image"
            detail = image.labels.get(selftest.LABEL, "").removeprefix("failed: ")
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


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def cuda_plan(gpu: GpuFacts, override: str | None) -> tuple[str | None, str | None, str | None]:
    """(CMAKE_CUDA_ARCHITECTURES, TORCH_CUDA_ARCH_LIST, CUDA image version) for these GPUs."""
    caps = sorted({g.cc_tuple for g in gpu.gpus if g.cc_tuple})
    if not caps:
        return None, None, None
    cmake = ";".join(f"{a}{b}" for a, b in caps)
    torch = ";".join(f"{a}.{b}" for a, b in caps)
    if override:
        return cmake, torch, override
    driver = _version_tuple(gpu.cuda_driver_version or "0.0")[:2]
    for cc in caps:
        need = MIN_CUDA_FOR_CC.get(cc)
        if need and driver < _version_tuple(need):
            raise PlanError(
                f"sm_{cc[0]}{cc[1]} GPUs need CUDA {need}+ but the driver supports "
                f"{gpu.cuda_driver_version}: upgrade the NVIDIA driver"
            )
    usable = [v for v in CUDA_IMAGE_VERSIONS if _version_tuple(v)[:2] <= driver]
    if not usable:
        raise PlanError(
            f"the NVIDIA driver supports CUDA {gpu.cuda_driver_version}, older than every CUDA "
            f"image llmhost builds ({CUDA_IMAGE_VERSIONS[0]}+): upgrade the driver"
        )
    return cmake, torch, usable[-1]


# ---------------------------------------------------------------- services


LLAMA_PORT, VLLM_PORT = 8080, 8000
# glibc >= 2.35 serves malloc from the reserved 2 MiB pool (ggml's CPU buffers use
# posix_memalign); with `--load-mode none` the weights are read into those buffers instead
# of the page cache.
# arena_max=1: without it glibc gives every allocating thread its own 8 MiB heap from the pool.
HUGETLB_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=2:glibc.malloc.arena_max=1"}
# Pages beyond the model's own needs: glibc's main heap and small allocations also come from
# the pool once the tunable is on (measured: ~16 pages for llama-server on a tiny model).
HUGEPAGE_SLACK_PAGES = 16


def _llama_args(
    svc: ServiceConfig, threads: int, gpu: bool, cores: CorePlan, hugepages: bool
) -> tuple[str, ...]:
    args = [
        "--host",
        "0.0.0.0",
        "--port",
        str(LLAMA_PORT),
        "--ctx-size",
        str(svc.ctx_size * svc.parallel),
        "--parallel",
        str(svc.parallel),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--cache-type-k",
        svc.cache_type,
        "--cache-type-v",
        svc.cache_type,
        "--metrics",
    ]
    if svc.model:
        args[:0] = ["--model", f"/models/{svc.model}"]
    if gpu:
        args += ["--n-gpu-layers", str(svc.gpu_layers)]
    else:
        args += ["--cpu-mask", cpumask_hex(cores.compute_cpus), "--cpu-strict", "1"]
        if hugepages:
            # llama.cpp >= b10114 (PR 20834): --load-mode replaced --no-mmap.
            args += ["--load-mode", "none"]
    return tuple(args)


def plan_services(
    config: Config, cores: CorePlan, hugepages: HugepagePlan, profile: str
) -> tuple[ServicePlan, ...]:
    services = []
    for name, svc_profile in SERVICE_PROFILES.items():
        if profile not in ("all", svc_profile):
            continue
        svc = config.services[name]
        on_gpu = svc_profile == "gpu"
        cpus = cores.housekeeping_cpus if on_gpu else cores.inference_cpus
        threads = min(4, len(cpus)) if on_gpu else len(cores.compute_cpus)
        env: dict[str, str] = {}
        if name == "vllm-gpu":
            port = VLLM_PORT
            env["HOME"] = "/tmp"  # non-root user: caches go to a writable place
            args: tuple[str, ...] = (
                "--host",
                "0.0.0.0",
                "--port",
                str(VLLM_PORT),
                "--max-model-len",
                str(svc.ctx_size),
                "--max-num-seqs",
                str(max(svc.parallel, 1)),
            )
            if svc.model:
                args = ("--model", f"/models/{svc.model}", *args)
        else:
            port = LLAMA_PORT
            use_pages = not on_gpu and hugepages.pages > 0
            args = _llama_args(svc, threads, on_gpu, cores, use_pages)
            if use_pages:
                env.update(HUGETLB_ENV)
        services.append(
            ServicePlan(
                name=name,
                profile=svc_profile,
                image=IMAGES[name],
                port=svc.port,
                container_port=port,
                bind_address=config.bind_address,
                cpuset=format_cpulist(cpus),
                threads=threads,
                gpu=on_gpu,
                model=svc.model,
                args=args,
                env=env,
                start_period_s=900 if name == "vllm-gpu" else 300,
                targets=dict(svc.targets),
            )
        )
    return tuple(services)


# ---------------------------------------------------------------- the plan


def read_headers(config: Config, profile: str) -> dict[str, ModelHeader]:
    """GGUF headers of the configured CPU model (the only one hugepages back)."""
    svc = config.services["llama-cpu"]
    if profile == "gpu" or not svc.model:
        return {}
    return {"llama-cpu": read_model_header(Path(config.models_dir) / svc.model)}


def make_plan(
    facts: HostFacts,
    config: Config,
    profile: str | None = None,
    headers: dict[str, ModelHeader] | None = None,
    evidence: Evidence | None = None,
) -> Plan:
    """Decide everything for `profile` (default: the config's) from the facts; `evidence`
    (llmhost.evidence.load_evidence()) adds per-knob recommendations without changing a thing."""
    profile = profile or config.profile
    if profile not in ("cpu", "gpu", "all"):
        raise PlanError(f"unknown profile {profile!r}: use cpu, gpu or all", exit_code=2)
    notes: list[str] = []
    cores = choose_cores(facts.cpu, config.inference_cores)
    if headers is None:
        headers = read_headers(config, profile)
    hugepages = plan_hugepages(config, headers, facts.memory.total_kb, profile)
    left_out = isa_left_out(facts, evidence or load_evidence())
    cmake_flags, isa = cpu_cmake_flags(facts.cpu, left_out)
    notes += [f"{feature} left out of the CPU build: {why}" for feature, why in left_out.items()]
    cuda_arch = torch_arch = cuda_version = None
    if profile in ("gpu", "all"):
        if not facts.gpu.present:
            raise PlanError(
                f"profile {profile} needs an NVIDIA GPU, and none was found "
                f"({facts.gpu.error or 'no devices'}): use --profile cpu"
            )
        cuda_arch, torch_arch, cuda_version = cuda_plan(facts.gpu, config.images.cuda_version)
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
    )
    if not facts.cpu.has("avx512f"):
        notes.append("no AVX-512 on this CPU: the CPU image uses AVX2 kernels")
    services = plan_services(config, cores, hugepages, profile)
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
    )
