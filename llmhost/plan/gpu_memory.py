"""The GPU memory plan: which GPUs each GPU service gets, what it needs there, and the split.

llama-gpu's need is fixed by its model and knobs (weights, KV cache for its tokens at the cache
type, compute buffers, CUDA's own); vllm-gpu takes what is left on its GPUs as its
`--gpu-memory-utilization` share, and its KV capacity (hence max-num-seqs) follows from that.
Memory other processes hold (NVML) and a reserve are subtracted first. When something does not
fit, the plan refuses with the numbers and the fixes. Pure: facts and demands in, a plan out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llmhost.errors import LlmhostError
from llmhost.facts.gpu import Gpu, GpuFacts
from llmhost.facts.models import HF_DTYPE_BYTES, HfModel, ModelHeader

MIB = 1024 * 1024
GIB = 1024 * MIB
# Bytes per KV-cache element by llama.cpp cache type (q8_0: 34 bytes / 32 values).
CACHE_TYPE_BYTES: dict[str, float] = {"f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
UBATCH = 512  # llama.cpp's default micro-batch: sizes its compute buffers
RESERVE_MIB = 1024  # left free on every GPU: fragmentation, a driver's own allocations
LLAMA_CUDA_OVERHEAD = 768 * MIB  # CUDA context, cuBLAS workspace, CUDA graphs
VLLM_OVERHEAD = 2 * GIB  # CUDA context, cuBLAS/NCCL workspaces, CUDA graphs, sampler
# With tensor parallelism vLLM also holds all-reduce buffers (NCCL, its custom all-reduce IPC
# buffers, FlashInfer's fusion workspace) outside its --gpu-memory-utilization budget: on two
# H200s (vLLM 0.26, 2026-11-30) the rank beside llama-gpu held 1.7 GiB over it and ran out.
VLLM_TP_OUTSIDE = 2 * GIB
VLLM_BATCHED_TOKENS = 8192  # vLLM's largest prefill chunk: sizes its activation peak
MAX_UTILIZATION = 0.95
# Sized max-num-seqs: as many sequences as fit at a quarter of max-model-len each (vLLM preempts
# rather than fails when they grow past that), at most vLLM's own default.
SEQ_SHARE, MAX_SEQS = 4, 256
TP_SIZES = (1, 2, 4, 8)


class GpuMemoryError(LlmhostError):
    """A GPU service does not fit: the message has the numbers and the fixes."""


@dataclass(frozen=True)
class LlamaDemand:
    service: str
    model: ModelHeader | None
    kv_tokens: int
    cache_type: str
    gpu_layers: int
    gpus: tuple[int, ...] | None = None  # explicit (config)


@dataclass(frozen=True)
class VllmDemand:
    service: str
    model: HfModel | None
    max_model_len: int
    kv_cache_dtype: str
    max_num_seqs: int | None  # None: sized from the KV capacity
    utilization: float | None = None  # explicit (config)
    tensor_parallel_size: int | None = None
    gpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Placement:
    """One service's share: its GPUs and what it takes on each of them."""

    service: str
    gpus: tuple[int, ...]
    # bytes per GPU: weights, kv_cache, compute/activations, cuda; vLLM with tensor parallelism
    # also all_reduce, held beside its --gpu-memory-utilization share
    parts: dict[str, int]
    utilization: float | None = None  # vLLM's --gpu-memory-utilization
    kv_tokens: int | None = None  # tokens of KV cache (vLLM: its capacity over all GPUs)
    max_num_seqs: int | None = None
    tensor_parallel_size: int = 1

    @property
    def need_bytes(self) -> int | None:
        return sum(self.parts.values()) if self.parts else None


@dataclass(frozen=True)
class GpuRow:
    """The table's row for one GPU (MiB)."""

    index: int
    name: str
    total_mib: int
    others_mib: int  # held by processes that are not llmhost's services
    reserve_mib: int
    planned_mib: dict[str, int]  # service -> what it may take here
    free_mib: int


@dataclass(frozen=True)
class GpuMemoryPlan:
    placements: dict[str, Placement] = field(default_factory=dict)
    rows: tuple[GpuRow, ...] = ()
    notes: tuple[str, ...] = ()


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def llama_parts(d: LlamaDemand) -> dict[str, int]:
    """Bytes llama.cpp's CUDA backend allocates for this model: the offloaded layers' weights
    (the input embedding stays in host memory), their KV cache, compute buffers, CUDA's own."""
    m = d.model
    if m is None:
        return {}
    share = min(1.0, d.gpu_layers / (m.n_layer + 1)) if m.n_layer else 1.0
    weights = (m.weights_bytes - m.embedding_bytes) * share
    kv = d.kv_tokens * m.kv_bytes_per_token * CACHE_TYPE_BYTES[d.cache_type] * share
    compute = 4 * UBATCH * (m.n_vocab + 4 * m.n_embd + 2 * m.n_ff)
    return {
        "weights": int(weights),
        "kv_cache": int(kv),
        "compute": compute,
        "cuda": LLAMA_CUDA_OVERHEAD,
    }


def vllm_kv_bytes_per_token(m: HfModel, kv_cache_dtype: str) -> int:
    width = 1 if kv_cache_dtype.startswith("fp8") else HF_DTYPE_BYTES.get(m.dtype, 2)
    return m.kv_elements_per_token * width


def vllm_fixed_parts(m: HfModel, tp: int, max_num_seqs: int) -> dict[str, int]:
    """Per GPU, what vLLM holds besides the KV cache: its weights shard, the activation peak of
    a full prefill chunk plus the sampler's logits, CUDA's own."""
    width = HF_DTYPE_BYTES.get(m.dtype, 2)
    per_token = 4 * m.hidden_size + 2 * m.intermediate_size // tp
    activations = VLLM_BATCHED_TOKENS * per_token * width + 2 * max_num_seqs * m.vocab_size * 4
    return {"weights": m.weights_bytes // tp, "activations": activations, "cuda": VLLM_OVERHEAD}


def usable_bytes(g: Gpu) -> int:
    """Memory a plan may hand out on this GPU: total, less others' and the reserve."""
    return ((g.memory_total_mib or 0) - g.held_by_others_mib - RESERVE_MIB) * MIB


def _gpu_name(g: Gpu) -> str:
    return f"GPU {g.index} ({g.name}, {gib((g.memory_total_mib or 0) * MIB)})"


def _check_gpus(service: str, wanted: tuple[int, ...], gpus: tuple[Gpu, ...]) -> None:
    missing = [i for i in wanted if i >= len(gpus)]
    if missing or not wanted:
        raise GpuMemoryError(
            f"services.{service}.gpus: GPU {missing or wanted} not on this host "
            f"(it has {len(gpus)} GPU(s), numbered from 0)",
            exit_code=2,
        )


def place_llama(d: LlamaDemand, gpus: tuple[Gpu, ...], nth: int) -> Placement:
    """The `nth` llama.cpp GPU service gets GPU `nth` (wrapping), unless the config names one."""
    chosen = d.gpus or (nth % len(gpus),)
    _check_gpus(d.service, chosen, gpus)
    parts = llama_parts(d)
    placement = Placement(d.service, chosen, parts, kv_tokens=d.kv_tokens)
    need = placement.need_bytes
    g = gpus[chosen[0]]
    if need is not None and need > usable_bytes(g):
        m = d.model
        assert m is not None
        raise GpuMemoryError(
            f"{d.service} does not fit on {_gpu_name(g)}: needs {gib(need)} (weights "
            f"{gib(parts['weights'])} + KV cache {gib(parts['kv_cache'])} for {d.kv_tokens} "
            f"tokens at {d.cache_type} + compute {gib(parts['compute'])} + CUDA "
            f"{gib(parts['cuda'])}), has {gib(usable_bytes(g))} "
            f"({g.held_by_others_mib} MiB held by other processes, {RESERVE_MIB} MiB reserve)",
            fix=f"a smaller services.{d.service}.ctx_size, fewer slots (parallel), cache_type: "
            "q8_0, a smaller quantization of the model, or only one GPU service",
        )
    return placement


def _tp_candidates(d: VllmDemand, m: HfModel | None) -> tuple[int, ...]:
    if d.tensor_parallel_size:
        return (d.tensor_parallel_size,)
    if m is None:
        return (1,)
    return tuple(t for t in TP_SIZES if m.n_head % t == 0 and m.n_head_kv % t == 0)


def _taken(placed: list[Placement]) -> dict[int, int]:
    """Bytes already given out per GPU (vLLM shares count in full)."""
    taken: dict[int, int] = {}
    for p in placed:
        for i in p.gpus:
            taken[i] = taken.get(i, 0) + (p.need_bytes or 0)
    return taken


def place_vllm(d: VllmDemand, gpus: tuple[Gpu, ...], placed: list[Placement]) -> Placement:
    """The smallest tensor-parallel group that holds the model with KV for one full sequence,
    on GPUs nothing else uses when there are enough; the rest of its GPUs as its share."""
    m = d.model
    taken = _taken(placed)
    last_error: str | None = None
    for tp in _tp_candidates(d, m):
        if d.gpus:
            _check_gpus(d.service, d.gpus, gpus)
            if len(d.gpus) != tp:
                raise GpuMemoryError(
                    f"services.{d.service}.gpus lists {len(d.gpus)} GPU(s) but "
                    f"tensor_parallel_size is {tp}: they must match",
                    exit_code=2,
                )
            group = d.gpus
        else:
            order = sorted((g.index for g in gpus), key=lambda i: (i in taken, i))
            if len(order) < tp:
                break
            group = tuple(sorted(order[:tp]))
        outside = VLLM_TP_OUTSIDE if tp > 1 else 0
        room = {i: usable_bytes(gpus[i]) - taken.get(i, 0) - outside for i in group}
        total = {i: (gpus[i].memory_total_mib or 0) * MIB for i in group}
        # Down to vLLM's three decimals: rounding up could hand out more than the room.
        utilization = (
            d.utilization
            or math.floor(
                1000 * min(MAX_UTILIZATION, min(room[i] / max(total[i], 1) for i in group))
            )
            / 1000
        )
        if m is None:
            return Placement(d.service, group, {}, utilization, None,
                             d.max_num_seqs, tp)  # fmt: skip
        fixed = vllm_fixed_parts(m, tp, d.max_num_seqs or MAX_SEQS)
        kv_bytes = sum(int(utilization * total[i]) - sum(fixed.values()) for i in group)
        per_token = vllm_kv_bytes_per_token(m, d.kv_cache_dtype)
        kv_tokens = max(0, kv_bytes) // per_token
        over = [i for i in group if utilization * total[i] > room[i]]
        if kv_tokens >= d.max_model_len and not over:
            seqs = d.max_num_seqs or max(
                1, min(MAX_SEQS, kv_tokens // max(1, d.max_model_len // SEQ_SHARE))
            )
            parts = {**fixed, "kv_cache": kv_bytes // len(group)}
            if outside:
                parts["all_reduce"] = outside  # beside the share, not in it
            return Placement(d.service, group, parts, utilization, int(kv_tokens),
                             int(seqs), tp)  # fmt: skip
        g = gpus[group[0]]
        sharing = [p.service for p in placed if group[0] in p.gpus]
        beside = f" beside {', '.join(sharing)} ({gib(taken[group[0]])})" if sharing else ""
        need = sum(fixed.values()) + d.max_model_len * per_token // tp
        last_error = (
            f"{d.service} does not fit on {_gpu_name(g)}{beside} with tensor parallel size {tp}: "
            f"needs at least {gib(need)} per GPU (weights {gib(fixed['weights'])} + activations "
            f"{gib(fixed['activations'])} + CUDA {gib(fixed['cuda'])} + KV cache for one "
            f"{d.max_model_len}-token sequence at {d.kv_cache_dtype} "
            f"{gib(d.max_model_len * per_token // tp)}), has {gib(room[group[0]])}"
        )
        if d.gpus or d.tensor_parallel_size:
            break
    raise GpuMemoryError(
        last_error or f"{d.service}: no tensor-parallel size fits {len(gpus)} GPU(s)",
        fix=f"services.{d.service}.kv_cache_dtype: fp8, a smaller ctx_size (max-model-len), a "
        "quantized model, tensor_parallel_size over more GPUs, or only one GPU service",
    )


UNSIZED_SHARE = 0.4  # of a shared GPU, left to a llama.cpp service whose model is unknown


def plan_gpu_memory(gpu: GpuFacts, demands: list[LlamaDemand | VllmDemand]) -> GpuMemoryPlan:
    """Place the GPU services (llama.cpp first: their needs are fixed; then vLLM, which takes
    the rest of its GPUs) and split each GPU's memory between them."""
    gpus = gpu.gpus
    notes: list[str] = []
    placed: list[Placement] = []
    llamas = [d for d in demands if isinstance(d, LlamaDemand)]
    vllms = [d for d in demands if isinstance(d, VllmDemand)]
    for nth, d in enumerate(llamas):
        p = place_llama(d, gpus, nth)
        if d.model is None:
            share = int(min(usable_bytes(gpus[i]) for i in p.gpus) * UNSIZED_SHARE)
            notes.append(
                f"{d.service} has no model to size: {UNSIZED_SHARE:.0%} of its GPU is left to it"
            )
            p = Placement(p.service, p.gpus, {"unsized": share}, kv_tokens=p.kv_tokens)
        placed.append(p)
    for d in vllms:
        placed.append(place_vllm(d, gpus, placed))
        if d.model is None:
            notes.append(f"{d.service} has no model to size: it gets what is left on its GPUs")
    rows = []
    for g in gpus:
        planned = {}
        for p in placed:
            if g.index not in p.gpus:
                continue
            if p.utilization is not None:
                planned[p.service] = (
                    int(p.utilization * (g.memory_total_mib or 0))
                    + p.parts.get("all_reduce", 0) // MIB
                )
            elif p.need_bytes is not None:
                planned[p.service] = p.need_bytes // MIB
        total = g.memory_total_mib or 0
        free = total - g.held_by_others_mib - sum(planned.values())
        rows.append(
            GpuRow(g.index, g.name, total, g.held_by_others_mib, RESERVE_MIB, planned, free)
        )
    return GpuMemoryPlan({p.service: p for p in placed}, tuple(rows), tuple(notes))
