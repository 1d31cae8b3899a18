"""llmhost.facts.gguf_header against gguf.GGUFReader (same metadata, tensors and model header), and
against truncated and crafted files (one clear error, fast, no big allocation)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from llmhost.devtools.gguf_reference import reference_model_header
from llmhost.devtools.synthetic_gguf import write_llama_gguf
from llmhost.errors import LlmhostError
from llmhost.facts import gguf_header, model_cache
from llmhost.facts.gguf_header import GgufArray, read_gguf_header
from llmhost.facts.models import ModelHeader, read_model_header
from tests.e2e import infra
from tests.unit.plan.test_plan import write_gguf


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Model facts cached on disk go to this test's own folder, not ~/.cache."""
    monkeypatch.setenv("LLMHOST_CACHE", str(tmp_path / "cache"))
    gguf_header._read_cached.cache_clear()
    return tmp_path / "cache" / "model-facts"


REAL_CACHE = infra.cache_dir()  # before private_cache points LLMHOST_CACHE elsewhere
SPM_VOCAB = "llama-src/*/llama.cpp/models/ggml-vocab-llama-spm.gguf"


def shipped_spm_vocab(monkeypatch: pytest.MonkeyPatch) -> Path:
    """llama.cpp's own 32k-token vocab GGUF: from the e2e cache, fetched there in CI
    (LLMHOST_E2E=1) if an earlier test has not, else the test is skipped."""
    found = sorted(REAL_CACHE.glob(SPM_VOCAB))
    if not found and os.environ.get("LLMHOST_E2E") == "1":
        monkeypatch.setenv("LLMHOST_CACHE", str(REAL_CACHE))
        infra.ensure_llama_source()
        found = sorted(REAL_CACHE.glob(SPM_VOCAB))
    if not found:
        pytest.skip("no llama.cpp vocab GGUF in the cache (LLMHOST_E2E=1 fetches it)")
    return found[0]


def assert_same_as_gguf_reader(path: Path) -> None:
    reader = gguf.GGUFReader(path, "r")
    header = read_gguf_header(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert list(header.metadata) == list(fields)
    for key, field in fields.items():
        value = header.metadata[key]
        if isinstance(value, GgufArray):
            assert (value.item_type, value.count) == (field.types[-1], len(field.data)), key
            if value.values is not None:
                assert list(value.values) == field.contents(), key
        else:
            assert value == field.contents(), key
    assert header.data_offset == reader.data_offset
    assert header.alignment == reader.alignment
    assert [(t.name, t.ggml_type, list(t.dims), t.n_bytes) for t in header.tensors] == [
        (t.name, int(t.tensor_type), t.shape.tolist(), t.n_bytes) for t in reader.tensors
    ]
    assert [header.data_offset + t.offset for t in header.tensors] == [
        t.data_offset for t in reader.tensors
    ]
    assert read_model_header(path) == reference_model_header(path, reader)


def synthetic_files(tmp: Path) -> list[Path]:
    return [
        write_gguf(tmp / "plan.gguf"),
        write_llama_gguf(tmp / "q8.gguf", None),
        write_llama_gguf(tmp / "q4.gguf", None, tensor_type="q4_0", tie_embeddings=True),
        write_llama_gguf(tmp / "f16.gguf", None, tensor_type="f16", n_layer=3),
    ]


def test_synthetic_files_match_gguf_reader(tmp_path: Path) -> None:
    for path in synthetic_files(tmp_path):
        assert_same_as_gguf_reader(path)


def test_shipped_vocab_matches_gguf_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = shipped_spm_vocab(monkeypatch)
    assert_same_as_gguf_reader(vocab)  # GGUFReader takes seconds on 32k tokens
    assert read_model_header(vocab).n_vocab == 32000


def test_doctor_path_imports_neither_gguf_nor_numpy(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    code = (
        "import sys; import llmhost.plan.planner; "
        "from llmhost.facts.models import read_model_header; "
        f"read_model_header({str(path)!r}); "
        "print(sorted({'gguf', 'numpy'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- crafted files


def _str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def u32_kv(key: str, value: int) -> bytes:
    return kv(key, 4, struct.pack("<I", value))


def tensor(name: str, dims: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (
        _str(name)
        + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        + struct.pack("<IQ", ggml_type, offset)
    )


def gguf_bytes(
    kvs: list[bytes] = (),  # type: ignore[assignment]
    tensors: list[bytes] = (),  # type: ignore[assignment]
    *,
    n_kv: int | None = None,
    n_tensors: int | None = None,
    version: bytes = struct.pack("<I", 3),
    data: bytes = b"",
) -> bytes:
    head = b"GGUF" + version
    head += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors,
                        len(kvs) if n_kv is None else n_kv)  # fmt: skip
    head += b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % 32) + data


ARCH = kv("general.architecture", 8, _str("llama"))


def test_crafted_valid_file_matches_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    path.write_bytes(
        gguf_bytes(
            [
                ARCH,
                u32_kv("llama.block_count", 2),
                kv("llama.feed_forward_length", 9, struct.pack("<IQ2I", 4, 2, 256, 512)),
                kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 3) + _str("a") * 3),
                kv("general.flag", 7, b"\x01"),
                kv("general.rope", 6, struct.pack("<f", 0.1)),
            ],
            [tensor("token_embd.weight", (64, 3), 8), tensor("x", (4,), 0, 224)],
            data=b"\0" * (224 + 16),
        )
    )
    assert_same_as_gguf_reader(path)
    header = read_model_header(path)
    assert (header.n_ff, header.n_vocab, header.embedding_bytes) == (512, 3, 3 * 2 * 34)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGU", "not a GGUF file"),
        (b"PK\x03\x04" + b"\0" * 40, "not a GGUF file"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "version 1; versions 2 and 3"),
        (b"GGUF" + struct.pack("<IQQ", 4, 0, 0), "version 4"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (gguf_bytes(n_kv=2**64 - 1), "metadata key count .* is 18446744073709551615 \\(limit"),
        (gguf_bytes(n_tensors=2**40), "tensor count .* \\(limit"),
        (gguf_bytes(n_kv=60000), "more than the file holds"),
        (
            b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("a-long-key")[:14],
            "key at byte 24 runs past",
        ),
        (gguf_bytes([struct.pack("<Q", 2**63) + b"k"]), "metadata key .* claims"),
        (gguf_bytes([kv("k", 8, struct.pack("<Q", 2**40))]), "k: string .* claims"),
        (gguf_bytes([kv("k", 9, struct.pack("<IQ", 8, 2**60))]), "k: array length .* \\(limit"),
        (gguf_bytes([kv("k", 9, struct.pack("<IQ", 8, 10**6))]), "more than the file holds"),
        (gguf_bytes([kv("k", 9, struct.pack("<IQ", 4, 10**6))]), "more than the file holds"),
        (
            gguf_bytes([kv("k", 9, struct.pack("<IQQ", 8, 2, 2**62) + b"\0" * 64)]),
            "k: string array .* runs past the end",
        ),
        (gguf_bytes([kv("k", 9, struct.pack("<IQ", 9, 1) + b"\0" * 32)]), "element type 9"),
        (gguf_bytes([kv("k", 99, b"\0" * 8)]), "unknown value type 99"),
        (gguf_bytes([ARCH, ARCH]), "repeats metadata key general.architecture"),
        (gguf_bytes([u32_kv("general.alignment", 3)]), "alignment 3 is not a power of two"),
        (gguf_bytes([kv("general.alignment", 10, b"\0" * 8)]), "alignment is not a uint32"),
        (gguf_bytes([], [tensor("t", (1,) * 1000)]), "1000 dimensions"),
        (gguf_bytes([], [tensor("t", (1,) * 5)]), "5 dimensions"),
        (gguf_bytes([], [tensor("t", (2**64 - 1,))]), "impossible dimensions"),
        (gguf_bytes([], [tensor("t", (33,), 8)], data=b"\0" * 64), "impossible dimensions"),
        (gguf_bytes([], [tensor("t", (4,), 99)]), "unknown ggml type 99"),
        (gguf_bytes([], [tensor("t", (4,))], data=b"\0" * 15), "t's data runs past the end"),
        (gguf_bytes([], [tensor("t", (4,), 0, 2**63)], data=b"\0" * 16), "runs past the end"),
        (gguf_bytes([], [tensor("t", (1,)), tensor("t", (1,))], data=b"\0" * 8), "repeats"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{len(v)}B",
)
def test_crafted_files_are_one_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "crafted.gguf"
    path.write_bytes(data)
    with pytest.raises(LlmhostError, match=f"model {path} .*{message}"):
        read_model_header(path)


def test_every_truncation_is_one_clear_error(tmp_path: Path) -> None:
    path = write_llama_gguf(tmp_path / "m.gguf", None, n_layer=1)
    data = path.read_bytes()
    header = read_gguf_header(path)
    data_end = header.data_offset + max(t.offset + t.n_bytes for t in header.tensors)
    cut = tmp_path / "cut.gguf"
    cuts = [*range(0, header.data_offset, max(1, header.data_offset // 400)), data_end - 1]
    for size in cuts:
        cut.write_bytes(data[:size])
        with pytest.raises(LlmhostError, match=r"not a GGUF file|unreadable GGUF header"):
            read_gguf_header(cut)


def test_headers_are_cached_per_file_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses: list[int] = []
    real_parse = gguf_header._parse
    monkeypatch.setattr(gguf_header, "_parse", lambda buf: parses.append(1) or real_parse(buf))
    path = write_gguf(tmp_path / "m.gguf")
    link = tmp_path / "link.gguf"
    link.symlink_to(path)

    first = read_gguf_header(path)
    assert read_gguf_header(link) is first  # same resolved file, size and mtime
    assert read_model_header(path).n_layer == 4 and len(parses) == 1

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert read_gguf_header(path) == first and len(parses) == 2

    write_gguf(path, n_layer=2)  # rewritten: new size and mtime
    assert read_model_header(path).n_layer == 2 and len(parses) == 3


def test_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LlmhostError, match="unreadable"):
        read_gguf_header(tmp_path / "missing.gguf")
    with pytest.raises(LlmhostError, match="unreadable"):
        read_gguf_header(tmp_path)


def test_per_layer_head_counts_are_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "per-layer.gguf"
    heads = kv("llama.attention.head_count_kv", 9, struct.pack("<IQ2I", 4, 2, 8, 0))
    path.write_bytes(gguf_bytes([ARCH, heads]))
    with pytest.raises(LlmhostError, match="head_count_kv holds per-layer values"):
        read_model_header(path)


def _no_parse(buf: object) -> None:
    raise AssertionError("parsed although cached")


def test_model_facts_are_cached_on_disk(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    first = read_model_header(path)
    assert len(list(private_cache.glob("*.json"))) == 1

    gguf_header._read_cached.cache_clear()  # a new process: only the disk cache is left
    monkeypatch.setattr(gguf_header, "_parse", _no_parse)
    assert read_model_header(path) == first
    link = tmp_path / "link.gguf"
    link.symlink_to(path)
    assert read_model_header(link) == ModelHeader(**{**first.__dict__, "path": str(link)})

    monkeypatch.undo()
    monkeypatch.setenv("LLMHOST_CACHE", str(private_cache.parent))
    write_gguf(path, n_layer=2)
    assert read_model_header(path).n_layer == 2  # rewritten: a miss
    assert len(list(private_cache.glob("*.json"))) == 1  # same inode: its entry replaced

    mtime_ns = path.stat().st_mtime_ns
    write_gguf(path, n_layer=2, n_head=4, n_head_kv=2)  # same size, and the mtime set back:
    os.utime(path, ns=(mtime_ns, mtime_ns))  # the ctime still tells
    assert read_model_header(path).n_head == 4


def test_a_bad_or_unwritable_disk_cache_is_a_miss(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    expected = read_model_header(path)
    (entry,) = private_cache.glob("*.json")
    for junk in (
        "not json",
        "[]",
        '{"identity": 1}',
        entry.read_text().replace('"n_layer"', '"x"'),
    ):
        entry.write_text(junk)
        gguf_header._read_cached.cache_clear()
        assert read_model_header(path) == expected
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LLMHOST_CACHE", str(tmp_path / "file"))  # mkdir fails
    assert read_model_header(path) == expected


def test_disk_cache_keeps_the_newest_entries(
    tmp_path: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_cache, "MAX_ENTRIES", 2)
    for n in range(4):
        read_model_header(write_gguf(tmp_path / f"m{n}.gguf", n_layer=n + 1))
    assert len(list(private_cache.glob("*.json"))) == 2


@pytest.mark.parametrize(
    ("vtype", "payload"), [(8, _str("four")), (6, struct.pack("<f", float("nan")))]
)
def test_a_key_that_is_not_a_number_is_refused_clearly(
    tmp_path: Path, vtype: int, payload: bytes
) -> None:
    path = tmp_path / "odd.gguf"
    path.write_bytes(gguf_bytes([ARCH, kv("llama.block_count", vtype, payload)]))
    with pytest.raises(LlmhostError, match=r"block_count is .* not a number"):
        read_model_header(path)
