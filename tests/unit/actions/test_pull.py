"""`llmhost pull` and `llmhost models` with the real huggingface_hub client against a Hub
endpoint the test serves (HF_ENDPOINT): GGUF files, model directories, revisions, gated repos,
resumed downloads, checksums, offline."""

from __future__ import annotations

import json
import random
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.cli.main import cli
from llmhost.devtools.synthetic_gguf import write_llama_gguf
from tests.hub_fake import FakeHub, Repo

pytest.importorskip("huggingface_hub")

# Larger than huggingface_hub's download chunk (10 MiB): a cut halfway leaves whole chunks on disk.
BIG = random.Random(0).randbytes(24 << 20)
TAG_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "hf_test_token_for_the_gated_repository"
HF_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 2, "hidden_size": 128,
    "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 384,
    "vocab_size": 259, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
}  # fmt: skip


@pytest.fixture
def gguf_bytes(tmp_path_factory) -> bytes:
    path = write_llama_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf", None, tensor_type="q4_0")
    return path.read_bytes()


@pytest.fixture
def hub(gguf_bytes):
    repos = {
        "acme/tiny-GGUF": Repo(
            {"tiny.Q4_0.gguf": gguf_bytes, "README.md": b"# tiny\n"},
            tags={"v1.0": TAG_COMMIT},
        ),
        "acme/tiny-hf": Repo(
            {
                "config.json": json.dumps(HF_CONFIG).encode(),
                "tokenizer.json": b"{}",
                "model.safetensors": b"\0" * 4096,
                "pytorch_model.bin": b"\1" * 4096,  # the pickled duplicate: left on the Hub
                "original/consolidated.00.pth": b"\2" * 4096,
            }
        ),
        "acme/gated-GGUF": Repo({"g.gguf": gguf_bytes}, gated_token=TOKEN),
        "acme/bad-mirror": Repo({"b.gguf": gguf_bytes}, wrong_sha={"b.gguf"}),
        "acme/flaky": Repo({"f.gguf": BIG}, cut_once={"f.gguf"}),
    }
    server = FakeHub(repos)
    yield server
    server.close()


@pytest.fixture
def env(tmp_path, hub, monkeypatch) -> dict[str, str]:
    models = tmp_path / "models"
    models.mkdir()
    config = tmp_path / "llmhost.yaml"
    config.write_text(f"models_dir: {models}\n")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return {"LLMHOST_CONFIG": str(config), "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1",
            "MODELS": str(models)}  # fmt: skip


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and text in lines[0], result.output
    assert "Traceback" not in result.output


def test_pull_a_gguf_pinned_to_a_tag_and_list_it(env, gguf_bytes, hub):
    done = run(env, "pull", "acme/tiny-GGUF", "tiny.Q4_0.gguf", "--revision", "v1.0", "-q")
    assert done.exit_code == 0, done.output
    assert "sha256 checked" in done.output and f"acme/tiny-GGUF@{TAG_COMMIT[:12]}" in done.output
    models = Path(env["MODELS"])
    assert (models / "tiny.Q4_0.gguf").read_bytes() == gguf_bytes
    record = json.loads((models / ".llmhost-pulled.json").read_text())["tiny.Q4_0.gguf"]
    assert record["commit"] == TAG_COMMIT and record["revision"] == "v1.0"
    # Every download asked for the resolved commit, never the moving name.
    assert all(TAG_COMMIT in path for _, path, _ in hub.requests if "/resolve/" in path)

    listed = json.loads(run(env, "models", "--json").output)
    (entry,) = listed
    assert (entry["name"], entry["kind"], entry["quantization"]) == (
        "tiny.Q4_0.gguf",
        "gguf",
        "Q4_0",
    )
    assert entry["ram_fits"] is True and entry["source"] == f"acme/tiny-GGUF@{TAG_COMMIT[:12]}"
    table = run(env, "models").output
    assert "tiny.Q4_0.gguf" in table and "Q4_0" in table and "acme/tiny-GGUF@" in table


def test_pull_a_model_directory_for_vllm(env, hub):
    done = run(env, "pull", "acme/tiny-hf", "-q")
    assert done.exit_code == 0, done.output
    root = Path(env["MODELS"]) / "tiny-hf"
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.safetensors", "tokenizer.json"]  # fmt: skip
    assert "vllm-gpu: {model: tiny-hf}" in done.output
    (entry,) = json.loads(run(env, "models", "--json").output)
    assert (entry["name"], entry["kind"], entry["quantization"]) == (
        "tiny-hf",
        "directory",
        "bfloat16",
    )
    assert entry["architecture"] == "LlamaForCausalLM" and entry["vram_need_bytes"] > 4096


def test_a_gated_model_needs_hf_token(env, gguf_bytes):
    one_line(run(env, "pull", "acme/gated-GGUF", "g.gguf", "-q"), 1, "is gated")
    done = run({**env, "HF_TOKEN": TOKEN}, "pull", "acme/gated-GGUF", "g.gguf", "-q")
    assert done.exit_code == 0, done.output
    assert (Path(env["MODELS"]) / "g.gguf").read_bytes() == gguf_bytes


def test_an_interrupted_download_resumes(env, hub):
    done = run(env, "pull", "acme/flaky", "f.gguf", "-q")
    assert done.exit_code == 0, done.output
    assert (Path(env["MODELS"]) / "f.gguf").read_bytes() == BIG
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("/f.gguf") and r]
    (asked,) = ranges  # one resumed request, for the rest only
    assert 0 < int(asked.removeprefix("bytes=").rstrip("-")) <= len(BIG) // 2


def test_a_file_that_does_not_match_the_hubs_sha256_is_removed(env):
    one_line(run(env, "pull", "acme/bad-mirror", "b.gguf", "-q"), 1, "is not the Hub's")
    assert not (Path(env["MODELS"]) / "b.gguf").exists()


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("acme/nope", "x.gguf"), 1, "no model repository acme/nope"),
        (
            ("acme/tiny-GGUF", "absent.gguf"),
            1,
            "has no file absent.gguf; GGUF files: tiny.Q4_0.gguf",
        ),
        (("acme/tiny-GGUF", "tiny.Q4_0.gguf", "--revision", "v9"), 1, "has no revision 'v9'"),
        (("acme/tiny-GGUF",), 1, "has no *.safetensors weights"),
        (("../etc", "x.gguf"), 2, "is not a Hub repository id"),
        (("acme/tiny-GGUF", "../../etc/passwd"), 2, "llmhost: FILE must be a file or directory"),
        (("acme/tiny-GGUF", "tiny.Q4_0.gguf", "--revision", "a/../b"), 2, "not a branch, tag"),
    ],
)
def test_bad_pulls_are_one_line(env, args, code, text):
    one_line(run(env, "pull", *args, "-q"), code, text)
    assert [p.name for p in Path(env["MODELS"]).iterdir() if not p.name.startswith(".")] == []


def test_offline_is_one_line_with_the_air_gapped_way(env):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = run({**env, "HF_ENDPOINT": closed}, "pull", "acme/tiny-GGUF", "tiny.Q4_0.gguf", "-q")
    one_line(result, 1, "cannot reach the Hub")
    assert "air-gapped" in result.output


def test_models_lists_copied_files_and_flags_unreadable_ones(env, gguf_bytes):
    models = Path(env["MODELS"])
    (models / "copied.gguf").write_bytes(gguf_bytes)  # the air-gapped way: a plain copy
    (models / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    listed = {e["name"]: e for e in json.loads(run(env, "models", "--json").output)}
    assert (
        listed["copied.gguf"]["quantization"] == "Q4_0" and listed["copied.gguf"]["source"] is None
    )
    assert listed["broken.gguf"]["error"] and "unreadable" in run(env, "models").output


@pytest.fixture
def small_disk(tmp_path):
    """models_dir on a 128 KiB tmpfs (root only: a real full disk, not a simulated one)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_too_small_is_refused_before_downloading(env, small_disk, hub):
    config = Path(env["LLMHOST_CONFIG"])
    config.write_text(f"models_dir: {small_disk}\n")
    result = run(env, "pull", "acme/tiny-GGUF", "tiny.Q4_0.gguf", "-q")
    one_line(result, 1, "GiB to download and")
    assert "free space there" in result.output
    assert [p for p in small_disk.iterdir() if not p.name.startswith(".")] == []
    assert not [r for r in hub.requests if "/resolve/" in r[1] and r[0] == "GET"]


def test_name_places_the_file_where_the_config_will_name_it(env, gguf_bytes):
    done = run(env, "pull", "acme/tiny-GGUF", "tiny.Q4_0.gguf", "--name", "llama/tiny.gguf", "-q")
    assert done.exit_code == 0, done.output
    models = Path(env["MODELS"])
    assert (models / "llama" / "tiny.gguf").read_bytes() == gguf_bytes
    assert not (models / "tiny.Q4_0.gguf").exists()
    assert "model: llama/tiny.gguf" in done.output
    (entry,) = json.loads(run(env, "models", "--json").output)
    assert entry["name"] == "llama/tiny.gguf" and entry["source"].startswith("acme/tiny-GGUF@")
