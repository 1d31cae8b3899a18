#!/usr/bin/python
"""Ansible module: write a file llmhost owns from given content, in one remote step.

`copy` with `content` runs two modules on the target (a stat, then copy or file); on a slow
target (a VM under emulation, a Raspberry Pi) each costs seconds. This one compares, writes
atomically and sets the attributes in a single run, and creates missing parent directories.
"""

from __future__ import annotations

import os
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_file
short_description: Write a file from content in one step (idempotent, atomic, diff, check mode)
description:
  - Writes O(content) to O(path) when the file is missing or differs, atomically (a temporary
    file in the same directory, then a rename), and sets the common file attributes (mode,
    owner, group) when they differ.
  - Creates missing parent directories (mode 0755, owned by root).
  - With O(backup), a file that is replaced keeps its previous content beside it, as C(copy)
    does (C(path.<pid>.<date>~)); the returned C(backup_file) names it.
  - Check mode reports what would change and writes nothing; C(--diff) shows the content.
    Use C(diff: false) and C(no_log) for content that holds a secret.
options:
  path:
    description: Absolute path of the file.
    type: path
    required: true
  content:
    description: The whole content of the file.
    type: str
    required: true
  backup:
    description: Keep the replaced file's content beside it.
    type: bool
    default: false
extends_documentation_fragment: [files]
author: llmhost
"""

RETURN = r"""
backup_file:
  description: Where the replaced content was kept.
  type: str
  returned: when a file was replaced with O(backup)
"""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return "\ufffd (not UTF-8 text)"


def _missing_parents(path: str) -> list[str]:
    """Parent directories that do not exist yet, outermost first."""
    missing, parent = [], os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    return missing[::-1]


def main() -> None:
    module = AnsibleModule(
        argument_spec={"path": {"type": "path", "required": True},
                       "content": {"type": "str", "required": True},
                       "backup": {"type": "bool", "default": False}},
        add_file_common_args=True,
        supports_check_mode=True,
    )  # fmt: skip
    path, content = module.params["path"], module.params["content"]
    if not os.path.isabs(path):
        module.fail_json(msg=f"path must be absolute: {path}")
    if os.path.isdir(path):
        module.fail_json(msg=f"{path} is a directory")
    before = _read(path)
    changed = before != content
    result: dict = {"path": path, "changed": changed}
    if module._diff:
        result["diff"] = {"before_header": path, "after_header": path,
                          "before": before or "", "after": content}  # fmt: skip
    if module.check_mode:
        if not changed and os.path.exists(path):
            file_args = module.load_file_common_arguments(module.params)
            result["changed"] = module.set_fs_attributes_if_different(file_args, False)
        module.exit_json(**result)

    for directory in _missing_parents(path):
        os.mkdir(directory, 0o755)
    file_args = module.load_file_common_arguments(module.params)
    if changed:
        if before is not None and module.params["backup"]:
            result["backup_file"] = module.backup_local(path)
        # The new content is private (mkstemp: 0600) until it has its final attributes: the
        # old file's when none are asked for, else the ones asked for; then one rename.
        fd, scratch = tempfile.mkstemp(prefix=".llmhost-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            if before is not None:
                st = os.stat(path)
                os.chown(scratch, st.st_uid, st.st_gid)
                if file_args["mode"] is None:
                    os.chmod(scratch, stat.S_IMODE(st.st_mode))
            elif file_args["mode"] is None:
                umask = os.umask(0)
                os.umask(umask)
                os.chmod(scratch, 0o666 & ~umask)
            module.set_fs_attributes_if_different({**file_args, "path": scratch}, False)
            os.replace(scratch, path)
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
    result["changed"] = module.set_fs_attributes_if_different(file_args, changed)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
