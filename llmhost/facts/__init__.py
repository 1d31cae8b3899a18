"""Host facts: one module per source domain, gathered into one `HostFacts` record, read through
one `Source` (the live host or a snapshot). It imports the base modules only."""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from llmhost.facts.containers import ContainerFacts, gather_containers
from llmhost.facts.cpu import CpuFacts, gather_cpu
from llmhost.facts.gpu import GpuFacts, attribute_processes, gather_gpu
from llmhost.facts.kernel import KernelFacts, gather_kernel
from llmhost.facts.memory import MemoryFacts, gather_memory
from llmhost.facts.models import ModelFacts, gather_models
from llmhost.facts.processes import ProcessFacts, gather_processes
from llmhost.facts.sources import Source
from llmhost.untrusted import HOSTNAME_FILE, check_hostname


@dataclass(frozen=True)
class HostFacts:
    source: str
    hostname: str
    cpu: CpuFacts
    memory: MemoryFacts
    kernel: KernelFacts
    gpu: GpuFacts
    containers: ContainerFacts
    processes: ProcessFacts = field(default_factory=ProcessFacts)
    # The configured models (path -> facts), when asked for: what the plan sizes memory from.
    models: dict[str, ModelFacts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def to_jsonable(value: Any) -> Any:
    """Dataclasses, tuples, enums and dicts with int keys -> plain JSON (and YAML) types."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def gather(
    source: Source, *, containers: bool = True, models: dict[str, str] | None = None
) -> HostFacts:
    """Read every domain through `source`, and the `models` (path -> kind: gguf or hf) asked for;
    a hostname that is not one is refused here, before it can become a file name (host_vars) or
    reach a template."""
    hostname = check_hostname(
        (source.read_text(HOSTNAME_FILE) or platform.node()).strip(),
        f"{source.name} {HOSTNAME_FILE}",
    )
    processes = gather_processes(source) if containers else ProcessFacts(error="not inspected")
    gpu = attribute_processes(
        gather_gpu(source), {p.pid: p.service for p in processes.services if p.pid}, source
    )
    return HostFacts(
        source=source.name,
        hostname=hostname,
        cpu=gather_cpu(source),
        memory=gather_memory(source),
        kernel=gather_kernel(source),
        gpu=gpu,
        containers=gather_containers(source) if containers else _no_containers(),
        processes=processes,
        models=gather_models(source, models or {}),
    )


def _no_containers() -> ContainerFacts:
    return ContainerFacts(engine_reachable=False, engine_error="not inspected")
