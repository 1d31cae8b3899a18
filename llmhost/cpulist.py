"""Linux CPU list syntax ("0-3,8,10-11"), as used by sysfs and the kernel command line."""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpulist(text: str | None) -> tuple[int, ...]:
    """Parse "0-3,8" (optionally with ":stride" ranges or flag prefixes) into sorted CPUs."""
    if not text:
        return ()
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part or not part[0].isdigit():
            continue  # isolcpus flags such as "domain" or "managed_irq"
        span, _, stride_text = part.partition(":")
        start_text, _, end_text = span.partition("-")
        start = int(start_text)
        end = int(end_text) if end_text else start
        stride = int(stride_text.split("/")[0]) if stride_text else 1
        cpus.update(range(start, end + 1, max(stride, 1)))
    return tuple(sorted(cpus))


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
