"""Ansible host_vars from a Plan: roles read decisions, they never re-derive them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmhost.facts import to_jsonable
from llmhost.host_files import host_files
from llmhost.plan import Plan
from llmhost.untrusted import check_hostname


def host_vars(plan: Plan) -> dict[str, Any]:
    """Role-prefixed variables (geerlingguy style) plus the whole plan for reference."""
    return {
        "hugepages_2m_pages": plan.hugepages.pages,
        "cpu_isolation_inference_cpus": plan.cores.inference_cpulist,
        "cpu_isolation_housekeeping_cpus": plan.cores.housekeeping_cpulist,
        "cpu_isolation_kernel_params": dict(plan.kernel_params),
        "llmhost_profile": plan.profile,
        "llmhost_host_files": host_files(plan),
        "llmhost_plan": to_jsonable(plan),
    }


def write_host_vars(plan: Plan, dest: Path) -> Path:
    """Write to `dest` (a file), or to `dest/<hostname>.yml` when `dest` is a directory."""
    import yaml

    if dest.is_dir() or not dest.suffix:
        # The hostname may come from a snapshot: a plain hostname cannot name another directory.
        dest = dest / f"{check_hostname(plan.hostname, 'the plan hostname')}.yml"
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by `llmhost plan --write-inventory`; re-run it rather than editing.\n"
    text += yaml.safe_dump(host_vars(plan), sort_keys=False, default_flow_style=False)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(dest)
    return dest
