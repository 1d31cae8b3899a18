"""The synthetic GGUF must be a loadable llama model: right keys, shapes, types and vocabulary.
Loading and generating in llama-server is covered by the docker e2e test."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from llmhost.devtools import synthetic_gguf
from llmhost.devtools.synthetic_gguf import PRESETS, LlamaShape, write_llama_gguf
from tests.e2e import infra


@pytest.fixture(scope="session")
def spm_vocab() -> Path:
    return infra.ensure_llama_source() / "models" / "ggml-vocab-llama-spm.gguf"


def _fields(reader: gguf.GGUFReader) -> dict[str, object]:
    return {key: field.contents() for key, field in reader.fields.items()}


@pytest.mark.parametrize(
    ("tensor_type", "ggml_type"),
    [
        ("q8_0", gguf.GGMLQuantizationType.Q8_0),
        ("q4_0", gguf.GGMLQuantizationType.Q4_0),
        ("f16", gguf.GGMLQuantizationType.F16),
        ("f32", gguf.GGMLQuantizationType.F32),
    ],
)
def test_tiny_model_reads_back(
    tmp_path: Path, spm_vocab: Path, tensor_type: str, ggml_type: gguf.GGMLQuantizationType
) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", spm_vocab, tensor_type=tensor_type)
    reader = gguf.GGUFReader(path)
    fields = _fields(reader)
    tiny = PRESETS["tiny"]

    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == tiny.n_layer
    assert fields["llama.embedding_length"] == tiny.n_embd
    assert fields["llama.feed_forward_length"] == tiny.n_ff
    assert fields["llama.attention.head_count"] == tiny.n_head
    assert fields["llama.attention.head_count_kv"] == tiny.n_head_kv
    assert fields["llama.context_length"] == tiny.n_ctx_train
    assert fields["llama.rope.dimension_count"] == tiny.n_embd // tiny.n_head

    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 9 * tiny.n_layer + 1  # embd, output norm/head, 9 per block
    # GGUF shapes are ggml order: (columns, rows).
    assert tensors["token_embd.weight"].shape.tolist() == [tiny.n_embd, 32000]
    assert tensors["blk.1.attn_k.weight"].shape.tolist() == [
        tiny.n_embd,
        tiny.n_head_kv * tiny.n_embd // tiny.n_head,
    ]
    assert tensors["blk.0.ffn_down.weight"].shape.tolist() == [tiny.n_ff, tiny.n_embd]
    assert tensors["blk.0.ffn_gate.weight"].tensor_type == ggml_type
    assert tensors["output.weight"].tensor_type == ggml_type
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_vocabulary_is_copied_verbatim(tmp_path: Path, spm_vocab: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", spm_vocab)
    source = {k: v for k, v in _fields(gguf.GGUFReader(spm_vocab)).items() if "tokenizer." in k}
    written = _fields(gguf.GGUFReader(path))

    assert source, "vocab file has no tokenizer keys"
    for key, value in source.items():
        assert written[key] == value, key
    assert written["llama.vocab_size"] == 32000
    assert written["tokenizer.ggml.tokens"][:3] == ["<unk>", "<s>", "</s>"]


def test_weights_are_finite_and_small(tmp_path: Path, spm_vocab: Path) -> None:
    path = write_llama_gguf(tmp_path / "tiny.gguf", spm_vocab, tensor_type="f32")
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    weights = np.asarray(tensors["blk.0.attn_q.weight"].data)
    assert np.isfinite(weights).all()
    assert 0.01 < weights.std() < 0.03
    assert np.asarray(tensors["blk.0.attn_norm.weight"].data).tolist() == [1.0] * 128


def test_same_seed_same_bytes(tmp_path: Path, spm_vocab: Path) -> None:
    a = write_llama_gguf(tmp_path / "a.gguf", spm_vocab, seed=7)
    b = write_llama_gguf(tmp_path / "b.gguf", spm_vocab, seed=7)
    c = write_llama_gguf(tmp_path / "c.gguf", spm_vocab, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_tied_embeddings_drop_the_output_head(tmp_path: Path, spm_vocab: Path) -> None:
    path = write_llama_gguf(
        tmp_path / "tied.gguf", spm_vocab, n_layer=1, n_head_kv=4, tie_embeddings=True
    )
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in names
    assert "token_embd.weight" in names


def test_cli_applies_preset_overrides(tmp_path: Path, spm_vocab: Path) -> None:
    out = tmp_path / "cli.gguf"
    rc = synthetic_gguf.main(
        ["--vocab", str(spm_vocab), "--out", str(out), "--type", "q4_0", "--n-layer", "3"]
    )
    fields = _fields(gguf.GGUFReader(out))
    assert rc == 0
    assert fields["llama.block_count"] == 3
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_0


def test_presets_have_the_published_shapes() -> None:
    assert PRESETS["7b"] == LlamaShape(32, 4096, 32, 32, 11008, 4096)
    one_b = PRESETS["1b"]
    assert (one_b.n_layer, one_b.n_embd, one_b.n_head_kv, one_b.n_ff) == (16, 2048, 8, 8192)
    assert one_b.tie_embeddings


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_embd": 100, "n_head": 4},  # rows not a multiple of the 32-wide quant block
        {"n_head": 3},  # 128 does not split into 3 heads
        {"n_head_kv": 3},  # 4 heads do not share 3 KV heads
        {"n_layer": 0},
    ],
)
def test_bad_shapes_are_refused(tmp_path: Path, spm_vocab: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        write_llama_gguf(tmp_path / "bad.gguf", spm_vocab, **kwargs)
