"""Memory size, every hugepage pool, and the transparent hugepage mode."""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmhost.facts.sources import Source

HUGEPAGES_ROOT = "/sys/kernel/mm/hugepages"
THP_ROOT = "/sys/kernel/mm/transparent_hugepage"


@dataclass(frozen=True)
class HugepagePool:
    size_kb: int
    total: int
    free: int
    reserved: int
    surplus: int

    @property
    def available(self) -> int:
        """Pages a new mapping can still take: free minus those promised to others."""
        return max(self.free - self.reserved, 0)


@dataclass(frozen=True)
class MemoryFacts:
    total_kb: int
    available_kb: int
    hugepage_pools: tuple[HugepagePool, ...]
    default_hugepage_kb: int | None
    thp_enabled: str | None
    thp_defrag: str | None

    def pool(self, size_kb: int) -> HugepagePool | None:
        return next((p for p in self.hugepage_pools if p.size_kb == size_kb), None)


def parse_meminfo(text: str) -> dict[str, int]:
    """Values in kB (or plain counts for HugePages_*)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^([\w()]+):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values


def parse_bracketed_choice(text: str | None) -> str | None:
    """sysfs "always [madvise] never" -> "madvise"."""
    if not text:
        return None
    match = re.search(r"\[(\w[\w+-]*)\]", text)
    return match.group(1) if match else text.strip() or None


def _read_int(source: Source, path: str) -> int:
    text = source.read_text(path)
    return int(text.strip()) if text and text.strip().isdigit() else 0


def gather_memory(source: Source) -> MemoryFacts:
    meminfo = parse_meminfo(source.read_text("/proc/meminfo") or "")
    pools = []
    for name in source.list_dir(HUGEPAGES_ROOT) or []:
        match = re.fullmatch(r"hugepages-(\d+)kB", name)
        if not match:
            continue
        base = f"{HUGEPAGES_ROOT}/{name}"
        pools.append(
            HugepagePool(
                size_kb=int(match.group(1)),
                total=_read_int(source, f"{base}/nr_hugepages"),
                free=_read_int(source, f"{base}/free_hugepages"),
                reserved=_read_int(source, f"{base}/resv_hugepages"),
                surplus=_read_int(source, f"{base}/surplus_hugepages"),
            )
        )
    return MemoryFacts(
        total_kb=meminfo.get("MemTotal", 0),
        available_kb=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        hugepage_pools=tuple(sorted(pools, key=lambda p: p.size_kb)),
        default_hugepage_kb=meminfo.get("Hugepagesize"),
        thp_enabled=parse_bracketed_choice(source.read_text(f"{THP_ROOT}/enabled")),
        thp_defrag=parse_bracketed_choice(source.read_text(f"{THP_ROOT}/defrag")),
    )
