"""Random-weight llama GGUF files, so builds, deploys and benchmarks can run a real llama-server
without downloading a model. The vocabulary comes from a vocab-only GGUF (llama.cpp ships them
under models/), which makes tokenization real; the weights produce fluent nonsense. Without one,
a minimal byte-level SentencePiece vocabulary is written (any text tokenizes, byte by byte).

    python -m llmhost.devtools.synthetic_gguf --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llmhost.devtools.gguf_write import (
    FLOAT32,
    INT32,
    STRING,
    UINT32,
    TensorInfo,
    kv,
    kv_array,
    write_gguf,
)
from llmhost.facts.gguf_header import GgufArray, raw_metadata, read_gguf_header

# Bump when the bytes written for the same arguments change, so cached files are regenerated.
FORMAT_REVISION = 2

# Weights are about +-0.03 (standard deviation near 0.02, a common init scale): small enough
# that activations stay finite through any depth with unit RMSNorm weights. Quantized blocks
# are random codes under one scale; float weights random mantissas in [2^-7, 2^-5).
WEIGHT_STD = 0.02
_INT8_UNIFORM_STD = 73.6  # standard deviation of integers uniform on [-127, 127]
_Q8_0_SCALE = WEIGHT_STD / _INT8_UNIFORM_STD  # codes -128..127 times this
_Q4_0_SCALE = WEIGHT_STD / 4.6  # codes -8..7 (standard deviation 4.6) times this

# ggml type ids and llama file types (ggml.h, llama.h): name -> (ggml type, file type).
TENSOR_TYPES: dict[str, tuple[int, int]] = {
    "f32": (0, 0),
    "f16": (1, 1),
    "q4_0": (2, 2),
    "q8_0": (8, 7),
}
_QUANTIZED = ("q4_0", "q8_0")
GGML_F32 = 0
QUANT_VERSION = 2  # general.quantization_version of today's llama.cpp quantizations
# llama.cpp's token types (llama_token_type): unknown, control, byte.
TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_BYTE = 2, 3, 6
TOKENS_KEY = "tokenizer.ggml.tokens"


@dataclass(frozen=True)
class LlamaShape:
    """Hyperparameters of a llama-architecture model (names as in llama.cpp's hparams)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_freq_base: float = 10000.0
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if min(self.n_layer, self.n_embd, self.n_head, self.n_head_kv, self.n_ff) < 1:
            raise ValueError(f"all sizes must be positive: {self}")
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


PRESETS: dict[str, LlamaShape] = {
    # A few MB: loads in well under a second, for CI.
    "tiny": LlamaShape(n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=384, n_ctx_train=4096),
    # Llama-3.2-1B shapes (GQA 32/8, tied embeddings, rope theta 5e5) with the 32k SPM vocabulary.
    "1b": LlamaShape(
        n_layer=16,
        n_embd=2048,
        n_head=32,
        n_head_kv=8,
        n_ff=8192,
        n_ctx_train=131072,
        rope_freq_base=500000.0,
        tie_embeddings=True,
    ),
    # Llama-2-7B shapes.
    "7b": LlamaShape(
        n_layer=32, n_embd=4096, n_head=32, n_head_kv=32, n_ff=11008, n_ctx_train=4096
    ),
}


_LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                  "ffn_gate", "ffn_up", "ffn_down")  # fmt: skip


def _tensor_infos(shape: LlamaShape, n_vocab: int, ggml_type: int) -> Iterator[TensorInfo]:
    """llama.cpp's tensor names and shapes (ggml order: a row's length first); norms are F32."""
    kv_dim = shape.head_dim * shape.n_head_kv
    embd, ff = shape.n_embd, shape.n_ff
    yield TensorInfo("token_embd.weight", (embd, n_vocab), ggml_type)
    dims = {"attn_norm": (embd,), "attn_q": (embd, embd), "attn_k": (embd, kv_dim),
            "attn_v": (embd, kv_dim), "attn_output": (embd, embd), "ffn_norm": (embd,),
            "ffn_gate": (embd, ff), "ffn_up": (embd, ff), "ffn_down": (ff, embd)}  # fmt: skip
    for bid in range(shape.n_layer):
        for name in _LAYER_TENSORS:
            norm = len(dims[name]) == 1
            yield TensorInfo(
                f"blk.{bid}.{name}.weight", dims[name], GGML_F32 if norm else ggml_type
            )
    yield TensorInfo("output_norm.weight", (embd,), GGML_F32)
    if not shape.tie_embeddings:
        yield TensorInfo("output.weight", (embd, n_vocab), ggml_type)


# Exponent bits that put a random float in [2^-7, 2^-5) with a random sign: the byte holding the
# sign keeps its sign bit and gets a fixed exponent (the exponent's last bit stays random).
_F16_HIGH = bytes((b & 0x83) | 0x20 for b in range(256))  # s 0100x mm: exponent 8 or 9
_F32_HIGH = bytes((b & 0x80) | 0x3C for b in range(256))  # s 0111100, then x in the next byte


def _weights(tensor_type: str, info: TensorInfo, rng: random.Random) -> bytes:
    """One tensor's bytes: norms all 1.0, weights random at about WEIGHT_STD."""
    if info.ggml_type == GGML_F32 and len(info.dims) == 1:
        return struct.pack("<f", 1.0) * info.dims[0]
    data = bytearray(rng.randbytes(info.n_bytes))
    if tensor_type in _QUANTIZED:
        block_bytes = 34 if tensor_type == "q8_0" else 18  # an f16 scale, then 32 codes
        scale = struct.pack("<e", _Q8_0_SCALE if tensor_type == "q8_0" else _Q4_0_SCALE)
        blocks = info.n_bytes // block_bytes
        data[0::block_bytes], data[1::block_bytes] = scale[:1] * blocks, scale[1:] * blocks
    elif tensor_type == "f16":
        data[1::2] = data[1::2].translate(_F16_HIGH)
    else:
        data[3::4] = data[3::4].translate(_F32_HIGH)
    return bytes(data)


def _copy_tokenizer(vocab_gguf: Path) -> tuple[list[bytes], int]:
    """Every tokenizer.* pair of the vocab file, byte for byte; and the vocabulary size."""
    tokens = read_gguf_header(vocab_gguf).metadata.get(TOKENS_KEY)
    if not isinstance(tokens, GgufArray) or tokens.count == 0:
        raise ValueError(f"{vocab_gguf} has no {TOKENS_KEY} array")
    return [raw for _, raw in raw_metadata(vocab_gguf, "tokenizer.")], tokens.count


def _byte_vocab() -> tuple[list[bytes], int]:
    """A 259-token SPM vocabulary (<unk>, <s>, </s> and one piece per byte): llama.cpp's SPM
    tokenizer falls back to <0xXX> pieces, so any text tokenizes."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL] + [TOKEN_BYTE] * 256
    pairs = [
        kv("tokenizer.ggml.model", STRING, "llama"),
        kv_array(TOKENS_KEY, STRING, tokens),
        kv_array("tokenizer.ggml.scores", FLOAT32, [0.0] * len(tokens)),
        kv_array("tokenizer.ggml.token_type", INT32, types),
        kv("tokenizer.ggml.unknown_token_id", UINT32, 0),
        kv("tokenizer.ggml.bos_token_id", UINT32, 1),
        kv("tokenizer.ggml.eos_token_id", UINT32, 2),
    ]
    return pairs, len(tokens)


def write_llama_gguf(
    path: str | Path,
    vocab_gguf: str | Path | None,
    *,
    n_layer: int = PRESETS["tiny"].n_layer,
    n_embd: int = PRESETS["tiny"].n_embd,
    n_head: int = PRESETS["tiny"].n_head,
    n_head_kv: int = PRESETS["tiny"].n_head_kv,
    n_ff: int = PRESETS["tiny"].n_ff,
    n_ctx_train: int = PRESETS["tiny"].n_ctx_train,
    rope_freq_base: float = 10000.0,
    tie_embeddings: bool = False,
    tensor_type: str = "q8_0",
    seed: int = 0,
    name: str = "llmhost-synthetic-llama",
) -> Path:
    """Write a random-weight llama GGUF with the vocabulary of `vocab_gguf` (None: the built-in
    byte vocabulary); returns `path`.

    Tensors are streamed one at a time, so a 7B file needs about one tensor's worth of memory.
    """
    shape = LlamaShape(
        n_layer, n_embd, n_head, n_head_kv, n_ff, n_ctx_train, rope_freq_base, tie_embeddings
    )
    tensor_type = tensor_type.lower()
    if tensor_type not in TENSOR_TYPES:
        raise ValueError(f"tensor type {tensor_type}: one of {', '.join(TENSOR_TYPES)}")
    ggml_type, file_type = TENSOR_TYPES[tensor_type]
    block = 32 if tensor_type in _QUANTIZED else 1
    if n_embd % block or n_ff % block:
        raise ValueError(f"{tensor_type} needs n_embd and n_ff divisible by {block}")
    vocab, n_vocab = _byte_vocab() if vocab_gguf is None else _copy_tokenizer(Path(vocab_gguf))
    arch = "llama"
    pairs = [
        kv("general.architecture", STRING, arch),
        kv("general.name", STRING, name),
        kv("general.file_type", UINT32, file_type),
        *([kv("general.quantization_version", UINT32, QUANT_VERSION)] if block > 1 else []),
        kv(f"{arch}.context_length", UINT32, shape.n_ctx_train),
        kv(f"{arch}.embedding_length", UINT32, shape.n_embd),
        kv(f"{arch}.block_count", UINT32, shape.n_layer),
        kv(f"{arch}.feed_forward_length", UINT32, shape.n_ff),
        kv(f"{arch}.attention.head_count", UINT32, shape.n_head),
        kv(f"{arch}.attention.head_count_kv", UINT32, shape.n_head_kv),
        kv(f"{arch}.attention.layer_norm_rms_epsilon", FLOAT32, 1e-5),
        kv(f"{arch}.rope.dimension_count", UINT32, shape.head_dim),
        kv(f"{arch}.rope.freq_base", FLOAT32, shape.rope_freq_base),
        *vocab,
        kv(f"{arch}.vocab_size", UINT32, n_vocab),
    ]
    tensors = list(_tensor_infos(shape, n_vocab, ggml_type))

    def tensor_bytes(index: int, info: TensorInfo) -> bytes:
        return _weights(tensor_type, info, random.Random(f"{seed}/{index}"))

    return write_gguf(path, pairs, tensors, tensor_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=Path, help="vocab-only GGUF (default: byte vocabulary)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--type", dest="tensor_type", choices=sorted(TENSOR_TYPES), default="q8_0")
    parser.add_argument("--seed", type=int, default=0)
    for field in ("n_layer", "n_embd", "n_head", "n_head_kv", "n_ff", "n_ctx_train"):
        parser.add_argument(
            f"--{field.replace('_', '-')}", dest=field, type=int, help="override the preset"
        )
    args = parser.parse_args(argv)

    shape = dataclasses.asdict(PRESETS[args.preset])
    shape.update({k: v for k, v in vars(args).items() if k in shape and v is not None})
    path = write_llama_gguf(
        args.out,
        args.vocab,
        **shape,
        tensor_type=args.tensor_type,
        seed=args.seed,
        name=f"llmhost-synthetic-llama-{args.preset}",
    )
    print(f"{path} {path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
