"""Random-weight llama GGUF files, so builds, deploys and benchmarks can run a real llama-server
without downloading a model. The vocabulary comes from a vocab-only GGUF (llama.cpp ships them
under models/), which makes tokenization real; the weights produce fluent nonsense. Without one,
a minimal byte-level SentencePiece vocabulary is written (any text tokenizes, byte by byte).

    python -m llmhost.devtools.synthetic_gguf --vocab ggml-vocab-llama-spm.gguf --out tiny.gguf
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# Bump when the bytes written for the same arguments change, so cached files are regenerated.
FORMAT_REVISION = 1

# Weights are uniform on about +-0.035 (standard deviation 0.02, a common init scale): small
# enough that activations stay finite through any depth with unit RMSNorm weights.
WEIGHT_STD = 0.02
_INT8_UNIFORM_STD = 73.6  # standard deviation of integers uniform on [-127, 127]

TENSOR_TYPES: dict[str, gguf.GGMLQuantizationType] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
    "q4_0": gguf.GGMLQuantizationType.Q4_0,
}
_FILE_TYPES: dict[gguf.GGMLQuantizationType, gguf.LlamaFileType] = {
    gguf.GGMLQuantizationType.F32: gguf.LlamaFileType.ALL_F32,
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
}


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


@dataclass(frozen=True)
class _TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, cols); ggml's ne is the reverse
    is_norm: bool


def _tensor_specs(shape: LlamaShape, n_vocab: int) -> Iterator[_TensorSpec]:
    names = gguf.TENSOR_NAMES
    t = gguf.MODEL_TENSOR
    kv_dim = shape.head_dim * shape.n_head_kv
    yield _TensorSpec(names[t.TOKEN_EMBD] + ".weight", (n_vocab, shape.n_embd), False)
    for bid in range(shape.n_layer):
        layer = {
            t.ATTN_NORM: ((shape.n_embd,), True),
            t.ATTN_Q: ((shape.n_embd, shape.n_embd), False),
            t.ATTN_K: ((kv_dim, shape.n_embd), False),
            t.ATTN_V: ((kv_dim, shape.n_embd), False),
            t.ATTN_OUT: ((shape.n_embd, shape.n_embd), False),
            t.FFN_NORM: ((shape.n_embd,), True),
            t.FFN_GATE: ((shape.n_ff, shape.n_embd), False),
            t.FFN_UP: ((shape.n_ff, shape.n_embd), False),
            t.FFN_DOWN: ((shape.n_embd, shape.n_ff), False),
        }
        for kind, (dims, is_norm) in layer.items():
            yield _TensorSpec(names[kind].format(bid=bid) + ".weight", dims, is_norm)
    yield _TensorSpec(names[t.OUTPUT_NORM] + ".weight", (shape.n_embd,), True)
    if not shape.tie_embeddings:
        yield _TensorSpec(names[t.OUTPUT] + ".weight", (n_vocab, shape.n_embd), False)


def _resolve_type(tensor_type: str) -> gguf.GGMLQuantizationType:
    """The requested type, or F16 where this gguf version cannot quantize to it."""
    qtype = TENSOR_TYPES[tensor_type.lower()]
    try:
        gguf.quants.quantize(np.zeros((1, 32), dtype=np.float32), qtype)
    except (AttributeError, NotImplementedError):
        return gguf.GGMLQuantizationType.F16
    return qtype


def _nbytes(spec: _TensorSpec, qtype: gguf.GGMLQuantizationType) -> int:
    if spec.is_norm:
        return 4 * spec.shape[0]
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = spec.shape
    return rows * (cols // block_size) * type_size


def _weights(
    spec: _TensorSpec, qtype: gguf.GGMLQuantizationType, rng: np.random.Generator
) -> np.ndarray:
    if spec.is_norm:
        return np.ones(spec.shape, dtype=np.float32)
    # Integers then scale: several times faster than normal(), which matters at 7B.
    values = rng.integers(-127, 128, size=spec.shape, dtype=np.int8).astype(np.float32)
    values *= WEIGHT_STD / _INT8_UNIFORM_STD
    return gguf.quants.quantize(values, qtype)


@dataclass(frozen=True)
class _KeyValue:
    key: str
    value: object
    vtype: gguf.GGUFValueType
    sub_type: gguf.GGUFValueType | None


@functools.lru_cache(maxsize=4)
def _tokenizer_fields(vocab_gguf: Path, _mtime_ns: int) -> tuple[_KeyValue, ...]:
    """tokenizer.* keys of a vocab file; cached because parsing 32k strings takes seconds."""
    reader = gguf.GGUFReader(vocab_gguf)
    fields = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            fields.append(_KeyValue(key, field.contents(), vtype, sub_type))
    return tuple(fields)


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab_gguf: Path) -> int:
    """Copy every tokenizer.* key from the vocab file; returns the vocabulary size."""
    n_vocab = 0
    for kv in _tokenizer_fields(vocab_gguf.resolve(), vocab_gguf.stat().st_mtime_ns):
        writer.add_key_value(kv.key, kv.value, kv.vtype, kv.sub_type)
        if kv.key == gguf.Keys.Tokenizer.LIST:
            n_vocab = len(kv.value)  # type: ignore[arg-type]
    if n_vocab == 0:
        raise ValueError(f"{vocab_gguf} has no {gguf.Keys.Tokenizer.LIST} array")
    return n_vocab


# The byte-level vocabulary: llama.cpp's SPM tokenizer falls back to <0xXX> pieces for any byte.
_SPECIAL_TOKENS = (("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL),
                   ("</s>", gguf.TokenType.CONTROL))  # fmt: skip


def _add_byte_vocab(writer: gguf.GGUFWriter) -> int:
    """A 259-token SPM vocabulary (<unk>, <s>, </s> and one piece per byte); its size."""
    tokens = [t for t, _ in _SPECIAL_TOKENS] + [f"<0x{b:02X}>" for b in range(256)]
    types = [int(k) for _, k in _SPECIAL_TOKENS] + [int(gguf.TokenType.BYTE)] * 256
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    return len(tokens)


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
    qtype = _resolve_type(tensor_type)
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    if n_embd % block_size or n_ff % block_size:
        raise ValueError(f"{qtype.name} needs n_embd and n_ff divisible by {block_size}")
    path = Path(path)

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(name)
    writer.add_file_type(_FILE_TYPES[qtype])
    if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(shape.rope_freq_base)
    n_vocab = (
        _add_byte_vocab(writer) if vocab_gguf is None else _copy_tokenizer(writer, Path(vocab_gguf))
    )
    writer.add_vocab_size(n_vocab)

    specs = list(_tensor_specs(shape, n_vocab))
    for spec in specs:
        if spec.is_norm:
            writer.add_tensor_info(
                spec.name, spec.shape, np.dtype(np.float32), _nbytes(spec, qtype)
            )
        else:
            writer.add_tensor_info(
                spec.name, spec.shape, np.dtype(np.float32), _nbytes(spec, qtype), raw_dtype=qtype
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for index, spec in enumerate(specs):
        rng = np.random.default_rng([seed, index])
        writer.write_tensor_data(_weights(spec, qtype, rng))
    writer.close()
    return path


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
