#!/usr/bin/python
"""Ansible module: put llmhost's GRUB drop-in in place and regenerate grub.cfg only when needed.

Plans the actions first (write the drop-in, run update-grub), returns them, and in check mode
stops there. A drop-in whose content no longer matches the checksum llmhost wrote into it was
edited by hand: it is reported and left alone unless `force` is set.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llmhost_kernel_cmdline import parse_cmdline

DOCUMENTATION = r"""
module: llmhost_grub_dropin
short_description: Manage llmhost's /etc/default/grub.d drop-in and the reboot it implies
description:
  - Writes O(content) (rendered by C(llmhost plan --host-files)) plus a checksum line to O(path),
    then runs the GRUB config generator when the drop-in changed or is newer than O(grub_cfg).
  - Hosts without GRUB (no O(grub_defaults), or no generator command) are reported, not changed.
  - C(reboot_required) is true when the running kernel (O(cmdline)) lacks a parameter of
    O(params) and the drop-in that carries them is in place.
  - A drop-in it replaces is kept beside it (C(99-llmhost.cfg.<pid>.<date>~), which GRUB's
    C(*.cfg) glob does not read); C(backup_file) names it.
  - In check mode nothing is written or run; C(actions) lists what would be done.
options:
  path:
    description: The drop-in llmhost owns.
    type: path
    default: /etc/default/grub.d/99-llmhost.cfg
  content:
    description: The drop-in's content as llmhost renders it.
    type: str
    required: true
  params:
    description: The kernel parameters the content sets (the plan's C(kernel_params)).
    type: dict
    required: true
  force:
    description: Replace a hand-edited drop-in.
    type: bool
    default: false
  grub_defaults:
    description: GRUB's main defaults file; without it the host is treated as GRUB-less.
    type: path
    default: /etc/default/grub
  grub_cfg:
    description: The generated GRUB configuration.
    type: path
    default: /boot/grub/grub.cfg
  mkconfig_command:
    description:
      - Command that regenerates O(grub_cfg). Empty means C(update-grub) when installed, else
        C(grub-mkconfig -o GRUB_CFG) or C(grub2-mkconfig -o GRUB_CFG).
    type: str
    default: ""
  cmdline:
    description: Where the running kernel's command line is read.
    type: path
    default: /proc/cmdline
author: llmhost
"""

RETURN = r"""
grub_present:
  description: Whether GRUB was found.
  type: bool
  returned: always
dropin_state:
  description: absent, current, outdated (written by llmhost, replaced), hand_edited, or no_grub.
  type: str
  returned: always
actions:
  description: Actions run (or planned, in check mode).
  type: list
  returned: always
reboot_required:
  description: The next boot changes the kernel command line.
  type: bool
  returned: always
pending_params:
  description: Planned parameters the running kernel does not have.
  type: dict
  returned: always
backup_file:
  description: Where the replaced drop-in was kept.
  type: str
  returned: when a drop-in was replaced
"""

MARKER = "# llmhost-sha256: "


def with_marker(content: str) -> str:
    body = content if content.endswith("\n") else content + "\n"
    return body + MARKER + hashlib.sha256(body.encode()).hexdigest() + "\n"


def written_by_llmhost(text: str) -> bool:
    """True when the last line is our checksum of everything above it (nobody edited it)."""
    body, _, last = text.rstrip("\n").rpartition("\n")
    if not last.startswith(MARKER):
        return False
    return hashlib.sha256((body + "\n").encode()).hexdigest() == last[len(MARKER):].strip()


def mkconfig(command: str, grub_cfg: str) -> list[str] | None:
    if command:
        argv = shlex.split(command)
        return argv if shutil.which(argv[0]) else None
    if shutil.which("update-grub"):
        return ["update-grub"]
    for name in ("grub-mkconfig", "grub2-mkconfig"):
        if shutil.which(name):
            return [name, "-o", grub_cfg]
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write_atomic(path: str, text: str) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".llmhost-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/default/grub.d/99-llmhost.cfg"},
            "content": {"type": "str", "required": True},
            "params": {"type": "dict", "required": True},
            "force": {"type": "bool", "default": False},
            "grub_defaults": {"type": "path", "default": "/etc/default/grub"},
            "grub_cfg": {"type": "path", "default": "/boot/grub/grub.cfg"},
            "mkconfig_command": {"type": "str", "default": ""},
            "cmdline": {"type": "path", "default": "/proc/cmdline"},
        },
        supports_check_mode=True,
    )
    p = module.params
    planned = {str(k): str(v) for k, v in p["params"].items()}
    live = parse_cmdline(_read(p["cmdline"]) or "")
    pending = {k: v for k, v in planned.items() if live.get(k) != v}
    command = mkconfig(p["mkconfig_command"], p["grub_cfg"])
    result = {"dropin": p["path"], "actions": [], "pending_params": pending,
              "planned_cmdline": " ".join(f"{k}={v}" for k, v in planned.items())}
    if not os.path.isfile(p["grub_defaults"]) or command is None:
        why = (f"{p['grub_defaults']} is missing" if not os.path.isfile(p["grub_defaults"])
               else "no update-grub / grub-mkconfig command")
        module.exit_json(changed=False, grub_present=False, dropin_state="no_grub",
                         reboot_required=False,
                         msg=f"no GRUB on this host ({why}): boot parameters not written; add "
                             f"'{result['planned_cmdline']}' to this host's boot loader by hand",
                         **result)
    desired = with_marker(p["content"])
    current = _read(p["path"])
    if current == desired:
        state = "current"
    elif current is None:
        state = "absent"
    elif written_by_llmhost(current):
        state = "outdated"
    else:
        state = "hand_edited"
    write = state in ("absent", "outdated") or (state == "hand_edited" and p["force"])
    if state == "hand_edited" and not p["force"]:
        module.warn(f"{p['path']} was edited by hand (its content no longer matches the checksum "
                    "llmhost wrote): left as it is. Remove it, or set cpu_isolation_force: true, "
                    "to write the planned parameters")
        module.exit_json(changed=False, grub_present=True, dropin_state=state, hand_edited=True,
                         reboot_required=False, **result)
    cfg_mtime = os.path.getmtime(p["grub_cfg"]) if os.path.exists(p["grub_cfg"]) else None
    stale = current is not None and (cfg_mtime is None or os.path.getmtime(p["path"]) > cfg_mtime)
    if write:
        result["actions"].append(f"write {p['path']}")
        result["diff"] = {"before": current or "", "after": desired,
                          "before_header": p["path"], "after_header": p["path"]}
    if write or stale:
        result["actions"].append("run " + " ".join(command))
    in_place = write or state == "current"
    reboot = in_place and bool(pending)
    if module.check_mode or not result["actions"]:
        module.exit_json(changed=bool(result["actions"]), grub_present=True, dropin_state=state,
                         hand_edited=state == "hand_edited", reboot_required=reboot, **result)
    if write:
        if current is not None:  # the replaced drop-in stays beside it (99-llmhost.cfg.*~)
            result["backup_file"] = module.backup_local(p["path"])
        _write_atomic(p["path"], desired)
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        module.fail_json(msg=f"{' '.join(command)} failed (exit {proc.returncode}): "
                             + " | ".join(tail), dropin_state=state, **result)
    module.exit_json(changed=True, grub_present=True, dropin_state=state,
                     hand_edited=state == "hand_edited", reboot_required=reboot, **result)


if __name__ == "__main__":
    main()
