"""Progress on long work: a base image's pull condensed from the engine's events, a download in
tenths, the build log streamed, and `-q` silencing all of it but results and errors."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.actions import build as build_lib
from llmhost.actions.build import BuiltImage, LlamaSource, _stream, fetch_release
from llmhost.cli.main import cli
from llmhost.errors import LlmhostError
from llmhost.progress import ByteProgress, PullProgress
from tests.support import ZEN4_SNAPSHOT

MB = 2**20


def pull_events(layers: dict[str, int], chunk: int = MB) -> list[dict]:
    """What the engine streams for `FROM image` when the image is not there, in its order."""
    events: list[dict] = [{"status": "Pulling from library/debian", "id": "12"}]
    events += [{"status": "Pulling fs layer", "id": lid} for lid in layers]
    events += [{"status": "Waiting", "id": lid} for lid in layers]
    for lid, size in layers.items():
        for done in range(chunk, size + chunk, chunk):
            detail = {"current": min(done, size), "total": size}
            events.append({"status": "Downloading", "id": lid, "progressDetail": detail})
        events += [{"status": "Verifying Checksum", "id": lid},
                   {"status": "Download complete", "id": lid}]  # fmt: skip
    for lid, size in layers.items():
        events += [{"status": "Extracting", "id": lid,
                    "progressDetail": {"current": size // 2, "total": size}},
                   {"status": "Pull complete", "id": lid}]  # fmt: skip
    events += [{"status": "Digest: sha256:" + "a" * 64},
               {"status": "Status: Downloaded newer image for debian:12"}]  # fmt: skip
    return events


def test_a_pull_is_a_few_lines_not_one_per_chunk() -> None:
    events = pull_events({"a1": 30 * MB, "b2": 12 * MB, "c3": 2 * MB})
    lines: list[str] = []
    pull = PullProgress(lines.append)
    for event in events:
        pull.feed(event)
    # Two lines a layer, at most a tenth's line for each size learnt, the digest and status.
    assert len(events) > 50 and len(lines) <= 2 * 3 + 3 * 10 + 2, lines
    assert sum(line.startswith("pulling:") for line in lines) >= 10
    assert "layer a1: download complete" in "\n".join(lines)
    assert any(line.startswith("layer c3: pull complete") for line in lines)
    assert lines[-1] == "Status: Downloaded newer image for debian:12"
    shares = [float(m[1]) for line in lines if (m := re.search(r"([\d.]+) MiB of 44.0 MiB", line))]
    assert shares == sorted(shares)  # the known bytes only grow


def test_a_download_reports_each_tenth_once() -> None:
    lines: list[str] = []
    counter = ByteProgress("llama.cpp b1", 100 * MB, lines.append)
    for _ in range(400):
        counter.add(MB // 4)
    assert len(lines) == 10 and lines[-1] == "llama.cpp b1: 100.0 MiB of 100.0 MiB (100 %)"
    unknown: list[str] = []
    ByteProgress("x", 0, unknown.append).add(5)
    assert unknown == []


def test_the_build_log_streams_with_the_pull_condensed() -> None:
    events = [
        {"stream": "Step 1/9 : FROM debian:12\n"},
        *pull_events({"a1": 8 * MB}),
        {"stream": " ---> 1234\n"},
        {"stream": "Step 2/9 : RUN apt-get update\n\n"},
        {"aux": {"ID": "sha256:feed"}},
    ]
    lines: list[str] = []
    assert _stream(iter(events), lines.append) == "sha256:feed"
    assert lines[0] == "Step 1/9 : FROM debian:12" and "Step 2/9 : RUN apt-get update" in lines
    assert len(lines) < 20 and "" not in lines
    with pytest.raises(LlmhostError, match="image build failed: no space left"):
        _stream(iter([{"stream": "Step 1/9\n"}, {"error": "no space left\n"}]), lines.append)


class _Response(io.BytesIO):
    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.headers = {"Content-Length": str(len(body))}


def test_the_llama_cpp_download_reports_progress(tmp_path: Path, monkeypatch) -> None:
    import tarfile

    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        data = b"cmake_minimum_required(VERSION 3.14)\n" + b"#" * (3 * MB)
        info = tarfile.TarInfo("llama.cpp-b1/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    body = tarball.getvalue()
    monkeypatch.setenv("LLMHOST_CACHE", str(tmp_path))
    monkeypatch.setattr(build_lib.urllib.request, "urlopen", lambda *a, **k: _Response(body))
    lines: list[str] = []
    source = fetch_release("b1", lines.append)
    assert (source.tree / "CMakeLists.txt").is_file() and lines[0].startswith("downloading")
    assert lines[-1].endswith("(100 %)") and 2 <= len(lines) <= 11


@pytest.mark.parametrize("quiet", [False, True])
def test_build_q_keeps_results_and_drops_progress(monkeypatch, tmp_path: Path, quiet) -> None:
    def fake_build(plan, config, *, progress, **_kw):
        progress("Step 1/9 : FROM debian:12")
        return [BuiltImage("llama-cpu", "llmhost/llama-cpu:latest", "sha256:" + "b" * 64, 12.0,
                           {})]  # fmt: skip

    monkeypatch.setattr(build_lib, "build_images", fake_build)
    monkeypatch.setattr(build_lib, "local_source", lambda p: LlamaSource(Path(p), "b1", None))
    (tmp_path / "llmhost.yaml").write_text("profile: cpu\n")
    args = ["--config", str(tmp_path / "llmhost.yaml"), "build", "--from", str(ZEN4_SNAPSHOT),
            "--llama-source", str(tmp_path), "--no-buildkit"]  # fmt: skip
    args += ["-q"] if quiet else []
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "llmhost/llama-cpu:latest: sha256:bbbbbbbbbbbb" in result.output
    assert ("Step 1/9" in result.output) is not quiet
