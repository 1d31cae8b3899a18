"""`llmhost models`: what is in models_dir, and whether each fits this host's RAM and VRAM by the
plan's own memory arithmetic (the service configuration's context, slots and cache type)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts
from llmhost.facts.gguf_header import read_gguf_header
from llmhost.facts.models import provenance, read_hf_model, read_model_header
from llmhost.plan.config import Config
from llmhost.plan.gpu_memory import (
    LlamaDemand,
    llama_parts,
    usable_bytes,
    vllm_fixed_parts,
    vllm_kv_bytes_per_token,
)
from llmhost.plan.planner import MAX_HUGEPAGE_RAM_FRACTION, llama_kv_tokens, model_memory
from llmhost.plan.services import REGISTRY

# llama.h's llama_ftype: general.file_type -> the quantization's usual name.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE",
}  # fmt: skip


@dataclass(frozen=True)
class ModelEntry:
    name: str  # what services.<name>.model takes
    kind: str  # "gguf" (llama.cpp) or "directory" (vLLM)
    size_bytes: int
    quantization: str | None = None  # GGUF file type, or a directory's dtype
    architecture: str | None = None
    ram_need_bytes: int | None = None  # llama-cpu: weights + KV cache + compute
    ram_fits: bool | None = None
    vram_need_bytes: int | None = None  # llama-gpu (GGUF) or vllm-gpu (directory), one GPU
    vram_fits: bool | None = None  # None: no GPU
    source: str | None = None  # repo@commit, when llmhost pull fetched it
    error: str | None = None


def _gguf(path: Path, name: str, config: Config, facts: HostFacts, vram: int | None) -> ModelEntry:
    header = read_model_header(path)
    file_type = read_gguf_header(path).metadata.get("general.file_type")
    quant = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    mem = model_memory("llama-cpu", header, config.services["llama-cpu"])
    ram_need = mem.weights_bytes + mem.kv_cache_bytes + mem.compute_bytes
    ram = facts.memory.total_kb * 1024 * MAX_HUGEPAGE_RAM_FRACTION
    gpu_svc = config.services["llama-gpu"]
    demand = LlamaDemand(
        "llama-gpu",
        header,
        llama_kv_tokens(REGISTRY["llama-gpu"], gpu_svc),
        gpu_svc.cache_type,
        gpu_svc.gpu_layers,
    )
    vram_need = sum(llama_parts(demand).values())
    return ModelEntry(
        name, "gguf", path.stat().st_size, quant, header.architecture,
        ram_need, ram_need <= ram if ram else None,
        vram_need, None if vram is None else vram_need <= vram,
    )  # fmt: skip


def _directory(path: Path, name: str, config: Config, vram: int | None) -> ModelEntry:
    model = read_hf_model(path)
    svc = config.services["vllm-gpu"]
    fixed = sum(vllm_fixed_parts(model, 1, 1).values())
    need = fixed + svc.ctx_size * vllm_kv_bytes_per_token(model, svc.kv_cache_dtype)
    return ModelEntry(
        name, "directory", model.weights_bytes, model.dtype, model.architecture,
        vram_need_bytes=need, vram_fits=None if vram is None else need <= vram,
    )  # fmt: skip


def list_models(config: Config, facts: HostFacts) -> list[ModelEntry]:
    """GGUF files and model directories (a config.json) under models_dir, sorted by name."""
    root = Path(config.models_dir)
    if not root.is_dir():
        raise LlmhostError(f"models_dir {root} does not exist (llmhost pull creates nothing)")
    gpus = facts.gpu.gpus
    vram = max((usable_bytes(g) for g in gpus), default=None) if gpus else None
    pulled = provenance(root)
    found: list[tuple[str, Path]] = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # .cache (downloads in progress), provenance
        if (path.is_file() and path.suffix == ".gguf") or (
            path.is_dir() and (path / "config.json").is_file()
        ):
            found.append((rel, path))
    entries = []
    for name, path in found:
        try:
            if path.is_dir():
                entry = _directory(path, name, config, vram)
            else:
                entry = _gguf(path, name, config, facts, vram)
        except LlmhostError as exc:
            size = path.stat().st_size if path.is_file() else 0
            entry = ModelEntry(name, "directory" if path.is_dir() else "gguf", size, error=str(exc))
        origin = pulled.get(name)
        if isinstance(origin, dict) and origin.get("repo"):
            source = f"{origin['repo']}@{str(origin.get('commit', ''))[:12]}"
            entry = ModelEntry(**{**entry.__dict__, "source": source})
        entries.append(entry)
    return entries
