#!/usr/bin/python
"""Ansible module: set a hugepage pool at runtime and report how many pages the kernel granted.

The kernel grants fewer pages than asked when free memory is fragmented; that is reported
(`shortfall`), never hidden, after one round of cache dropping and compaction if allowed.
"""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_hugepages
short_description: Reserve a hugepage pool now and read back what the kernel granted
description:
  - Writes O(pages) to C(/sys/kernel/mm/hugepages/hugepages-<page_kb>kB/nr_hugepages) and reads
    it back. Reports C(changed) only when the pool size changed.
  - On a shortfall, optionally drops clean caches and compacts memory, then asks once more.
  - In check mode nothing is written.
options:
  pages:
    description: Wanted pool size in pages.
    type: int
    required: true
  page_kb:
    description: Page size in KiB (the plan's, C(llmhost_facts_plan.hugepages.page_kb)).
    type: int
    required: true
  compact:
    description: On a shortfall, drop caches and compact memory, then retry once.
    type: bool
    default: true
  root:
    description: Filesystem root that holds C(/sys) and C(/proc) (tests use a copy).
    type: path
    default: /
author: llmhost
"""

RETURN = r"""
before:
  description: Pool size before the module ran.
  type: int
  returned: always
requested:
  description: O(pages).
  type: int
  returned: always
granted:
  description: Pool size the kernel reports afterwards (the planned size in check mode).
  type: int
  returned: always
shortfall:
  description: requested - granted, when positive.
  type: int
  returned: always
actions:
  description: What was done (or would be, in check mode).
  type: list
  returned: always
"""


def _read_int(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip() or 0)


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as handle:
        handle.write(value + "\n")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pages": {"type": "int", "required": True},
            "page_kb": {"type": "int", "required": True},
            "compact": {"type": "bool", "default": True},
            "root": {"type": "path", "default": "/"},
        },
        supports_check_mode=True,
    )
    pages, page_kb, root = module.params["pages"], module.params["page_kb"], module.params["root"]
    if pages < 0:
        module.fail_json(msg=f"pages must be 0 or more (got {pages})")
    pool = os.path.join(root, f"sys/kernel/mm/hugepages/hugepages-{page_kb}kB/nr_hugepages")
    if not os.path.exists(pool):
        module.fail_json(msg=f"the kernel has no {page_kb} KiB hugepage pool ({pool} is missing: "
                             "CONFIG_HUGETLBFS off, or that size unsupported)")
    before = _read_int(pool)
    result = {"before": before, "requested": pages, "granted": before, "shortfall": 0,
              "actions": [], "pool": pool}
    if before == pages:
        module.exit_json(changed=False, **result)
    result["actions"].append(f"set {pool} {before} -> {pages}")
    result["diff"] = {"before": f"nr_hugepages ({page_kb} kB) = {before}\n",
                      "after": f"nr_hugepages ({page_kb} kB) = {pages}\n"}
    if module.check_mode:
        module.exit_json(changed=True, **dict(result, granted=pages))
    try:
        _write(pool, str(pages))
        granted = _read_int(pool)
        if granted < pages and module.params["compact"]:
            os.sync()
            _write(os.path.join(root, "proc/sys/vm/drop_caches"), "3")
            _write(os.path.join(root, "proc/sys/vm/compact_memory"), "1")
            result["actions"].append("dropped caches and compacted memory, then asked again")
            _write(pool, str(pages))
            granted = _read_int(pool)
    except OSError as exc:
        module.fail_json(msg=f"cannot set {pool}: {exc}", **result)
    result.update(granted=granted, shortfall=max(pages - granted, 0))
    result["diff"]["after"] = f"nr_hugepages ({page_kb} kB) = {granted}\n"
    module.exit_json(changed=granted != before, **result)


if __name__ == "__main__":
    main()
