"""What a model will cost in memory: a GGUF file's header (the `gguf` package), or a Hugging Face
model directory's config.json and safetensors sizes (what vLLM serves)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.errors import LlmhostError

GGUF_MAGIC = b"GGUF"


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


def _value(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    value = field.contents()
    return value if value is not None else default


def read_model_header(path: str | Path) -> ModelHeader:
    """Parse the header; a missing file or a non-GGUF file is a clear error."""
    file = Path(path)
    if not file.is_file():
        raise LlmhostError(f"model {file} does not exist")
    with file.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise LlmhostError(f"model {file} is not a GGUF file (bad magic)")
    from gguf import GGUFReader  # imports numpy: only when a model is sized

    try:
        reader = GGUFReader(file, "r")
    except Exception as exc:
        raise LlmhostError(f"model {file} has an unreadable GGUF header ({exc})") from None
    arch = str(_value(reader, "general.architecture", "unknown"))
    n_embd = int(_value(reader, f"{arch}.embedding_length", 0))
    n_head = int(_value(reader, f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(_value(reader, f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = n_embd // n_head if n_head else 0
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens.data) if tokens is not None else 0
    ff = _value(reader, f"{arch}.feed_forward_length", 0)
    return ModelHeader(
        path=str(file),
        architecture=arch,
        n_layer=int(_value(reader, f"{arch}.block_count", 0)),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=int(_value(reader, f"{arch}.attention.key_length", head_dim)),
        head_dim_v=int(_value(reader, f"{arch}.attention.value_length", head_dim)),
        n_ff=int(max(ff) if isinstance(ff, list) else ff),
        n_vocab=int(_value(reader, f"{arch}.vocab_size", n_vocab) or n_vocab),
        context_length=int(_value(reader, f"{arch}.context_length", 0)),
        weights_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        file_bytes=file.stat().st_size,
        embedding_bytes=sum(
            int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight"
        ),
    )


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
    import json

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
