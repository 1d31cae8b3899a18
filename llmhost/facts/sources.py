"""Where raw host inputs come from: the live host, or a snapshot of the same inputs.

Every fact module reads through a `Source`, so `doctor --from FILE` analyses exactly the
bytes a live run would have read (the psutil PROCFS_PATH idea, extended to a tarball).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmhost.errors import LlmhostError
from llmhost.facts import our_labels
from llmhost.facts.snapshot_format import MANIFEST, SNAPSHOT_FORMAT, check_manifest, read_snapshot
from llmhost.untrusted import HOSTNAME_FILE

# Commands whose output is a raw input. Snapshots store the output under commands/<key>.
COMMANDS: dict[str, list[str]] = {
    "nvidia-smi-xml": ["nvidia-smi", "-q", "-x"],
    "nvidia-smi-csv": [
        "nvidia-smi",
        "--query-gpu=index,name,uuid,compute_cap,memory.total",
        "--format=csv",
    ],
    "nvidia-ctk-version": ["nvidia-ctk", "--version"],
    # libnvidia-container: what Docker's GPU device requests run through (patched on its own).
    "nvidia-container-cli-version": ["nvidia-container-cli", "--version"],
    "nvidia-container-cli-info": ["nvidia-container-cli", "info", "--csv"],
    "docker-compose-version": ["docker", "compose", "version", "--short"],
}

# Docker Engine API calls (through the docker SDK), stored as JSON like `docker info`.
DOCKER_CALLS = (
    "docker-info",
    "docker-version",
    "docker-images",
    "docker-containers",
    "docker-inspect-llmhost",
)
# What `docker-inspect-llmhost` keeps of each running llmhost container's inspect JSON: enough
# to find its processes, never its environment (LLAMA_API_KEY lives there) beyond these keys.
INSPECT_ENV_KEYS = ("GLIBC_TUNABLES", "LLAMA_ARG_LOAD_MODE", "LLAMA_ARG_MLOCK")
INSPECT_LABELS = ("com.docker.compose.project", "com.docker.compose.service", our_labels.SERVICE)
KNOWN_COMMANDS = frozenset(COMMANDS) | frozenset(DOCKER_CALLS)
# The `docker info` keys container facts read; the rest (the engine's name, which is the
# hostname, its proxies, registries and paths) is never recorded.
DOCKER_INFO_KEYS = (
    "ServerVersion",
    "Runtimes",
    "DefaultRuntime",
    "CgroupDriver",
    "CgroupVersion",
    "FirewallBackend",  # firewalld-scoped advisories (floors.toml, docker-engine)
)
REDACTED_HOSTNAME = "redacted-host"


@dataclass(frozen=True)
class CommandOutput:
    """A command's result; `error` is set when it could not run or failed."""

    stdout: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Source(Protocol):
    """Read-only access to a host's raw inputs."""

    name: str

    def read_text(self, path: str) -> str | None: ...

    def list_dir(self, path: str) -> list[str] | None: ...

    def command(self, key: str) -> CommandOutput: ...

    def nvml(self) -> Any | None: ...

    def model(self, path: str, kind: str) -> CommandOutput:
        """A configured model's facts as JSON (`llmhost.facts.models.model_json`), or why not."""
        ...


def _run(argv: list[str], timeout: float = 10.0) -> CommandOutput:
    if shutil.which(argv[0]) is None:
        return CommandOutput(error=f"{argv[0]} not found on PATH")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CommandOutput(error=f"{' '.join(argv)}: {exc}")
    if proc.returncode != 0:
        msg = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        return CommandOutput(stdout=proc.stdout, error=msg[0] if msg else f"exit {proc.returncode}")
    return CommandOutput(stdout=proc.stdout)


def _docker_call(key: str) -> CommandOutput:
    """Ask the Docker engine (its Unix socket; the docker SDK for a tcp/ssh DOCKER_HOST);
    errors become data, not exceptions."""
    from llmhost.facts import engine_api

    sock = engine_api.socket_path()
    if sock is None:
        return _docker_sdk_call(key)
    try:
        data = _engine_query(key, lambda path: engine_api.get_json(path, sock))
    except (OSError, engine_api.EngineError) as exc:
        return CommandOutput(error=_docker_error_sentence(exc))
    return CommandOutput(stdout=json.dumps(data, sort_keys=True))


def _engine_query(key: str, get: Callable[[str], Any]) -> Any:
    """One DOCKER_CALLS key through the Engine API paths, reduced to what facts read."""
    from llmhost.facts.engine_api import query

    if key == "docker-info":
        return {k: v for k, v in get("/info").items() if k in DOCKER_INFO_KEYS}
    if key == "docker-version":
        return get("/version")
    if key == "docker-images":
        return get("/images/json" + query(filters={"label": [our_labels.PROFILE]}))
    if key == "docker-containers":
        ours = get("/containers/json" + query(all=1, filters={"label": [our_labels.SERVICE]}))
        return [_container_summary(c) for c in ours]
    if key == "docker-inspect-llmhost":
        running = {"label": [our_labels.SERVICE], "status": ["running"]}
        ours = get("/containers/json" + query(filters=running))
        return [_inspect_summary(get(f"/containers/{c['Id']}/json")) for c in ours]
    raise KeyError(key)


def _docker_sdk_call(key: str) -> CommandOutput:
    """`_docker_call` through the docker SDK, for engines not on a Unix socket."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        return CommandOutput(error=f"docker SDK not importable: {exc}")
    try:
        client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST"), timeout=5)
        try:
            data = _engine_query(
                key, lambda path: client._result(client._get(client._url(path)), True)
            )
        finally:
            client.close()
    except (DockerException, OSError, ValueError) as exc:
        return CommandOutput(error=_docker_error_sentence(exc))
    return CommandOutput(stdout=json.dumps(data, sort_keys=True))


def _container_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The fields of a `docker ps` entry that container facts read; compose's host paths dropped."""
    labels = data.get("Labels") or {}
    return {
        **{k: data.get(k) for k in ("Names", "Image", "State", "Status")},
        "Labels": {
            k: v
            for k, v in labels.items()
            if k in INSPECT_LABELS or k.startswith(our_labels.PREFIX)
        },
    }


def _inspect_summary(data: dict[str, Any]) -> dict[str, Any]:
    """The parts of a container's inspect JSON the live checks read; no secrets."""
    state, config = data.get("State") or {}, data.get("Config") or {}
    health = state.get("Health") or {}
    labels = config.get("Labels") or {}
    return {
        "Id": data.get("Id"),
        "Name": data.get("Name"),
        "State": {
            "Pid": state.get("Pid"),
            "Status": state.get("Status"),
            "Health": {
                "Status": health.get("Status"),
                "Log": [{"ExitCode": h.get("ExitCode")} for h in health.get("Log") or []],
            },
        },
        "HostConfig": {"CpusetCpus": (data.get("HostConfig") or {}).get("CpusetCpus")},
        "Config": {
            "Env": [e for e in config.get("Env") or [] if e.split("=")[0] in INSPECT_ENV_KEYS],
            "Labels": {k: v for k, v in labels.items() if k in INSPECT_LABELS},
        },
    }


def _docker_error_sentence(exc: BaseException) -> str:
    text = str(exc)
    if "Permission denied" in text or "PermissionError" in text:
        return "permission denied on the Docker socket (run as root or join the docker group)"
    if "FileNotFoundError" in text or "No such file" in text:
        return "no Docker socket (the engine is not running or not installed)"
    if "Connection refused" in text or "ConnectionRefused" in text:
        return "the Docker engine refused the connection (daemon down)"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"Docker engine unreachable: {first[:200]}"


class LiveSource:
    """The running host, optionally under a different filesystem root (for tests)."""

    def __init__(self, root: str = "/", nvml_module: Any | None = None) -> None:
        self.name = "live" if root == "/" else f"live:{root}"
        self.root = Path(root)
        self._nvml_module = nvml_module

    def _path(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def read_text(self, path: str) -> str | None:
        try:
            return self._path(path).read_text(errors="replace")
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(self._path(path)))
        except OSError:
            return None

    def command(self, key: str) -> CommandOutput:
        if key in DOCKER_CALLS:
            return _docker_call(key)
        return _run(COMMANDS[key])

    def nvml(self) -> Any | None:
        """The pynvml module (or a test double injected at construction)."""
        if self._nvml_module is not None:
            return self._nvml_module
        try:
            import pynvml
        except ImportError:
            return None
        return pynvml

    def model(self, path: str, kind: str) -> CommandOutput:
        from llmhost.facts.models import model_json, read_model

        try:
            return CommandOutput(stdout=model_json(read_model(path, kind)))
        except LlmhostError as exc:
            return CommandOutput(error=str(exc))


class RecordingSource:
    """Wraps a source and keeps every raw input read, to be written as a snapshot."""

    def __init__(self, inner: Source) -> None:
        self.inner = inner
        self.name = inner.name
        self.files: dict[str, str] = {}
        self.listings: dict[str, list[str] | None] = {}
        self.commands: dict[str, CommandOutput] = {}
        self.models: dict[str, tuple[str, CommandOutput]] = {}
        self.redacted_hostname: str | None = None

    def read_text(self, path: str) -> str | None:
        text = self.inner.read_text(path)
        if text is not None:
            self.files[path] = text
        return text

    def list_dir(self, path: str) -> list[str] | None:
        names = self.inner.list_dir(path)
        self.listings[path] = names
        return names

    def command(self, key: str) -> CommandOutput:
        out = self.inner.command(key)
        self.commands[key] = out
        return out

    def nvml(self) -> Any | None:
        # Snapshots carry nvidia-smi output instead of NVML state.
        return None

    def model(self, path: str, kind: str) -> CommandOutput:
        out = self.inner.model(path, kind)
        self.models[path] = (kind, out)
        return out

    def redact_hostname(self, replacement: str = REDACTED_HOSTNAME) -> None:
        """Record `replacement` instead of this host's name, in the files and the manifest."""
        self.files[HOSTNAME_FILE] = replacement + "\n"
        self.redacted_hostname = replacement

    def write(self, dest: Path, meta: dict[str, Any]) -> Path:
        """Write everything read so far as a gzip tarball (mode 0600: it describes this host),
        files at their real paths; the manifest is checked as a reader will check it."""
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "listings": self.listings,
            "commands": {k: {"error": v.error} for k, v in self.commands.items()},
            **meta,
        }
        if self.models:  # the configured models' facts, so the snapshot plans as this host does
            manifest["models"] = {
                path: {"kind": kind, "facts": json.loads(out.stdout) if out.ok else None,
                       "error": out.error}
                for path, (kind, out) in self.models.items()
            }  # fmt: skip
        if self.redacted_hostname is not None:
            manifest |= {"hostname": self.redacted_hostname, "redacted": ["hostname"]}
        check_manifest(manifest, f"snapshot {dest}", KNOWN_COMMANDS)
        tmp = dest.with_name(dest.name + ".part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise LlmhostError(f"cannot write snapshot {dest}: {exc.strerror}") from None
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add(tar, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
                for path, text in sorted(self.files.items()):
                    _add(tar, path.lstrip("/"), text)
                for key, out in sorted(self.commands.items()):
                    _add(tar, f"commands/{key}", out.stdout)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        return dest


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


class SnapshotSource:
    """A captured host: same paths, same command outputs, nothing live."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"snapshot:{self.path.name}"
        if not self.path.is_file():
            raise LlmhostError(f"snapshot {self.path} does not exist")
        self.manifest, self._files = read_snapshot(self.path, KNOWN_COMMANDS)

    def read_text(self, path: str) -> str | None:
        return self._files.get(path.lstrip("/"))

    def list_dir(self, path: str) -> list[str] | None:
        names = self.manifest.get("listings", {}).get(path)
        return list(names) if names is not None else None

    def command(self, key: str) -> CommandOutput:
        meta = self.manifest.get("commands", {}).get(key)
        if meta is None:
            return CommandOutput(error=f"{key} was not captured in this snapshot")
        return CommandOutput(stdout=self._files.get(f"commands/{key}", ""), error=meta.get("error"))

    def nvml(self) -> Any | None:
        return None

    def model(self, path: str, kind: str) -> CommandOutput:
        entry = self.manifest.get("models", {}).get(path)
        if entry is None or entry["kind"] != kind:
            return CommandOutput(error=f"model {path} was not captured in this snapshot")
        if entry["error"] is not None:
            return CommandOutput(error=entry["error"])
        return CommandOutput(stdout=json.dumps(entry["facts"]))


def open_source(snapshot: str | None) -> Source:
    """The live host, or the snapshot at `snapshot`."""
    return SnapshotSource(snapshot) if snapshot else LiveSource()
