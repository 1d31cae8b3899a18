"""Idempotent preparation of the things end-to-end tests need: a Docker engine, a local base
image, the llama.cpp source tree and a tiny model. No registry is reachable from CI, so every
artefact is made locally once and cached under $LLMHOST_CACHE (default ~/.cache/llmhost).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES_DIR = REPO_ROOT / "templates"
DEFAULT_BASE_IMAGE = "llmhost/debian:bookworm"
DEFAULT_LLAMA_PY_VERSION = "0.3.36"
DEBIAN_MIRROR = "http://deb.debian.org/debian"

# What Debian's official images configure: no package caches or translations left in layers.
APT_DOCKER_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
"""


class InfraError(RuntimeError):
    """A prerequisite could not be prepared; the message says what to do."""


def cache_dir() -> Path:
    path = Path(os.environ.get("LLMHOST_CACHE", "~/.cache/llmhost")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """subprocess.run that fails with the command's last output lines instead of a bare code."""
    try:
        return subprocess.run(cmd, check=True, text=True, **kwargs)
    except subprocess.CalledProcessError as err:
        output = "\n".join(
            (part or "").strip() for part in (err.stdout, err.stderr) if part
        ).splitlines()[-20:]
        raise InfraError(
            f"{' '.join(cmd[:3])} failed ({err.returncode}):\n" + "\n".join(output)
        ) from err


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    return probe.returncode == 0


def ensure_dockerd(timeout_s: float = 60.0) -> None:
    """Start dockerd in the background when no engine answers; it outlives the test run."""
    if docker_available():
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or shutil.which("docker") is None:
        raise InfraError("docker is not installed: apt-get install -y docker.io")
    if os.geteuid() != 0:
        raise InfraError("no Docker engine answers and starting dockerd needs root")
    log_path = cache_dir() / "dockerd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [dockerd], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if docker_available():
            return
        if proc.poll() is not None:
            break
        time.sleep(1)
    tail = log_path.read_text(errors="replace").splitlines()[-15:]
    raise InfraError(
        f"dockerd did not come up within {timeout_s:.0f}s (log {log_path}):\n" + "\n".join(tail)
    )


def image_exists(tag: str) -> bool:
    probe = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


def _debootstrap_tarball(suite: str, dest: Path) -> None:
    """Make a minbase rootfs tarball without apt lists or .debs (images run apt-get update)."""
    if shutil.which("debootstrap") is None:
        raise InfraError("debootstrap is not installed: apt-get install -y debootstrap")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            ["debootstrap", "--variant=minbase", suite, str(rootfs), DEBIAN_MIRROR],
            capture_output=True,
        )
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftovers).glob("*"):
                if entry.is_file():
                    entry.unlink()
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(APT_DOCKER_CLEAN)
        partial = dest.with_suffix(".partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."])
        partial.replace(dest)


def ensure_base_image(tag: str = DEFAULT_BASE_IMAGE, suite: str = "bookworm") -> str:
    """Import a debootstrapped Debian as `tag` unless present; the rootfs tarball is cached."""
    ensure_dockerd()
    if image_exists(tag):
        return tag
    tarball = cache_dir() / "rootfs" / f"debian-{suite}-minbase.tar"
    if not tarball.exists():
        _debootstrap_tarball(suite, tarball)
    _run(["docker", "import", "--change", 'CMD ["bash"]', str(tarball), tag], capture_output=True)
    return tag


def _sdist_path(version: str) -> Path:
    sdist_dir = cache_dir() / "sdist"
    sdist = sdist_dir / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        sdist_dir.mkdir(parents=True, exist_ok=True)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(sdist_dir),
            ],
            capture_output=True,
        )
    if not sdist.exists():
        raise InfraError(f"pip did not produce {sdist}")
    return sdist


def _cmake_version(cmakelists: str, prefix: str) -> str:
    parts = {}
    for line in cmakelists.splitlines():
        for part in ("MAJOR", "MINOR", "PATCH"):
            key = f"set({prefix}_VERSION_{part} "
            if line.startswith(key):
                parts[part] = line[len(key) :].rstrip(")").strip()
    return ".".join(parts.get(p, "?") for p in ("MAJOR", "MINOR", "PATCH"))


def _git_field(git_dir: Path, fmt: str) -> str:
    if shutil.which("git") is None:
        return ""
    out = subprocess.run(
        ["git", f"--git-dir={git_dir}", "log", "-1", f"--format={fmt}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() if out.returncode == 0 else ""


def _extract_llama_tree(sdist: Path, version: str, dest: Path) -> dict[str, str]:
    """Extract vendor/llama.cpp into dest/llama.cpp and return its version facts."""
    prefix = f"llama_cpp_python-{version}/"
    vendor = f"{prefix}vendor/llama.cpp/"
    submodule_git = f"{prefix}.git/modules/vendor/llama.cpp/"
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp, tarfile.open(sdist) as tar:
        wanted = [m for m in tar.getmembers() if m.name.startswith((vendor, submodule_git))]
        tar.extractall(tmp, members=wanted, filter="data")
        root = Path(tmp) / prefix
        tree = root / "vendor" / "llama.cpp"
        git_dir = root / ".git" / "modules" / "vendor" / "llama.cpp"
        head = git_dir / "HEAD"
        commit = head.read_text().strip() if head.exists() else "unknown"
        facts = {
            "package_version": version,
            "commit": commit,
            "commit_date": _git_field(git_dir, "%cI") if head.exists() else "",
            "llama_version": _cmake_version((tree / "CMakeLists.txt").read_text(), "LLAMA")
            + "-dev",
            "ggml_version": _cmake_version((tree / "ggml" / "CMakeLists.txt").read_text(), "GGML"),
        }
        # The `.git` file points at the sdist's git dir, which is not extracted alongside.
        (tree / ".git").unlink(missing_ok=True)
        dest.mkdir(parents=True, exist_ok=True)
        tree.replace(dest / "llama.cpp")
    return facts


def ensure_llama_source(version: str = DEFAULT_LLAMA_PY_VERSION) -> Path:
    """Return the llama.cpp tree vendored by llama-cpp-python `version`, extracting it once.

    `llmhost build --llama-source` builds from it (its context excludes come from
    llmhost.actions.build).
    """
    root = cache_dir() / "llama-src" / version
    done = root / "source.json"
    if done.exists():
        _mark_tree(root / "llama.cpp", json.loads(done.read_text()))
        return root / "llama.cpp"
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    facts = _extract_llama_tree(_sdist_path(version), version, root)
    done.write_text(json.dumps(facts, indent=2) + "\n")
    _mark_tree(root / "llama.cpp", facts)
    return root / "llama.cpp"


def _mark_tree(tree: Path, facts: dict[str, str]) -> None:
    """Leave what `llmhost build --llama-source` reads of a tree's identity: a minimal `.git`
    whose HEAD is the vendored commit, and LLMHOST_SOURCE naming where the tree came from."""
    head = tree / ".git" / "HEAD"
    if not head.exists() and facts.get("commit", "unknown") != "unknown":
        head.parent.mkdir(parents=True, exist_ok=True)
        head.write_text(facts["commit"] + "\n")
    marker = tree / "LLMHOST_SOURCE"
    if not marker.exists():
        marker.write_text(
            f"llama-cpp-python-{facts['package_version']}-vendor-{facts['commit'][:9]}\n"
        )


def ensure_tiny_gguf(preset: str = "tiny", tensor_type: str = "q8_0") -> Path:
    """A synthetic llama GGUF with the SPM vocabulary, written once per preset and type."""
    from llmhost.devtools.synthetic_gguf import FORMAT_REVISION, PRESETS, write_llama_gguf

    models = cache_dir() / "models"
    path = models / f"{preset}-{tensor_type}-r{FORMAT_REVISION}.gguf"
    if path.exists():
        return path
    models.mkdir(parents=True, exist_ok=True)
    vocab = ensure_llama_source() / "models" / "ggml-vocab-llama-spm.gguf"
    partial = path.with_suffix(".partial")
    shape = dataclasses.asdict(PRESETS[preset])
    write_llama_gguf(partial, vocab, **shape, tensor_type=tensor_type, name=f"synthetic-{preset}")
    partial.replace(path)
    return path


_BUILT_IMAGES: dict[str, str] = {}


def ensure_llama_cpu_image(log: Path | None = None) -> str:
    """The product's CPU image, built the way a user builds it: `llmhost build --profile cpu`
    from the vendored tree on the local base image. Once per process; Docker's layer cache makes
    a repeat in another process cheap."""
    if "cpu" in _BUILT_IMAGES:
        return _BUILT_IMAGES["cpu"]
    ensure_dockerd()
    base = ensure_base_image()
    tree = ensure_llama_source()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "llmhost.yaml"
        config.write_text("inference_cores: 1\n")  # the image does not depend on the core count
        cmd = [
            sys.executable,
            "-m",
            "llmhost.cli.main",
            "--config",
            str(config),
            "build",
            "--profile",
            "cpu",
            "--llama-source",
            str(tree),
            "--base-image",
            base,
        ]
        if log is None:
            _run(cmd, capture_output=True)
        else:
            _run_logged(cmd, dict(os.environ), log)
    _BUILT_IMAGES["cpu"] = "llmhost/llama-cpu:latest"
    return _BUILT_IMAGES["cpu"]


def _run_logged(cmd: list[str], env: dict[str, str], log: Path) -> None:
    """Run cmd with its output in `log`, each line prefixed by seconds since start."""
    start = time.monotonic()
    with (
        log.open("w") as out,
        subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(f"[{time.monotonic() - start:7.1f}s] {line}")
            out.flush()
    if proc.returncode != 0:
        raise InfraError(f"{' '.join(cmd[:2])} failed ({proc.returncode}); see {log}")


@dataclass(frozen=True)
class RunningServer:
    """A llama-server container started by `llama_server_container`."""

    container: str
    base_url: str

    def health(self) -> str:
        """Docker's view from the image HEALTHCHECK: starting, healthy or unhealthy."""
        out = _run(
            ["docker", "inspect", "-f", "{{.State.Health.Status}}", self.container],
            capture_output=True,
        )
        return out.stdout.strip()

    def logs(self) -> str:
        out = subprocess.run(
            ["docker", "logs", self.container], capture_output=True, text=True, check=False
        )
        return out.stdout + out.stderr


def http_status(url: str, timeout_s: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@contextmanager
def llama_server_container(
    image: str, model: Path, *, args: Sequence[str] = (), ready_timeout_s: float = 120.0
) -> Iterator[RunningServer]:
    """Serve `model` (mounted read-only) from `image` on a free localhost port until exit."""
    container = _run(
        [
            "docker",
            "run",
            "-d",
            "-p",
            "127.0.0.1::8080",
            "-v",
            f"{model.resolve()}:/models/{model.name}:ro",
            image,
            "-m",
            f"/models/{model.name}",
            *args,
        ],
        capture_output=True,
    ).stdout.strip()
    try:
        port = _run(["docker", "port", container, "8080/tcp"], capture_output=True).stdout
        server = RunningServer(container, f"http://{port.splitlines()[0].strip()}")
        deadline = time.monotonic() + ready_timeout_s
        while True:
            state = _run(
                ["docker", "inspect", "-f", "{{.State.Running}}", container], capture_output=True
            ).stdout.strip()
            if state != "true":
                raise InfraError(f"llama-server exited:\n{server.logs()[-3000:]}")
            try:
                if http_status(server.base_url + "/health", timeout_s=2) == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise InfraError(
                    f"llama-server not healthy in {ready_timeout_s:.0f}s:\n{server.logs()[-3000:]}"
                )
            time.sleep(0.5)
        yield server
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def ensure_llama_server_binary() -> Path:
    """llama-server copied out of the product image, to run natively on this (Debian 12) host:
    the bench client's timing tests need a server process they can start and kill themselves."""
    image = ensure_llama_cpu_image()
    dest = cache_dir() / "from-image"
    binary = dest / "app" / "llama-server"
    image_id = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stamp = dest / "image-id"
    if binary.exists() and stamp.exists() and stamp.read_text() == image_id:
        return binary
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    name = f"llmhost-extract-{os.getpid()}"
    _run(["docker", "create", "--name", name, image], capture_output=True)
    try:
        _run(["docker", "cp", f"{name}:/app", str(dest / "app")], capture_output=True)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    stamp.write_text(image_id)
    return binary
