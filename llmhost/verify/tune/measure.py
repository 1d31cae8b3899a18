"""Running llama-bench for `llmhost tune`: natively (a llama-bench binary) or inside the
llama-cpu image the plan deploys (as its unprivileged user, no network, the model read-only),
while the host's free 2 MiB pages are sampled (a hugetlb setup must really draw from the pool).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from llmhost.errors import LlmhostError
from llmhost.facts.memory import parse_meminfo
from llmhost.facts.sources import LiveSource, Source

CONTAINER_MODELS = "/models"
IMAGE_BENCH = "/app/llama-bench"
SAMPLE_S = 0.02


class SetupRefused(LlmhostError):
    """This host cannot run a setup as asked (a limit the engine may not raise); it is skipped."""


@dataclass(frozen=True)
class BenchRun:
    rows: list[dict]  # llama-bench's JSON rows
    log: str  # its standard error: warnings such as a failed mlock


class Bench(Protocol):
    """Runs llama-bench on `model` (a host path) with `args` and `env`; `memlock` lifts the
    locked-memory limit for --load-mode mlock."""

    def __call__(
        self, model: Path, args: Sequence[str], env: Mapping[str, str], memlock: bool
    ) -> BenchRun: ...


def _finished(what: str, code: int, stdout: str, log: str) -> BenchRun:
    """llama-bench's exit: its JSON rows and log, or one line saying why there are none."""
    if code != 0:
        tail = log.strip().splitlines()[-3:]
        raise LlmhostError(f"{what} exited {code}: {' | '.join(tail)}")
    try:
        rows = json.loads(stdout)
    except ValueError:
        raise LlmhostError(f"{what} printed no JSON: {stdout[-300:]!r}") from None
    if not isinstance(rows, list) or not rows:
        raise LlmhostError(f"{what} printed no results")
    return BenchRun(rows, log)


@dataclass(frozen=True)
class NativeBench:
    """A llama-bench binary on this host."""

    path: Path

    def __call__(
        self, model: Path, args: Sequence[str], env: Mapping[str, str], memlock: bool
    ) -> BenchRun:
        """The process's own locked-memory limit applies; a failed mlock shows in the log."""
        cmd = [str(self.path), "-m", str(model), *args, "-o", "json"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  env={**os.environ, **env})  # fmt: skip
        except OSError as exc:
            raise LlmhostError(f"cannot run {self.path}: {exc.strerror or exc}") from None
        return _finished(" ".join(cmd), proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class ImageBench:
    """llama-bench in an image, run the way the plan's llama-cpu container runs."""

    image: str

    def __call__(
        self, model: Path, args: Sequence[str], env: Mapping[str, str], memlock: bool
    ) -> BenchRun:
        import docker
        from docker.errors import APIError, DockerException, ImageNotFound
        from docker.types import Ulimit

        inside = f"{CONTAINER_MODELS}/{model.name}"
        limits = [Ulimit(name="memlock", soft=-1, hard=-1)] if memlock else []
        try:
            box = docker.from_env().containers.create(
                self.image,
                ["-m", inside, *args, "-o", "json"],
                entrypoint=IMAGE_BENCH,
                environment=dict(env),
                volumes={str(model.parent.resolve()): {"bind": CONTAINER_MODELS, "mode": "ro"}},
                network_mode="none",
                user="10001:10001",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                ulimits=limits,
            )
        except ImageNotFound:
            raise LlmhostError(
                f"image {self.image} is not on this host", fix="llmhost build --profile cpu"
            ) from None
        except DockerException as exc:
            raise LlmhostError(f"cannot run {self.image}: {exc}") from None
        try:
            box.start()
        except APIError as exc:
            box.remove(force=True)
            reason = str(exc.explanation or exc).rsplit("container init: ", 1)[-1]
            if memlock and "rlimit" in reason:
                raise SetupRefused(
                    f"the engine may not lift the memlock limit ({reason})"
                ) from None
            raise LlmhostError(f"cannot start {self.image}: {reason}") from None
        try:
            code = box.wait().get("StatusCode", 1)
            out = box.logs(stdout=True, stderr=False).decode(errors="replace")
            log = box.logs(stdout=False, stderr=True).decode(errors="replace")
        finally:
            box.remove(force=True)
        return _finished(f"llama-bench in {self.image}", code, out, log)


def free_pages(source: Source, size_kb: int) -> int:
    """Free pages of the default hugepage size (`size_kb`), from /proc/meminfo."""
    info = parse_meminfo(source.read_text("/proc/meminfo") or "")
    if info.get("Hugepagesize") != size_kb:
        return 0
    return info.get("HugePages_Free", 0)


def lowest_free_pages(
    run: Callable[[], BenchRun], size_kb: int, source: Source | None = None
) -> tuple[BenchRun, int, int]:
    """`run`'s result, the free hugepages before it, and the fewest seen while it ran."""
    source = source or LiveSource()
    before = free_pages(source, size_kb)
    lowest = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_S):
            lowest[0] = min(lowest[0], free_pages(source, size_kb))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = run()
    finally:
        done.set()
        sampler.join()
    return result, before, lowest[0]
