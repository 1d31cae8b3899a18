"""Kernel release, the boot parameters that matter for isolation/hugepages, and their effect."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from llmhost.cpulist import parse_cpulist
from llmhost.facts.kernel_cmdline import parse_cmdline
from llmhost.facts.sources import Source

TRACKED_PARAMS: tuple[str, ...] = (
    "isolcpus",
    "nohz_full",
    "rcu_nocbs",
    "irqaffinity",
    "hugepages",
    "hugepagesz",
    "default_hugepagesz",
    "transparent_hugepage",
)
# The GRUB drop-in llmhost owns; its presence with values not on /proc/cmdline = pending reboot.
GRUB_DROPIN = "/etc/default/grub.d/99-llmhost.cfg"
GRUB_DROPIN_VAR = "LLMHOST_CMDLINE"


@dataclass(frozen=True)
class KernelFacts:
    release: str
    cmdline: str
    params: dict[str, str]
    isolated_cpus: tuple[int, ...]
    nohz_full_cpus: tuple[int, ...]
    governors: dict[str, tuple[int, ...]]
    grub_dropin_params: dict[str, str] | None
    reboot_required_flag: bool

    @property
    def pending_params(self) -> dict[str, str]:
        """Parameters llmhost wrote for the next boot that the running kernel lacks."""
        if not self.grub_dropin_params:
            return {}
        return {k: v for k, v in self.grub_dropin_params.items() if self.params.get(k) != v}


def tracked(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k in TRACKED_PARAMS}


def parse_grub_dropin(text: str | None) -> dict[str, str] | None:
    """The parameters in llmhost's drop-in line `LLMHOST_CMDLINE="..."`."""
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(f"{GRUB_DROPIN_VAR}="):
            value = shlex.split(line.partition("=")[2])
            return parse_cmdline(value[0] if value else "")
    return {}


def _governors(source: Source) -> dict[str, tuple[int, ...]]:
    by_governor: dict[str, list[int]] = {}
    for name in source.list_dir("/sys/devices/system/cpu") or []:
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        text = source.read_text(f"/sys/devices/system/cpu/{name}/cpufreq/scaling_governor")
        if text:
            by_governor.setdefault(text.strip(), []).append(int(name[3:]))
    return {g: tuple(sorted(c)) for g, c in sorted(by_governor.items())}


def _cpus(source: Source, path: str) -> tuple[int, ...]:
    return parse_cpulist(source.read_text(path), path)


def gather_kernel(source: Source) -> KernelFacts:
    cmdline = (source.read_text("/proc/cmdline") or "").strip()
    params = parse_cmdline(cmdline)
    return KernelFacts(
        release=(source.read_text("/proc/sys/kernel/osrelease") or "unknown").strip(),
        cmdline=cmdline,
        params=tracked(params),
        isolated_cpus=_cpus(source, "/sys/devices/system/cpu/isolated"),
        nohz_full_cpus=_cpus(source, "/sys/devices/system/cpu/nohz_full"),
        governors=_governors(source),
        grub_dropin_params=parse_grub_dropin(source.read_text(GRUB_DROPIN)),
        reboot_required_flag=source.read_text("/var/run/reboot-required") is not None,
    )
