"""Docker engine, its runtimes, compose v2, the NVIDIA container toolkit, images and services."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmhost.sources import Source


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
    except json.JSONDecodeError:
        return None


def _component(version: dict[str, Any], name: str) -> str | None:
    for comp in version.get("Components") or []:
        if str(comp.get("Name", "")).lower() == name:
            details = comp.get("Details") or {}
            plain = str(comp.get("Version") or details.get("Version") or "")
            # Distribution builds put the full package version (with the Debian revision that
            # says which security fixes were backported) in GitCommit: "1.1.5+ds1-1+deb12u1".
            full = str(details.get("GitCommit") or "")
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


def parse_images(data: Any) -> tuple[ImageInfo, ...]:
    images = []
    for img in data or []:
        images.append(
            ImageInfo(
                tags=tuple(t for t in img.get("RepoTags") or () if t != "<none>:<none>"),
                labels=dict(img.get("Labels") or {}),
                created=int(img.get("Created") or 0),
                id=str(img.get("Id") or ""),
            )
        )
    return tuple(images)


def parse_containers(data: Any) -> tuple[ContainerInfo, ...]:
    result = []
    for c in data or []:
        labels = dict(c.get("Labels") or {})
        state, health = _state_and_health(c.get("Status", ""), c.get("State", ""))
        names = c.get("Names") or ["?"]
        result.append(
            ContainerInfo(
                name=names[0].lstrip("/"),
                service=labels.get("com.docker.compose.service", ""),
                project=labels.get("com.docker.compose.project", ""),
                image=c.get("Image", ""),
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
        engine_version=info.get("ServerVersion") or version.get("Version"),
        api_version=version.get("ApiVersion"),
        containerd_version=_component(version, "containerd"),
        runc_version=_component(version, "runc"),
        runtimes=tuple(sorted((info.get("Runtimes") or {}).keys())),
        default_runtime=info.get("DefaultRuntime"),
        cgroup_driver=info.get("CgroupDriver"),
        cgroup_version=info.get("CgroupVersion"),
        firewall_backend=parse_firewall_backend(info.get("FirewallBackend")),
        compose_version=parse_compose_version(compose.stdout) if compose.ok else None,
        compose_error=_compose_error(compose.error),
        nvidia_ctk_version=parse_ctk_version(ctk.stdout) if ctk.ok else None,
        libnvidia_container_version=(
            parse_libnvidia_container_version(cli_version.stdout) if cli_version.ok else None
        ),
        nvidia_container_cli_error=None if cli_info.ok else cli_info.error,
        images=parse_images(_json(images.stdout)) if images and images.ok else (),
        containers=parse_containers(_json(containers.stdout))
        if containers and containers.ok
        else (),
    )
