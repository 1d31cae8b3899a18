"""read_model_header as it was written over `gguf.GGUFReader`: the reference that
llmhost.facts.gguf_header is held to (tests, benchmarks/model_facts.py). Slow: it decodes every
array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from llmhost.facts.models import ModelHeader


def reference_model_header(path: Path, reader: gguf.GGUFReader | None = None) -> ModelHeader:
    reader = reader or gguf.GGUFReader(path, "r")

    def value(key: str, default: Any = None) -> Any:
        field = reader.fields.get(key)
        contents = None if field is None else field.contents()
        return default if contents is None else contents

    arch = str(value("general.architecture", "unknown"))
    n_embd = int(value(f"{arch}.embedding_length", 0))
    n_head = int(value(f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(value(f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = n_embd // n_head if n_head else 0
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens.data) if tokens is not None else 0
    ff = value(f"{arch}.feed_forward_length", 0)
    return ModelHeader(
        path=str(path),
        architecture=arch,
        n_layer=int(value(f"{arch}.block_count", 0)),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=int(value(f"{arch}.attention.key_length", head_dim)),
        head_dim_v=int(value(f"{arch}.attention.value_length", head_dim)),
        n_ff=int(max(ff) if isinstance(ff, list) else ff),
        n_vocab=int(value(f"{arch}.vocab_size", n_vocab) or n_vocab),
        context_length=int(value(f"{arch}.context_length", 0)),
        weights_bytes=sum(int(t.n_bytes) for t in reader.tensors),
        file_bytes=path.stat().st_size,
        embedding_bytes=sum(
            int(t.n_bytes) for t in reader.tensors if t.name == "token_embd.weight"
        ),
    )
