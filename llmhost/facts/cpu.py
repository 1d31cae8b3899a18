"""CPU identity, the ISA flags llama.cpp cares about, and topology (cores, SMT, L3, NUMA)."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.cpulist import parse_cpulist
from llmhost.errors import LlmhostError
from llmhost.facts.isa import CPUINFO_FLAGS
from llmhost.facts.sources import Source
from llmhost.facts.uarch import codename, microarchitecture

# /proc/cpuinfo flag names that change which llama.cpp kernels can run (llmhost.facts.isa's table).
ISA_FLAGS = CPUINFO_FLAGS
# The kernel spells some flags differently from the ISA names people use.
_FLAG_ALIASES = {"pni": "sse3", "avx512vbmi": "avx512_vbmi"}

CPU_ROOT = "/sys/devices/system/cpu"


@dataclass(frozen=True)
class L3Domain:
    """CPUs sharing one last-level cache: a CCD (or CCX) on AMD, a socket on most Intel."""

    id: int
    cpus: tuple[int, ...]
    size_kb: int | None


@dataclass(frozen=True)
class CpuFacts:
    vendor: str
    model_name: str
    family: int
    model: int
    stepping: int
    microarchitecture: str
    codename: str | None
    flags: tuple[str, ...]
    logical_cpus: tuple[int, ...]
    physical_cores: int
    smt_sibling_sets: tuple[tuple[int, ...], ...]
    l3_domains: tuple[L3Domain, ...]
    numa_nodes: dict[int, tuple[int, ...]]

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def smt_active(self) -> bool:
        return any(len(s) > 1 for s in self.smt_sibling_sets)


def _first_processor_block(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The first processor's fields; a cpuinfo with no x86 `flags` line is refused."""
    fields = _first_processor_block(text)
    if "flags" not in fields:
        raise LlmhostError(
            "/proc/cpuinfo has no 'flags' line: llmhost supports x86-64 CPUs only "
            "(or the snapshot's cpuinfo is truncated)"
        )
    return fields


def isa_flags(flags_line: str) -> tuple[str, ...]:
    present = {_FLAG_ALIASES.get(f, f) for f in flags_line.split()}
    return tuple(f for f in ISA_FLAGS if f in present)


def _online_cpus(source: Source, cpuinfo_text: str) -> tuple[int, ...]:
    online = parse_cpulist(source.read_text(f"{CPU_ROOT}/online"), f"{CPU_ROOT}/online")
    if online:
        return online
    numbers = [
        line.partition(":")[2].strip()
        for line in cpuinfo_text.splitlines()
        if line.startswith("processor")
    ]
    return parse_cpulist(",".join(numbers), "/proc/cpuinfo processor lines")


def _sibling_sets(source: Source, cpus: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    sets: dict[tuple[int, ...], None] = {}
    for cpu in cpus:
        base = f"{CPU_ROOT}/cpu{cpu}/topology"
        path = f"{base}/core_cpus_list"
        text = source.read_text(path)
        if not text:
            path = f"{base}/thread_siblings_list"
            text = source.read_text(path)
        siblings = tuple(c for c in parse_cpulist(text, path) if c in cpus) or (cpu,)
        sets[siblings] = None
    return tuple(sorted(sets, key=lambda s: s[0]))


def _l3_domains(source: Source, cpus: tuple[int, ...]) -> tuple[L3Domain, ...]:
    domains: dict[tuple[int, ...], L3Domain] = {}
    for cpu in cpus:
        cache_dir = f"{CPU_ROOT}/cpu{cpu}/cache"
        for index in source.list_dir(cache_dir) or []:
            if not index.startswith("index"):
                continue
            base = f"{cache_dir}/{index}"
            if (source.read_text(f"{base}/level") or "").strip() != "3":
                continue
            shared_path = f"{base}/shared_cpu_list"
            shared = parse_cpulist(source.read_text(shared_path), shared_path)
            shared = tuple(c for c in shared if c in cpus) or (cpu,)
            if shared in domains:
                continue
            size_text = (source.read_text(f"{base}/size") or "").strip().upper()
            size_kb = int(size_text[:-1]) if size_text.endswith("K") else None
            id_text = (source.read_text(f"{base}/id") or "").strip()
            domain_id = int(id_text) if id_text.isdigit() else len(domains)
            domains[shared] = L3Domain(id=domain_id, cpus=shared, size_kb=size_kb)
    if not domains:  # no cache topology exposed: treat the machine as one domain
        return (L3Domain(id=0, cpus=cpus, size_kb=None),)
    return tuple(sorted(domains.values(), key=lambda d: d.cpus[0]))


def _numa_nodes(source: Source, cpus: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    nodes: dict[int, tuple[int, ...]] = {}
    for name in source.list_dir("/sys/devices/system/node") or []:
        if name.startswith("node") and name[4:].isdigit():
            path = f"/sys/devices/system/node/{name}/cpulist"
            nodes[int(name[4:])] = parse_cpulist(source.read_text(path), path)
    return nodes or {0: cpus}


def gather_cpu(source: Source) -> CpuFacts:
    text = source.read_text("/proc/cpuinfo")
    if text is None:
        raise LlmhostError("cannot read /proc/cpuinfo")
    info = parse_cpuinfo(text)
    vendor = info.get("vendor_id", "unknown")
    family = int(info.get("cpu family", "0"))
    model = int(info.get("model", "0"))
    stepping = int(info.get("stepping", "0") or 0)
    raw_flags = info["flags"].split()
    cpus = _online_cpus(source, text)
    siblings = _sibling_sets(source, cpus)
    return CpuFacts(
        vendor=vendor,
        model_name=info.get("model name", "unknown"),
        family=family,
        model=model,
        stepping=stepping,
        microarchitecture=microarchitecture(vendor, family, model, stepping, raw_flags),
        codename=codename(vendor, family, model),
        flags=isa_flags(info["flags"]),
        logical_cpus=cpus,
        physical_cores=len(siblings),
        smt_sibling_sets=siblings,
        l3_domains=_l3_domains(source, cpus),
        numa_nodes=_numa_nodes(source, cpus),
    )
