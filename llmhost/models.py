"""What a GGUF model will cost in memory, read from its header with the `gguf` package."""

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
    )
