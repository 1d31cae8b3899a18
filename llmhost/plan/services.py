"""The services llmhost deploys, as data: one registry entry each, and the typed knobs their
arguments and environment are rendered from.

Templates, deploy, the bench gates and the evidence read these fields; nothing branches on a
service's name. Adding a service means adding one `ServiceSpec` (and its Dockerfile template).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmhost.cpulist import cpumask_hex

LLAMA_CPP, VLLM = "llama.cpp", "vllm"
SERVING_MODES = ("latency", "throughput")


@dataclass(frozen=True)
class HostMemory:
    """Host RAM a service's process may use beyond its model, for the container's memory limit:
    a cap on runaway growth sized with room to spare, not a reservation."""

    base_mib: int  # the engine itself: runtime, allocator, host side of the CUDA context
    per_front_end_mib: int = 0  # each extra HTTP front-end process (vLLM's API servers)


# The limit is (model + engine) x this: KV and compute estimates are estimates, page cache of
# the model file is charged to the container while it loads.
HOST_MEMORY_HEADROOM = 1.25


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    engine: str  # LLAMA_CPP or VLLM: which knobs render its command line
    device: str  # "cpu" or "gpu": which profile deploys it
    image: str
    dockerfile: str  # the image's template under llmhost/_templates
    image_profile: str  # the image's io.llmhost.profile label
    container_port: int
    default_port: int
    start_period_s: int  # health checks before this count for nothing (model load, compile)
    api_key_env: str  # the variable the server reads its API key from
    model_kind: str  # "gguf" (a file under models_dir) or "hf" (a model directory)
    default_serving: str
    shm_size: str | None = None  # /dev/shm for engines that pass tensors between processes
    # A read-only root filesystem, /tmp a tmpfs: what llama-server needs (proven by the CPU
    # e2e deploy). vLLM keeps a writable root until a GPU run proves its caches all go to /tmp.
    read_only_root: bool = False
    host_memory: HostMemory = HostMemory(base_mib=1024)

    @property
    def needs_llama_source(self) -> bool:
        return self.engine == LLAMA_CPP


REGISTRY: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec(
            name="llama-cpu",
            engine=LLAMA_CPP,
            device="cpu",
            image="llmhost/llama-cpu:latest",
            dockerfile="llama-cpu.Dockerfile.j2",
            image_profile="cpu",
            container_port=8080,
            default_port=8001,
            start_period_s=300,
            api_key_env="LLAMA_API_KEY",
            model_kind="gguf",
            default_serving="latency",
            read_only_root=True,
        ),
        ServiceSpec(
            name="llama-gpu",
            engine=LLAMA_CPP,
            device="gpu",
            image="llmhost/llama-cuda:latest",
            dockerfile="llama-cuda.Dockerfile.j2",
            image_profile="cuda",
            container_port=8080,
            default_port=8004,
            start_period_s=300,
            api_key_env="LLAMA_API_KEY",
            model_kind="gguf",
            default_serving="latency",
            read_only_root=True,
            host_memory=HostMemory(base_mib=2048),  # the CUDA context's host side, staging
        ),
        ServiceSpec(
            name="vllm-gpu",
            engine=VLLM,
            device="gpu",
            image="llmhost/vllm:latest",
            dockerfile="vllm.Dockerfile.j2",
            image_profile="vllm",
            container_port=8000,
            default_port=8005,
            start_period_s=900,
            api_key_env="VLLM_API_KEY",
            model_kind="hf",
            default_serving="throughput",
            shm_size="8gb",
            # The engine process (torch, CUDA, torch.compile's workers while it starts) and
            # each API server (vllm, torch and the tokenizer imported again).
            host_memory=HostMemory(base_mib=8192, per_front_end_mib=2048),
        ),
    )
}


def spec(name: str) -> ServiceSpec:
    return REGISTRY[name]


@dataclass(frozen=True)
class EngineMetrics:
    """Where an engine's /metrics says what `llmhost status` shows."""

    running: str  # gauge: requests being decoded
    waiting: str  # gauge: requests queued
    tokens_total: str  # counter: tokens generated
    kv_used: str | None = None  # gauge, 0-1: KV cache in use
    kv_used_fallback: str | None = None  # its name in older releases
    slots_endpoint: str | None = None  # else: per-slot context, from which KV use is computed


METRICS: dict[str, EngineMetrics] = {
    # llama-server --metrics (tools/server/server-task.cpp); it exports no KV gauge: /slots.
    LLAMA_CPP: EngineMetrics(
        running="llamacpp:requests_processing",
        waiting="llamacpp:requests_deferred",
        tokens_total="llamacpp:tokens_predicted_total",
        slots_endpoint="/slots",
    ),
    # vLLM's Prometheus metrics (vllm/v1/metrics/loggers.py); gpu_cache_usage_perc in older ones.
    VLLM: EngineMetrics(
        running="vllm:num_requests_running",
        waiting="vllm:num_requests_waiting",
        tokens_total="vllm:generation_tokens_total",
        kv_used="vllm:kv_cache_usage_perc",
        kv_used_fallback="vllm:gpu_cache_usage_perc",
    ),
}


# ---------------------------------------------------------------- serving configurations


@dataclass(frozen=True)
class Serving:
    """What a serving configuration sets, before the memory plan and explicit overrides."""

    parallel: int | None  # llama.cpp slots / vLLM max-num-seqs; None: sized by the memory plan
    kv_unified: bool = False  # llama.cpp: one KV pool shared by every slot
    kv_tokens_per_ctx: int = 0  # llama.cpp with a unified pool: pool = ctx_size x this
    prompt_cache_mib: int | None = None  # llama.cpp --cache-ram (0: off); None: its default
    flash_attn: str = "auto"  # llama.cpp -fa
    cuda_graphs: bool = True
    chunked_prefill: bool = True  # vLLM
    prefix_caching: bool = True  # vLLM


# (engine, device, mode) -> preset. Latency: few slots, every fast path on; throughput: many slots
# (llama.cpp, one shared KV pool) or continuous batching sized by the memory plan (vLLM).
SERVING: dict[tuple[str, str, str], Serving] = {
    (LLAMA_CPP, "cpu", "latency"): Serving(parallel=1),
    (LLAMA_CPP, "cpu", "throughput"): Serving(parallel=4),
    (LLAMA_CPP, "gpu", "latency"): Serving(parallel=2, flash_attn="on"),
    # No prompt cache: with a unified pool, llama-server saves each idle slot to it before a new
    # task, one at a time (~130 ms each for 32 slots on the H200: 4 s between waves of requests,
    # benchmarks/results/h200-2026-11-29/llama-B2-prompt-cache.txt).
    (LLAMA_CPP, "gpu", "throughput"): Serving(
        parallel=32, kv_unified=True, kv_tokens_per_ctx=8, flash_attn="on", prompt_cache_mib=0
    ),
    (VLLM, "gpu", "latency"): Serving(parallel=8),
    (VLLM, "gpu", "throughput"): Serving(parallel=None),
}

# Smoke-bench gates (vLLM metric names) and the concurrency they are measured at, per serving
# configuration: the design's numbers for a 7B model on the reference GPU; loose on the CPU.
CPU_TARGETS = {"ttft_p90_ms": 10000.0, "output_tok_s_min": 1.0, "failed_max": 0.0}
TARGETS: dict[tuple[str, str, str], tuple[int, dict[str, float]]] = {
    (LLAMA_CPP, "cpu", "latency"): (1, CPU_TARGETS),
    (LLAMA_CPP, "cpu", "throughput"): (4, CPU_TARGETS),
    (LLAMA_CPP, "gpu", "latency"): (1, {"ttft_p90_ms": 100.0, "failed_max": 0.0}),
    (LLAMA_CPP, "gpu", "throughput"): (32, {"output_tok_s_min": 1000.0, "failed_max": 0.0}),
    (VLLM, "gpu", "latency"): (1, {"ttft_p90_ms": 100.0, "failed_max": 0.0}),
    (VLLM, "gpu", "throughput"): (
        32,
        {"output_tok_s_min": 4000.0, "ttft_p90_ms": 100.0, "failed_max": 0.0},
    ),
}


# ---------------------------------------------------------------- knobs -> arguments

# Which web pages' scripts may call a service (llmhost.yaml `cors_origin`): pages served from this
# machine, any page, or the one origin given.
CORS_LOCALHOST, CORS_ANY = "localhost", "*"


@dataclass(frozen=True)
class LlamaKnobs:
    """llama-server's command line and environment, as typed fields."""

    port: int
    model: str | None  # path inside the container
    ctx_size: int  # tokens of KV cache in all (per slot unless kv_unified)
    parallel: int
    kv_unified: bool
    cache_type: str
    threads: int
    gpu_layers: int | None = None  # None: CPU only
    flash_attn: str = "auto"
    cuda_graphs: bool = True
    cpu_mask: tuple[int, ...] = ()  # pinned compute CPUs (with --cpu-strict)
    load_mode_none: bool = False  # read weights into (hugepage-backed) buffers, no mmap
    hugetlb_malloc: bool = False  # glibc serves malloc from the 2 MiB pool
    mlock: bool = False  # read weights into buffers and lock them in RAM (needs a memlock limit)
    prompt_cache_mib: int | None = None  # --cache-ram: host memory for saved prompts (0: off)
    cors_origin: str = CORS_LOCALHOST

    def args(self) -> tuple[str, ...]:
        args = ["--model", self.model] if self.model else []
        args += ["--host", "0.0.0.0", "--port", str(self.port)]
        args += ["--ctx-size", str(self.ctx_size), "--parallel", str(self.parallel)]
        args += ["--threads", str(self.threads), "--threads-batch", str(self.threads)]
        args += ["--cache-type-k", self.cache_type, "--cache-type-v", self.cache_type]
        args += ["--metrics"]
        if self.kv_unified:
            args += ["--kv-unified"]
        if self.flash_attn != "auto":
            args += ["--flash-attn", self.flash_attn]
        if self.prompt_cache_mib is not None:
            args += ["--cache-ram", str(self.prompt_cache_mib)]
        if self.gpu_layers is not None:
            args += ["--n-gpu-layers", str(self.gpu_layers)]
        if self.cpu_mask:
            args += ["--cpu-mask", cpumask_hex(self.cpu_mask), "--cpu-strict", "1"]
        if self.load_mode:
            # llama.cpp >= b10114 (PR 20834): --load-mode replaced --no-mmap and --mlock.
            args += ["--load-mode", self.load_mode]
        return tuple(args)

    @property
    def load_mode(self) -> str | None:
        """llama.cpp's --load-mode: mlock reads the weights into buffers too (hugetlb-backed
        where glibc is told so), and locks them; None: llama.cpp's default (mmap)."""
        return "mlock" if self.mlock else "none" if self.load_mode_none else None

    @property
    def host_work(self) -> str:
        """What runs on the service's CPUs, for the plan's summary."""
        return f"threads {self.threads}"

    front_ends = 0  # one process serves HTTP and computes

    @property
    def memlock(self) -> bool:
        """The container needs an unlimited memlock limit (compose `ulimits`)."""
        return self.mlock

    def env(self) -> dict[str, str]:
        # CORS by environment: a llama-server older than --cors-origins (PR 25655, 2026-07)
        # ignores the variable, where the flag would stop it from starting.
        env = {"LLAMA_ARG_CORS_ORIGINS": self.cors_origin}
        if self.hugetlb_malloc:
            # glibc >= 2.35 serves malloc from the reserved 2 MiB pool (ggml's CPU buffers use
            # posix_memalign); arena_max=1: else every allocating thread gets its own 8 MiB heap.
            env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=2:glibc.malloc.arena_max=1"
        if not self.cuda_graphs and self.gpu_layers is not None:
            env["GGML_CUDA_DISABLE_GRAPHS"] = "1"
        return env


@dataclass(frozen=True)
class VllmKnobs:
    """`vllm serve`'s command line and environment, as typed fields."""

    port: int
    model: str | None
    max_model_len: int
    max_num_seqs: int
    gpu_memory_utilization: float
    kv_cache_dtype: str  # "auto" (the model's dtype) or "fp8"
    tensor_parallel_size: int
    chunked_prefill: bool = True
    prefix_caching: bool = True
    cuda_graphs: bool = True  # off: --enforce-eager
    api_servers: int = 1  # HTTP front-end processes in front of the one engine
    cors_origin: str = CORS_LOCALHOST
    memlock = False  # vLLM locks no memory: the default memlock limit serves

    @property
    def allowed_origins(self) -> str:
        """vLLM's --allowed-origins (a JSON list, matched exactly): it has no "any localhost
        port", so localhost there means no cross-origin page at all."""
        return json.dumps([] if self.cors_origin == CORS_LOCALHOST else [self.cors_origin])

    def args(self) -> tuple[str, ...]:
        args = ["--model", self.model] if self.model else []
        args += ["--host", "0.0.0.0", "--port", str(self.port)]
        args += ["--max-model-len", str(self.max_model_len)]
        args += ["--max-num-seqs", str(self.max_num_seqs)]
        args += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:.3f}"]
        args += ["--kv-cache-dtype", self.kv_cache_dtype]
        args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        args += [
            "--enable-chunked-prefill" if self.chunked_prefill else "--no-enable-chunked-prefill"
        ]
        args += ["--enable-prefix-caching" if self.prefix_caching else "--no-enable-prefix-caching"]
        if not self.cuda_graphs:
            args += ["--enforce-eager"]
        if self.api_servers > 1:
            args += ["--api-server-count", str(self.api_servers)]
        args += ["--allowed-origins", self.allowed_origins]
        return tuple(args)

    @property
    def host_work(self) -> str:
        """What runs on the service's CPUs, for the plan's summary."""
        return f"api servers {self.api_servers}"

    @property
    def front_ends(self) -> int:
        """HTTP front-end processes beside the engine's own."""
        return self.api_servers

    def env(self) -> dict[str, str]:
        # Non-root user: caches go to a writable place. Offline and no usage reports: the model
        # is on disk, and the host's traffic is its owner's business.
        return {"HOME": "/tmp", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}


Knobs = LlamaKnobs | VllmKnobs
