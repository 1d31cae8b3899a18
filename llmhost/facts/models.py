"""What a model will cost in memory: a GGUF file's header (llmhost.facts.gguf_header), or a Hugging
Face model directory's config.json and safetensors sizes (what vLLM serves)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.errors import LlmhostError
from llmhost.facts import model_cache
from llmhost.facts.gguf_header import GgufArray, Scalar, read_gguf_header

Metadata = dict[str, Scalar | GgufArray]
PROVENANCE = ".llmhost-pulled.json"  # in models_dir, written by `llmhost pull`: name -> origin


@dataclass(frozen=True)
class ModelHeader:
    path: str
    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    context_length: int
    weights_bytes: int
    file_bytes: int
    embedding_bytes: int = 0  # token_embd: llama.cpp keeps the input embedding in host memory

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V elements per token over all layers (multiply by the cache type's width)."""
        return self.n_layer * self.n_head_kv * (self.head_dim_k + self.head_dim_v)


_CACHED_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelHeader)) - {"path"}


def _number(meta: Metadata, key: str, default: int, per_layer: bool = False) -> int:
    """An integer-valued key; with per_layer, an array of per-layer values counts as its
    largest (the feed-forward length of models whose layers differ)."""
    value = meta.get(key)
    if isinstance(value, GgufArray):
        if not (per_layer and value.values):
            raise LlmhostError(f"{key} holds per-layer values, which llmhost cannot size yet")
        value = max(value.values)
    if value is None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # a string, NaN, infinity
        raise LlmhostError(f"{key} is {str(value)[:40]!r}, not a number") from None


def read_model_header(path: str | Path) -> ModelHeader:
    """Parse the header (or take it from the cache); a missing or non-GGUF file is a clear error."""
    file = Path(path)
    if not file.is_file():
        raise LlmhostError(f"model {file} does not exist")
    resolved = file.resolve()
    facts = model_cache.load(resolved, _CACHED_FIELDS)
    if facts is None:
        header = _header_from_gguf(file)
        facts = {k: v for k, v in dataclasses.asdict(header).items() if k != "path"}
        model_cache.store(resolved, facts)
    return ModelHeader(path=str(file), **facts)  # type: ignore[arg-type]


def _header_from_gguf(file: Path) -> ModelHeader:
    gguf = read_gguf_header(file)
    meta = gguf.metadata
    try:
        arch = str(meta.get("general.architecture", "unknown"))
        n_embd = _number(meta, f"{arch}.embedding_length", 0)
        n_head = _number(meta, f"{arch}.attention.head_count", 1) or 1
        n_head_kv = _number(meta, f"{arch}.attention.head_count_kv", n_head) or n_head
        head_dim = n_embd // n_head if n_head else 0
        tokens = meta.get("tokenizer.ggml.tokens")
        n_vocab = tokens.count if isinstance(tokens, GgufArray) else 0
        return ModelHeader(
            path=str(file),
            architecture=arch,
            n_layer=_number(meta, f"{arch}.block_count", 0),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim_k=_number(meta, f"{arch}.attention.key_length", head_dim),
            head_dim_v=_number(meta, f"{arch}.attention.value_length", head_dim),
            n_ff=_number(meta, f"{arch}.feed_forward_length", 0, per_layer=True),
            n_vocab=_number(meta, f"{arch}.vocab_size", n_vocab) or n_vocab,
            context_length=_number(meta, f"{arch}.context_length", 0),
            weights_bytes=sum(t.n_bytes for t in gguf.tensors),
            file_bytes=gguf.file_bytes,
            embedding_bytes=sum(t.n_bytes for t in gguf.tensors if t.name == "token_embd.weight"),
        )
    except LlmhostError as exc:
        raise LlmhostError(f"model {file}: {exc}") from None


# Bytes per element of a Hugging Face dtype name.
HF_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1}


@dataclass(frozen=True)
class HfModel:
    """A model directory vLLM serves: shapes from config.json, weights from the safetensors."""

    path: str
    architecture: str
    n_layer: int
    hidden_size: int
    n_head: int
    n_head_kv: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    dtype: str  # torch_dtype: what an "auto" KV cache is stored in
    weights_bytes: int

    @property
    def kv_elements_per_token(self) -> int:
        return self.n_layer * self.n_head_kv * self.head_dim * 2


def read_hf_model(path: str | Path) -> HfModel:
    """config.json and the *.safetensors sizes of a model directory; a clear error otherwise."""

    root = Path(path)
    config_file = root / "config.json"
    if not root.is_dir():
        raise LlmhostError(f"model {root} is not a directory (vLLM serves a model directory)")
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise LlmhostError(f"model {root} has no config.json") from None
    except (OSError, ValueError) as exc:
        raise LlmhostError(f"model {root}: config.json is unreadable ({exc})") from None
    text = config.get("text_config") or config  # multimodal models nest the language model
    try:
        n_head = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        model = HfModel(
            path=str(root),
            architecture=str((config.get("architectures") or ["unknown"])[0]),
            n_layer=int(text["num_hidden_layers"]),
            hidden_size=hidden,
            n_head=n_head,
            n_head_kv=int(text.get("num_key_value_heads") or n_head),
            head_dim=int(text.get("head_dim") or hidden // n_head),
            intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
            vocab_size=int(text["vocab_size"]),
            max_position_embeddings=int(text.get("max_position_embeddings") or 0),
            dtype=str(
                text.get("torch_dtype")
                or text.get("dtype")
                or config.get("torch_dtype")
                or config.get("dtype")
                or "bfloat16"
            ),
            weights_bytes=sum(f.stat().st_size for f in root.glob("*.safetensors")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LlmhostError(f"model {root}: config.json lacks a usable {exc}") from None
    if model.weights_bytes == 0:
        raise LlmhostError(f"model {root} has no *.safetensors weights")
    return model


def provenance(models_dir: str | Path) -> dict[str, dict]:
    """What `llmhost pull` recorded in models_dir: name -> repo, revision, commit, files."""
    try:
        data = json.loads((Path(models_dir) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- model facts, through a Source

GGUF, HF = "gguf", "hf"  # a GGUF file (llama.cpp), a model directory (vLLM)
READERS = {GGUF: read_model_header, HF: read_hf_model}
_CLASSES: dict[str, type[ModelHeader] | type[HfModel]] = {GGUF: ModelHeader, HF: HfModel}
MAX_MODEL_PATH = 4096


@dataclass(frozen=True)
class ModelUnreadable:
    """A configured model whose facts could not be read: the reason, for the plan to name."""

    path: str
    kind: str
    error: str


ModelFacts = ModelHeader | HfModel | ModelUnreadable


def model_json(model: ModelHeader | HfModel) -> str:
    """A model's facts as a source hands them out (and a snapshot keeps them): no path."""
    return json.dumps({k: v for k, v in dataclasses.asdict(model).items() if k != "path"})


def model_from_json(path: str, kind: str, text: str) -> ModelHeader | HfModel:
    """Facts a source handed out (from a snapshot: anyone's) -> the model; every field present,
    of its type, numbers within bounds, else one line naming the field."""
    cls = _CLASSES.get(kind)
    if cls is None:
        raise LlmhostError(f"model {path}: unknown kind {kind[:20]!r} (gguf or hf)")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise LlmhostError(f"model {path}: its recorded facts are not JSON") from None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "path"}
    if not isinstance(data, dict):
        raise LlmhostError(f"model {path}: its recorded facts are not an object")
    missing = sorted(set(fields) - set(data) - _DEFAULTED[kind])
    if missing:
        raise LlmhostError(f"model {path}: its recorded facts lack {', '.join(missing)}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise LlmhostError(f"model {path}: its recorded facts have unknown {unknown[0][:40]!r}")
    for name, value in data.items():
        text_field = fields[name].type == "str"
        if text_field:
            ok = isinstance(value, str) and len(value) <= 200 and value.isprintable()
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 50
        if not ok:
            want = "a short string" if text_field else "a whole number from 0 to 2**50"
            raise LlmhostError(f"model {path}: {name} must be {want} (got {str(value)[:40]!r})")
    return cls(path=path, **data)  # type: ignore[arg-type]


_DEFAULTED = {
    kind: frozenset(f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING)
    for kind, cls in _CLASSES.items()
}


def read_model(path: str, kind: str) -> ModelHeader | HfModel:
    """The facts of the model at `path` on this host (GGUF headers cached by file identity)."""
    return READERS[kind](path)


def gather_models(source: Any, wanted: dict[str, str]) -> dict[str, ModelFacts]:
    """`wanted` (path -> kind) read through `source`: the live files, or a snapshot's record."""
    found: dict[str, ModelFacts] = {}
    for path, kind in wanted.items():
        got = source.model(path, kind)
        if not got.ok:
            found[path] = ModelUnreadable(path, kind, got.error or "unreadable")
            continue
        try:
            found[path] = model_from_json(path, kind, got.stdout)
        except LlmhostError as exc:
            found[path] = ModelUnreadable(path, kind, str(exc))
    return found
