"""Which docker CLI builds with BuildKit (buildx, or a CLI before 23.0 with DOCKER_BUILDKIT=1),
and how its build is run: the context on stdin, the plain log streamed, a failure with its tail.
The CLIs here are scripts that answer as those versions do."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from llmhost.actions.build import BuildKit, build_with_buildkit, find_buildkit
from llmhost.errors import LlmhostError


def fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ] && [ "$2" = version ]; then {"echo v0.20" if buildx else "exit 1"}; '
        "exit $?; fi\n"
        f'if [ "$1" = version ]; then echo {version}; exit 0; fi\n'
        # a build: the context's size, what BuildKit's env says, the tag, then a failure on ask
        'if [ "$1" = build ] || [ "$2" = build ]; then\n'
        '  echo "#1 [internal] load build definition"\n'
        '  echo "#1 context $(/usr/bin/wc -c | /usr/bin/tr -d " ") bytes"\n'
        '  echo "#2 DOCKER_BUILDKIT=$DOCKER_BUILDKIT args $*"\n'
        '  [ -n "$FAIL" ] && { echo "#3 ERROR: process did not complete"; exit 17; }; exit 0\n'
        "fi\nexit 2\n"
    )
    script.chmod(0o755)
    return script


def test_a_cli_with_buildx_builds_with_buildx(tmp_path, monkeypatch) -> None:
    docker = fake_docker(tmp_path / "a", "28.2.2", buildx=True)
    monkeypatch.setenv("PATH", str(tmp_path / "a"))
    assert find_buildkit() == BuildKit((str(docker), "buildx", "build", "--load"))


def test_a_new_cli_without_buildx_gives_way_to_an_older_one(tmp_path, monkeypatch) -> None:
    """This workplace's case: /usr/local/bin/docker 28 (no buildx) before Debian's 20.10."""
    fake_docker(tmp_path / "local", "28.2.2", buildx=False)
    old = fake_docker(tmp_path / "usr", "20.10.24+dfsg1", buildx=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'local'}:{tmp_path / 'usr'}")
    assert find_buildkit() == BuildKit((str(old), "build"), (("DOCKER_BUILDKIT", "1"),))


def test_no_cli_that_can_is_the_classic_builder(tmp_path, monkeypatch) -> None:
    fake_docker(tmp_path / "local", "28.2.2", buildx=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'local'}:{tmp_path / 'empty'}")
    assert find_buildkit() is None


def test_the_build_streams_and_a_failure_keeps_its_tail(tmp_path, monkeypatch) -> None:
    fake_docker(tmp_path / "usr", "20.10.24", buildx=False)
    monkeypatch.setenv("PATH", str(tmp_path / "usr"))
    kit = find_buildkit()
    assert kit is not None
    lines: list[str] = []
    with tempfile.TemporaryFile() as context:  # what build_context gives: a real file
        context.write(b"x" * 1234)
        context.seek(0)
        build_with_buildkit(kit, context, "llmhost/llama-cpu:candidate", lines.append)
    assert lines[1] == "#1 context 1234 bytes"
    assert (
        "DOCKER_BUILDKIT=1 args build --progress=plain --tag llmhost/llama-cpu:candidate -"
        in (lines[2])
    )
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(LlmhostError, match="exited 17") as err, tempfile.TemporaryFile() as empty:
        build_with_buildkit(kit, empty, "t", lines.append)
    assert "#3 ERROR: process did not complete" in str(err.value)
