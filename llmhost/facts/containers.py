"""Docker engine, its runtimes, compose v2, the NVIDIA container toolkit, images and services."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from llmhost.errors import LlmhostError
from llmhost.facts.sources import Source
from llmhost.untrusted import shown

T = TypeVar("T")


@dataclass(frozen=True)
class ImageInfo:
    tags: tuple[str, ...]
    labels: dict[str, str]
    created: int
    id: str = ""


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    service: str
    project: str
    image: str
    state: str
    health: str | None
    labels: dict[str, str]


@dataclass(frozen=True)
class ContainerFacts:
    engine_reachable: bool
    engine_error: str | None
    engine_version: str | None = None
    api_version: str | None = None
    containerd_version: str | None = None
    runc_version: str | None = None
    runtimes: tuple[str, ...] = ()
    default_runtime: str | None = None
    cgroup_driver: str | None = None
    cgroup_version: str | None = None
    firewall_backend: str | None = None  # docker info's FirewallBackend.Driver (engine >= 28.1)
    compose_version: str | None = None
    compose_error: str | None = None
    nvidia_ctk_version: str | None = None
    libnvidia_container_version: str | None = None  # `nvidia-container-cli --version` lib-version
    nvidia_container_cli_error: str | None = None  # why `nvidia-container-cli info` failed
    images: tuple[ImageInfo, ...] = ()
    containers: tuple[ContainerInfo, ...] = ()

    @property
    def nvidia_runtime(self) -> bool:
        return "nvidia" in self.runtimes


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, or absurd nesting and numbers
        return None


class WrongShape(ValueError):
    """Docker's JSON with a value of another type than docker writes (a crafted snapshot)."""


def _get(obj: Any, name: str, kind: type | tuple[type, ...]) -> Any:
    """`obj[name]` when it is absent or of `kind`; WrongShape otherwise."""
    if not isinstance(obj, dict):
        raise WrongShape(f"holds a {type(obj).__name__} where docker writes an object")
    value = obj.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise WrongShape(f"{name} has the wrong type ({type(value).__name__})")
    return value


def _strings(obj: Any, name: str) -> list[str]:
    values = _get(obj, name, list) or []
    if not all(isinstance(v, str) for v in values):
        raise WrongShape(f"{name} holds a value that is not a string")
    return values


def _string_map(obj: Any, name: str) -> dict[str, str]:
    values = _get(obj, name, dict) or {}
    if not all(isinstance(v, str) for v in values.values()):
        raise WrongShape(f"{name} holds a value that is not a string")
    return dict(values)


def _component(version: dict[str, Any], name: str) -> str | None:
    for comp in _get(version, "Components", list) or []:
        if str(_get(comp, "Name", str) or "").lower() == name:
            details = _get(comp, "Details", dict) or {}
            plain = str(_get(comp, "Version", str) or _get(details, "Version", str) or "")
            # Distribution builds put the full package version (with the Debian revision that
            # says which security fixes were backported) in GitCommit: "1.1.5+ds1-1+deb12u1".
            full = str(_get(details, "GitCommit", str) or "")
            return (full if plain and full.startswith(plain) else plain) or None
    return None


def parse_firewall_backend(value: Any) -> str | None:
    """`{"Driver": "iptables+firewalld", ...}` -> "iptables+firewalld" (28.1 pre-releases sent
    the bare string); None from engines older than 28.1, which do not report it."""
    if isinstance(value, dict):
        value = value.get("Driver")
    return str(value) if value else None


def parse_compose_version(text: str) -> str | None:
    match = re.search(r"v?(\d+\.\d+\.\d+)", text)
    return match.group(1) if match else None


def parse_ctk_version(text: str) -> str | None:
    """`nvidia-ctk --version` -> "1.17.8" (its first line ends "CLI version 1.17.8")."""
    match = re.search(r"version\s+v?(\d+\.\d+\.\d+(?:[-~][\w.]+)?)", text)
    return match.group(1) if match else None


def parse_libnvidia_container_version(text: str) -> str | None:
    """`nvidia-container-cli --version` -> "1.17.8" (its "lib-version" line, else "cli-version")."""
    match = re.search(r"lib-version:\s*v?(\d+\.\d+\.\d+)", text) or re.search(
        r"version:\s*v?(\d+\.\d+\.\d+)", text
    )
    return match.group(1) if match else None


def _state_and_health(status: str, state: str) -> tuple[str, str | None]:
    match = re.search(r"\((healthy|unhealthy|health: starting)\)", status or "")
    health = match.group(1).replace("health: ", "") if match else None
    return state or "unknown", health


def _compose_error(error: str | None) -> str | None:
    """The docker CLI's words for a missing plugin vary by version; say it plainly."""
    if error and ("unknown flag" in error or "is not a docker command" in error):
        return "the docker compose v2 plugin is not installed"
    return error


def _list(data: Any) -> list[Any]:
    if data is not None and not isinstance(data, list):
        raise WrongShape(f"holds a {type(data).__name__} where docker writes a list")
    return data or []


def parse_images(data: Any) -> tuple[ImageInfo, ...]:
    images = []
    for img in _list(data):
        images.append(
            ImageInfo(
                tags=tuple(t for t in _strings(img, "RepoTags") if t != "<none>:<none>"),
                labels=_string_map(img, "Labels"),
                created=_get(img, "Created", int) or 0,
                id=_get(img, "Id", str) or "",
            )
        )
    return tuple(images)


def parse_containers(data: Any) -> tuple[ContainerInfo, ...]:
    result = []
    for c in _list(data):
        labels = _string_map(c, "Labels")
        state, health = _state_and_health(_get(c, "Status", str), _get(c, "State", str))
        names = _strings(c, "Names") or ["?"]
        result.append(
            ContainerInfo(
                name=names[0].lstrip("/"),
                service=labels.get("com.docker.compose.service", ""),
                project=labels.get("com.docker.compose.project", ""),
                image=_get(c, "Image", str) or "",
                state=state,
                health=health,
                labels=labels,
            )
        )
    return tuple(result)


def gather_containers(source: Source) -> ContainerFacts:
    # The compose and nvidia-ctk binaries start slowly; run them while the engine answers.
    with ThreadPoolExecutor(max_workers=4) as pool:
        compose_job = pool.submit(source.command, "docker-compose-version")
        ctk_job = pool.submit(source.command, "nvidia-ctk-version")
        cli_version_job = pool.submit(source.command, "nvidia-container-cli-version")
        cli_info_job = pool.submit(source.command, "nvidia-container-cli-info")
        info_out = source.command("docker-info")
        info = _json(info_out.stdout) if info_out.ok else None
        version_out = source.command("docker-version") if info else None
        version = (_json(version_out.stdout) if version_out and version_out.ok else None) or {}
        images = source.command("docker-images") if info else None
        containers = source.command("docker-containers") if info else None
        compose, ctk = compose_job.result(), ctk_job.result()
        cli_version, cli_info = cli_version_job.result(), cli_info_job.result()
    info = info or {}
    return ContainerFacts(
        engine_reachable=bool(info),
        engine_error=None if info else (info_out.error or "docker info returned nothing"),
        **_parsed(source, "docker-info/docker-version", _engine, info, version),
        compose_version=parse_compose_version(compose.stdout) if compose.ok else None,
        compose_error=_compose_error(compose.error),
        nvidia_ctk_version=parse_ctk_version(ctk.stdout) if ctk.ok else None,
        libnvidia_container_version=(
            parse_libnvidia_container_version(cli_version.stdout) if cli_version.ok else None
        ),
        nvidia_container_cli_error=None if cli_info.ok else cli_info.error,
        images=_parsed(source, "docker-images", parse_images, _json(images.stdout))
        if images and images.ok
        else (),
        containers=_parsed(source, "docker-containers", parse_containers, _json(containers.stdout))
        if containers and containers.ok
        else (),
    )


def _engine(info: Any, version: Any) -> dict[str, Any]:
    """ContainerFacts' fields from `docker info` and `docker version`."""
    return {
        "engine_version": _get(info, "ServerVersion", str) or _get(version, "Version", str),
        "api_version": _get(version, "ApiVersion", str),
        "containerd_version": _component(version, "containerd"),
        "runc_version": _component(version, "runc"),
        "runtimes": tuple(sorted(_get(info, "Runtimes", dict) or {})),
        "default_runtime": _get(info, "DefaultRuntime", str),
        "cgroup_driver": _get(info, "CgroupDriver", str),
        "cgroup_version": _get(info, "CgroupVersion", str),
        "firewall_backend": parse_firewall_backend(_get(info, "FirewallBackend", (dict, str))),
    }


def _parsed(source: Source, key: str, parse: Callable[..., T], *data: Any) -> T:
    """`parse(*data)`; docker JSON of the wrong shape (a crafted snapshot) is one clear line."""
    try:
        return parse(*data)
    except WrongShape as exc:
        raise LlmhostError(
            f"{key} output in {source.name} is not the JSON docker writes: {shown(str(exc))}"
        ) from None
