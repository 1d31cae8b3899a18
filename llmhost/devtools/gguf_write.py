"""Write GGUF v3 files without the `gguf` package (and numpy): metadata, tensor infos, then
each tensor's bytes streamed in order. The reader is llmhost/facts/gguf_header.py."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from llmhost.facts.gguf_header import (
    DEFAULT_ALIGNMENT,
    GGML_BLOCK_SIZES,
    GGUF_MAGIC,
    SCALAR_FORMATS,
)

VERSION = 3
# GGUF value types (the spec's gguf_type), as gguf_header's SCALAR_FORMATS numbers them.
UINT32, INT32, FLOAT32, STRING, ARRAY = 4, 5, 6, 8, 9


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, value_type: int, value: object) -> bytes:
    """One encoded metadata pair: a scalar or a string."""
    if value_type == STRING:
        return _string(key) + struct.pack("<I", STRING) + _string(str(value))
    return _string(key) + struct.pack(f"<I{SCALAR_FORMATS[value_type]}", value_type, value)


def kv_array(key: str, item_type: int, items: list) -> bytes:
    """One encoded metadata pair whose value is an array of strings or scalars."""
    head = _string(key) + struct.pack("<IIQ", ARRAY, item_type, len(items))
    if item_type == STRING:
        return head + b"".join(_string(s) for s in items)
    return head + struct.pack(f"<{len(items)}{SCALAR_FORMATS[item_type]}", *items)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dims: tuple[int, ...]  # ggml order: ne[0], a row's length, first
    ggml_type: int

    @property
    def n_bytes(self) -> int:
        block, type_bytes = GGML_BLOCK_SIZES[self.ggml_type]
        n = 1
        for d in self.dims:
            n *= d
        if self.dims[0] % block:
            raise ValueError(f"{self.name}: rows of {self.dims[0]} do not split into {block}s")
        return n // block * type_bytes


def _pad(n: int, alignment: int) -> int:
    return -n % alignment


def write_gguf(
    path: str | Path,
    pairs: Iterable[bytes],
    tensors: list[TensorInfo],
    tensor_bytes: Callable[[int, TensorInfo], bytes],
    alignment: int = DEFAULT_ALIGNMENT,
) -> Path:
    """Write `pairs` (from kv/kv_array, or copied raw from another file) and `tensors`, whose
    data `tensor_bytes(index, info)` gives one tensor at a time; returns `path`."""
    path, pairs = Path(path), list(pairs)
    infos, offset = [], 0
    for info in tensors:
        dims = struct.pack(f"<I{len(info.dims)}Q", len(info.dims), *info.dims)
        infos.append(_string(info.name) + dims + struct.pack("<IQ", info.ggml_type, offset))
        offset += info.n_bytes + _pad(info.n_bytes, alignment)
    head = b"".join(
        [GGUF_MAGIC, struct.pack("<IQQ", VERSION, len(tensors), len(pairs)), *pairs, *infos]
    )
    with path.open("wb") as out:
        out.write(head + b"\0" * _pad(len(head), alignment))
        for index, info in enumerate(tensors):
            data = tensor_bytes(index, info)
            if len(data) != info.n_bytes:
                raise ValueError(f"{info.name}: {len(data)} bytes given, {info.n_bytes} needed")
            out.write(data + b"\0" * _pad(len(data), alignment))
    return path
