"""The drop-in files llmhost owns on a host, rendered from the plan (Ansible copies them)."""

from __future__ import annotations

from llmhost.actions.templates import render
from llmhost.facts.kernel import GRUB_DROPIN
from llmhost.plan.planner import Plan

SYSCTL_DROPIN = "/etc/sysctl.d/60-llmhost-hugepages.conf"
CPUAFFINITY_DROPIN = "/etc/systemd/system.conf.d/60-llmhost-cpuaffinity.conf"


def grub_cmdline(plan: Plan) -> str:
    return " ".join(f"{k}={v}" for k, v in plan.kernel_params.items())


def host_files(plan: Plan) -> dict[str, str]:
    """Path -> exact content of each llmhost drop-in for this plan."""
    cores = plan.cores
    return {
        GRUB_DROPIN: render(
            "host/grub-llmhost.cfg.j2",
            hostname=plan.hostname,
            inference=cores.inference_cpulist,
            cmdline=grub_cmdline(plan),
        ),
        SYSCTL_DROPIN: render(
            "host/sysctl-hugepages.conf.j2",
            pages=plan.hugepages.pages,
            reason=plan.hugepages.reason,
        ),
        CPUAFFINITY_DROPIN: render(
            "host/systemd-cpuaffinity.conf.j2",
            inference=cores.inference_cpulist,
            housekeeping_list=" ".join(map(str, cores.housekeeping_cpus)),
        ),
    }
