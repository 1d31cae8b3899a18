#!/usr/bin/python
"""Ansible module: merge keys into Docker's daemon.json, keeping every other key the user set.

Overwriting daemon.json wiped users' settings in other roles; this merges instead, writes only
when the parsed content changes, and says whether dockerd can just reload (SIGHUP) the change.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_daemon_json
short_description: Deep-merge settings into /etc/docker/daemon.json
description:
  - Mappings merge key by key, recursively; any other value replaces the old one; a null value
    removes the key. Keys not named in O(merge) are kept as they are.
  - The file is rewritten only when its parsed content changes. A file that is not valid JSON
    is never overwritten: the module fails and says so.
  - C(restart_needed) is false when every changed top-level key is one dockerd reloads on
    SIGHUP (runtimes, default-runtime, labels, debug, ...).
  - Before the new content replaces the file, O(validate_command) checks it (C(dockerd
    --validate), Docker 23 and later; skipped, and C(validated) false, where the installed
    dockerd has no --validate). A refused file changes nothing.
  - The replaced file is kept beside it (C(daemon.json.<pid>.<date>~)); C(backup_file) names it.
options:
  path:
    description: daemon.json to edit.
    type: path
    default: /etc/docker/daemon.json
  merge:
    description: Settings to merge in.
    type: dict
    required: true
  validate_command:
    description: >-
      Command that checks a candidate file, its path appended; empty to skip. Skipped too when
      the command's first word is dockerd and that dockerd does not offer --validate.
    type: list
    elements: str
    default: [dockerd, --validate, --config-file]
author: llmhost
"""

RETURN = r"""
changed_keys:
  description: Top-level keys whose value changed.
  type: list
  returned: always
restart_needed:
  description: Whether a changed key needs a dockerd restart rather than a reload.
  type: bool
  returned: always
content:
  description: The merged settings.
  type: dict
  returned: always
validated:
  description: Whether O(validate_command) checked the new file before it replaced the old.
  type: bool
  returned: when the file was written
backup_file:
  description: Where the replaced daemon.json was kept.
  type: str
  returned: when an existing file was replaced
"""

# Keys dockerd's Reload applies on SIGHUP (moby daemon/reload.go); anything else needs a restart.
RELOADABLE = frozenset({
    "runtimes", "default-runtime", "debug", "labels", "live-restore",
    "max-concurrent-downloads", "max-concurrent-uploads", "max-download-attempts",
    "shutdown-timeout", "insecure-registries", "registry-mirrors",
})


def deep_merge(current: dict, changes: dict) -> dict:
    merged = copy.deepcopy(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(data: dict) -> str:
    return json.dumps(data, indent=2) + "\n"


def main() -> None:
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "default": "/etc/docker/daemon.json"},
                       "merge": {"type": "dict", "required": True},
                       "validate_command": {"type": "list", "elements": "str",
                                            "default": ["dockerd", "--validate",
                                                        "--config-file"]}},
        supports_check_mode=True,
    )
    path = module.params["path"]
    text = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    try:
        current = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as exc:
        module.fail_json(msg=f"{path} is not valid JSON ({exc}); it was left untouched: fix it "
                             "by hand, then run again")
    if not isinstance(current, dict):
        module.fail_json(msg=f"{path} holds a JSON {type(current).__name__}, not an object; "
                             "it was left untouched")
    merged = deep_merge(current, module.params["merge"])
    changed_keys = sorted(k for k in set(current) | set(merged) if current.get(k) != merged.get(k))
    result = {"path": path, "changed_keys": changed_keys, "content": merged,
              "restart_needed": any(k not in RELOADABLE for k in changed_keys)}
    if not changed_keys:
        module.exit_json(changed=False, **result)
    result["diff"] = {"before": text or "", "after": render(merged),
                      "before_header": path, "after_header": path}
    if not module.check_mode:
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, mode=0o755, exist_ok=True)
        mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else 0o644
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".daemon.json.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(render(merged))
            os.chmod(tmp, mode)
            result["validated"] = _validate(module, module.params["validate_command"], tmp, path)
            if text is not None:
                result["backup_file"] = module.backup_local(path)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    module.exit_json(changed=True, **result)


def _validate(module: AnsibleModule, command: list[str], candidate: str, path: str) -> bool:
    """Run the validate command on the candidate file; fail (nothing changed) if it refuses.
    False when there is no validator to run."""
    if not command:
        return False
    binary = module.get_bin_path(command[0])
    if binary is None:
        return False
    if os.path.basename(command[0]) == "dockerd":
        rc, out, err = module.run_command([binary, "--help"])
        if "--validate" not in out + err:
            return False  # dockerd before 23.0
    rc, out, err = module.run_command([binary, *command[1:], candidate])
    if rc != 0:
        why = " | ".join((err or out).strip().splitlines()[-3:])
        module.fail_json(msg=f"{' '.join(command)} refused the new {path} (exit {rc}): {why}; "
                             f"{path} was left as it was")
    return True


if __name__ == "__main__":
    main()
