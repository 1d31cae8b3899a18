"""A GGUF file's metadata and tensor infos, read from its header without the `gguf` package.

`gguf.GGUFReader` decodes every array element (15 s for a 128k-token vocabulary); this reader
seeks past arrays instead. Every count and length read from the file is bounded, so a truncated
or crafted file fails at once with one clear error. GGUF v2/v3, little-endian only.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from llmhost.errors import LlmhostError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# Bounds on what a header may declare; real models stay far below them.
MAX_KV = 1 << 16  # metadata keys (real files: under 100)
MAX_TENSORS = 1 << 20  # tensor infos (real files: a few thousand)
MAX_NAME_BYTES = 1 << 16  # a key or tensor name (the GGUF spec: keys under 64 KiB)
MAX_STRING_BYTES = 1 << 24  # a string value (chat templates: tens of KiB)
MAX_ARRAY_ITEMS = 1 << 24  # an array value (vocabularies and merges: under a million)
MAX_DIMS = 4  # llama.cpp's GGML_MAX_DIMS
MAX_DIM = (1 << 63) - 1  # llama.cpp keeps dimensions in int64
# Numeric arrays up to this long are decoded (per-layer hyperparameters); longer ones and all
# string arrays are skipped, keeping only their length.
MAX_DECODED_ARRAY = 4096

VALUE_STRING, VALUE_ARRAY = 8, 9
# GGUF value type -> struct format of one element.
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q",
                  11: "q", 12: "d"}  # fmt: skip
UINT32 = 4

# ggml tensor type -> (elements per block, bytes per block), as gguf.GGML_QUANT_SIZES.
GGML_BLOCK_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip

_SCALARS = {t: struct.Struct(f"<{f}") for t, f in SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_DIMS = [struct.Struct(f"<{n}Q") for n in range(MAX_DIMS + 1)]
_TENSOR_TAIL = struct.Struct("<IQ")  # ggml type, offset in the data section

Scalar = int | float | bool | str


@dataclass(frozen=True)
class GgufArray:
    """An array value: its element type and length; its elements only for short numeric
    arrays (up to MAX_DECODED_ARRAY), None for skipped ones."""

    item_type: int
    count: int
    values: tuple[int | float | bool, ...] | None = None


@dataclass(frozen=True)
class GgufTensor:
    name: str
    ggml_type: int
    dims: tuple[int, ...]  # ggml order: ne[0] (a row's length) first
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, Scalar | GgufArray]
    tensors: tuple[GgufTensor, ...]
    alignment: int
    data_offset: int  # where the data section starts in the file
    file_bytes: int


class _Malformed(Exception):
    """A problem with the header's bytes; read_gguf_header names the file."""


class _Cursor:
    """A bounds-checked position in the mapped file."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def take(self, n: int, what: str) -> int:
        """Advance past n bytes; return where they start."""
        start = self.pos
        if start + n > self.end:
            raise _Malformed(f"{what} at byte {start} runs past the end of the file")
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.buf, self.take(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack_from(self.buf, self.take(8, what))[0])

    def string(self, limit: int, what: str) -> str:
        at = self.pos
        n = self.u64(what)
        if n > limit:
            raise _Malformed(f"{what} at byte {at} claims {n} bytes (limit {limit})")
        if n > self.end - self.pos:
            raise _Malformed(f"{what} at byte {at} runs past the end of the file")
        start = self.take(n, what)
        return self.buf[start : start + n].decode("utf-8", errors="replace")

    def count(self, limit: int, item_bytes: int, what: str) -> int:
        """A declared count, within `limit` and what the rest of the file could hold."""
        n = self.u64(what)
        if n > limit:
            raise _Malformed(f"{what} at byte {self.pos - 8} is {n} (limit {limit})")
        if n * item_bytes > self.end - self.pos:
            raise _Malformed(f"{what} at byte {self.pos - 8} is {n}, more than the file holds")
        return n


def _skip_strings(cur: _Cursor, count: int, what: str) -> None:
    """Walk a string array's lengths without building the strings."""
    unpack, buf, pos = _U64.unpack_from, cur.buf, cur.pos
    try:
        for _ in range(count):
            pos += 8 + unpack(buf, pos)[0]
    except struct.error:
        pos = cur.end + 1
    if pos > cur.end:
        raise _Malformed(f"{what} at byte {cur.pos} runs past the end of the file")
    cur.pos = pos


def _array(cur: _Cursor, key: str) -> GgufArray:
    item_type = cur.u32(f"{key}: array type")
    if item_type == VALUE_STRING:
        count = cur.count(MAX_ARRAY_ITEMS, 8, f"{key}: array length")
        _skip_strings(cur, count, f"{key}: string array")
        return GgufArray(item_type, count)
    scalar = _SCALARS.get(item_type)
    if scalar is None:
        raise _Malformed(f"{key}: unsupported array element type {item_type}")
    fmt, size = SCALAR_FORMATS[item_type], scalar.size
    count = cur.count(MAX_ARRAY_ITEMS, size, f"{key}: array length")
    start = cur.take(count * size, f"{key}: array")
    if count > MAX_DECODED_ARRAY:
        return GgufArray(item_type, count)
    return GgufArray(item_type, count, struct.unpack_from(f"<{count}{fmt}", cur.buf, start))


def _value(cur: _Cursor, value_type: int, key: str) -> Scalar | GgufArray:
    if value_type == VALUE_STRING:
        return cur.string(MAX_STRING_BYTES, f"{key}: string")
    if value_type == VALUE_ARRAY:
        return _array(cur, key)
    scalar = _SCALARS.get(value_type)
    if scalar is None:
        raise _Malformed(f"{key}: unknown value type {value_type}")
    return scalar.unpack_from(cur.buf, cur.take(scalar.size, key))[0]  # type: ignore[no-any-return]


def _tensor(cur: _Cursor) -> GgufTensor:
    name = cur.string(MAX_NAME_BYTES, "tensor name")
    n_dims = cur.u32(f"tensor {name}: dimension count")
    if n_dims > MAX_DIMS:
        raise _Malformed(f"tensor {name} has {n_dims} dimensions (limit {MAX_DIMS})")
    dims = _DIMS[n_dims].unpack_from(cur.buf, cur.take(8 * n_dims, f"tensor {name}: dimensions"))
    ggml_type, offset = _TENSOR_TAIL.unpack_from(cur.buf, cur.take(12, f"tensor {name}: type"))
    if ggml_type not in GGML_BLOCK_SIZES:
        raise _Malformed(f"tensor {name} has unknown ggml type {ggml_type}")
    block, type_bytes = GGML_BLOCK_SIZES[ggml_type]
    if any(d > MAX_DIM for d in dims) or (dims and dims[0] % block):
        raise _Malformed(f"tensor {name} has impossible dimensions {list(dims)}")
    n_elements = 1
    for d in dims:
        n_elements *= d
    return GgufTensor(name, ggml_type, tuple(dims), offset, n_elements * type_bytes // block)


def _preamble(cur: _Cursor) -> tuple[int, int, int]:
    """Magic, version and counts: (version, tensor count, metadata key count)."""
    cur.take(4, "magic")
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0:
            raise _Malformed("is big-endian; only little-endian GGUF files are supported")
        raise _Malformed(f"is GGUF version {version}; versions 2 and 3 are supported")
    # Each tensor info takes at least 24 bytes, each key/value at least 13.
    n_tensors = cur.count(MAX_TENSORS, 24, "tensor count")
    n_kv = cur.count(MAX_KV, 13, "metadata key count")
    return version, n_tensors, n_kv


def _pair(cur: _Cursor, seen: dict) -> tuple[str, Scalar | GgufArray]:
    key = cur.string(MAX_NAME_BYTES, "metadata key")
    if key in seen:
        raise _Malformed(f"repeats metadata key {key}")
    value_type = cur.u32(f"{key}: type")
    if key == "general.alignment" and value_type != UINT32:
        raise _Malformed("general.alignment is not a uint32")
    return key, _value(cur, value_type, key)


def _parse(buf: mmap.mmap) -> GgufHeader:
    cur = _Cursor(buf)
    version, n_tensors, n_kv = _preamble(cur)
    metadata: dict[str, Scalar | GgufArray] = {}
    for _ in range(n_kv):
        key, metadata[key] = _pair(cur, metadata)
    tensors = tuple(_tensor(cur) for _ in range(n_tensors))
    if len({t.name for t in tensors}) != len(tensors):
        raise _Malformed("repeats a tensor name")
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))  # type: ignore[arg-type]
    if alignment <= 0 or alignment & (alignment - 1):
        raise _Malformed(f"general.alignment {alignment} is not a power of two")
    data_offset = -(-cur.pos // alignment) * alignment
    for t in tensors:
        if data_offset + t.offset + t.n_bytes > cur.end:
            raise _Malformed(f"tensor {t.name}'s data runs past the end of the file")
    return GgufHeader(version, metadata, tensors, alignment, data_offset, cur.end)


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> GgufHeader:
    """One parse per file version: a rewrite changes the size, times or inode (ctime even when
    the mtime is set back)."""
    with open(path, "rb") as fh:
        if size < 4 or fh.read(4) != GGUF_MAGIC:
            raise _Malformed("is not a GGUF file (bad magic)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf)


def read_gguf_header(path: str | Path) -> GgufHeader:
    """The header of a GGUF file; a missing, truncated or malformed file is one clear error."""
    file = Path(path)
    try:
        resolved = file.resolve()
        stat = resolved.stat()
        return _read_cached(
            str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino
        )
    except OSError as exc:
        raise LlmhostError(f"model {file} is unreadable ({exc.strerror or exc})") from None
    except _Malformed as exc:
        message = str(exc)
        if not message.startswith("is "):
            message = f"has an unreadable GGUF header ({message})"
        raise LlmhostError(f"model {file} {message}") from None


def raw_metadata(path: str | Path, prefix: str) -> list[tuple[str, bytes]]:
    """The metadata pairs whose key starts with `prefix`, each as its encoded bytes (key,
    type and value), in file order: copied as they are into another file (gguf_write)."""
    file = Path(path)
    try:
        with file.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[:4] != GGUF_MAGIC:
                raise _Malformed("is not a GGUF file (bad magic)")
            cur = _Cursor(buf)
            _, _, n_kv = _preamble(cur)
            pairs: dict[str, bytes] = {}
            for _ in range(n_kv):
                start = cur.pos
                key, _ = _pair(cur, pairs)
                pairs[key] = bytes(buf[start : cur.pos])
    except (OSError, ValueError) as exc:  # ValueError: mmap of an empty file
        raise LlmhostError(f"model {file} is unreadable ({exc})") from None
    except _Malformed as exc:
        raise LlmhostError(f"model {file} has an unreadable GGUF header ({exc})") from None
    return [(k, v) for k, v in pairs.items() if k.startswith(prefix)]
