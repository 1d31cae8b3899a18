#!/usr/bin/python
"""Ansible module: put every CPU that has cpufreq on one scaling governor (runtime setting)."""

from __future__ import annotations

import os
import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_cpu_governor
short_description: Set the cpufreq scaling governor of every CPU that has one
description:
  - Hosts without cpufreq (most VMs, firmware-controlled CPUs) are reported, not changed.
  - CPUs whose driver does not offer O(governor) are listed in C(unavailable).
  - In check mode nothing is written.
options:
  governor:
    description: Wanted governor.
    type: str
    default: performance
  root:
    description: Filesystem root that holds C(/sys) (tests use a copy).
    type: path
    default: /
author: llmhost
"""

RETURN = r"""
cpufreq:
  description: Whether any CPU has cpufreq.
  type: bool
  returned: always
changed_cpus:
  description: CPUs switched to O(governor) (or that would be, in check mode).
  type: list
  returned: always
unavailable:
  description: CPUs whose driver does not offer O(governor).
  type: list
  returned: always
"""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={"governor": {"type": "str", "default": "performance"},
                       "root": {"type": "path", "default": "/"}},
        supports_check_mode=True,
    )
    governor = module.params["governor"]
    base = os.path.join(module.params["root"], "sys/devices/system/cpu")
    cpus = sorted((int(m.group(1)) for m in map(re.compile(r"cpu(\d+)$").match,
                                                 os.listdir(base) if os.path.isdir(base) else [])
                   if m), key=int)
    changed, unavailable, seen = [], [], 0
    before, after = [], []
    for cpu in cpus:
        freq = os.path.join(base, f"cpu{cpu}", "cpufreq")
        current = _read(os.path.join(freq, "scaling_governor"))
        if current is None:
            continue
        seen += 1
        offered = (_read(os.path.join(freq, "scaling_available_governors")) or current).split()
        if current == governor:
            continue
        if governor not in offered:
            unavailable.append(cpu)
            continue
        changed.append(cpu)
        before.append(f"cpu{cpu}: {current}\n")
        after.append(f"cpu{cpu}: {governor}\n")
        if not module.check_mode:
            try:
                with open(os.path.join(freq, "scaling_governor"), "w", encoding="ascii") as out:
                    out.write(governor + "\n")
            except OSError as exc:
                module.fail_json(msg=f"cannot set cpu{cpu}'s governor to {governor}: {exc}")
    if not seen:
        module.exit_json(changed=False, cpufreq=False, changed_cpus=[], unavailable=[],
                         msg="no cpufreq on this host (VM or firmware-controlled): "
                             "governor left alone")
    if unavailable:
        module.warn(f"CPUs {unavailable} do not offer the {governor} governor")
    module.exit_json(changed=bool(changed), cpufreq=True, changed_cpus=changed,
                     unavailable=unavailable,
                     diff={"before": "".join(before), "after": "".join(after)})


if __name__ == "__main__":
    main()
