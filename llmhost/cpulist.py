"""Linux CPU list syntax ("0-3,8,10-11"), as used by sysfs and the kernel command line."""

from __future__ import annotations

import re
from collections.abc import Iterable

from llmhost.errors import LlmhostError
from llmhost.untrusted import shown

# Linux's largest NR_CPUS (x86 MAXSMP): a CPU id at or above it is a forged or corrupt input,
# and refusing it keeps a list like "0-4294967295" from allocating gigabytes.
MAX_CPUS = 8192
# "a", "a-b" or "a-b:stride/group" (the kernel's isolcpus/nohz_full syntax).
_PART = re.compile(
    r"(?P<start>[0-9]{1,12})(?:-(?P<end>[0-9]{1,12}))?"
    r"(?::(?P<stride>[0-9]{1,12})(?:/[0-9]{1,12})?)?"
)


def parse_cpulist(text: str | None, origin: str = "CPU list") -> tuple[int, ...]:
    """Parse "0-3,8" (optionally with ":stride" ranges or flag prefixes) into sorted CPUs.

    A malformed list, or one naming a CPU >= MAX_CPUS, is refused in one line naming `origin`
    (the file it was read from)."""
    if not text:
        return ()
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part or not part[0].isdigit():
            continue  # isolcpus flags such as "domain" or "managed_irq"
        start, end, stride = _span(part, text, origin)
        cpus.update(range(start, end + 1, stride))
    return tuple(sorted(cpus))


def _span(part: str, text: str, origin: str) -> tuple[int, int, int]:
    match = _PART.fullmatch(part)
    if match is None:
        raise LlmhostError(f"{origin} holds {shown(text.strip())!r}: not a CPU list")
    start = int(match["start"])
    end = int(match["end"] or start)
    if max(start, end) >= MAX_CPUS:
        raise LlmhostError(
            f"{origin} holds {shown(text.strip())!r}: CPU {max(start, end)} is above the "
            f"{MAX_CPUS - 1} Linux can number"
        )
    return start, end, max(int(match["stride"] or 1), 1)


def format_cpulist(cpus: Iterable[int]) -> str:
    """Format CPUs as the shortest "a-b,c" list."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def cpumask_hex(cpus: Iterable[int]) -> str:
    """Hex bit mask of CPUs, as llama.cpp's --cpu-mask and systemd want it."""
    mask = 0
    for cpu in cpus:
        mask |= 1 << cpu
    return f"{mask:x}"
