"""BuildKit's ccache between builds, for real: `llmhost build` of the CPU image again with
another job count (the compile step's command changes, so BuildKit runs it again on the same
sources and flags) compiles every translation unit from ccache, as its own statistics say.

Needs a Docker engine and a docker CLI that builds with BuildKit; with LLMHOST_E2E=1 (CI) a
missing one fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from llmhost.actions.build import find_buildkit
from tests.e2e import infra

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
HITS = re.compile(r"\bHits:\s+(\d+)\s*/\s*(\d+)")
COMPILE_STEP = re.compile(r"^#(\d+) \[builder \d+/\d+\] RUN .*ccache --zero-stats", re.M)
CACHEABLE = re.compile(r"Cacheable calls:\s+(\d+)\s*/\s*(\d+)")


def _llmhost(*args: str) -> tuple[str, str, float]:
    """llmhost with the configuration infra.ensure_llama_cpu_image builds with: (stdout,
    stderr, seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "llmhost.yaml"
        config.write_text("inference_cores: 1\n")
        cmd = [sys.executable, "-m", "llmhost.cli.main", "--config", str(config), *args]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout, proc.stderr, time.monotonic() - start


def test_a_rebuild_compiles_from_ccache() -> None:
    if find_buildkit() is None:
        message = "no docker CLI here builds with BuildKit (buildx, or a CLI before 23.0)"
        if os.environ.get("LLMHOST_E2E") == "1":
            pytest.fail(message)
        pytest.skip(message)
    infra.ensure_llama_cpu_image()  # built with BuildKit: its compiles are in the ccache
    planned = json.loads(_llmhost("plan", "--profile", "cpu", "--json")[0])["build"]["compile_jobs"]
    # A job count no earlier build used, so BuildKit runs the compile step (not its layer cache).
    for jobs in range(planned + 1, planned + 9):
        out, err, seconds = _llmhost("build", "--profile", "cpu", "--llama-source",
                                     str(infra.ensure_llama_source()), "--base-image",
                                     infra.ensure_base_image(), "--jobs", str(jobs))  # fmt: skip
        log = out + err
        assert "with BuildKit" in log and f"-j {jobs}" in log
        if HITS.search(log):
            break
        step = COMPILE_STEP.search(log)
        assert step and f"#{step.group(1)} CACHED" in log, f"no ccache counts:\n{log[-3000:]}"
    else:
        pytest.fail(f"every job count from {planned + 1} to {jobs} was in BuildKit's layer cache")
    assert "[output clipped" not in log, log[-3000:]  # BuildKit's log limits, see _dockerfile.j2
    hits, calls = (int(n) for n in HITS.findall(log)[-1])
    cacheable = int(CACHEABLE.findall(log)[-1][0])
    print(f"\nrebuild with -j {jobs}: {seconds:.0f} s, ccache hits {hits} of {calls}")
    assert calls > 50 and cacheable == calls  # every compile went through ccache
    assert hits == calls  # same sources and flags: nothing recompiled
