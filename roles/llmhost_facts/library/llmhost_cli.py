#!/usr/bin/python
"""Ansible module: run one llmhost CLI action and report `changed` from what Docker holds
before and after it (image IDs, or the compose file and the project's containers)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: llmhost_cli
short_description: Run an llmhost action (build, deploy) with a truthful changed status
description:
  - Runs C(CLI --config CONFIG ARGV...) on the target when O(run) is true.
  - C(changed) compares a probe of Docker's state before and after the command, so a build
    that Docker's cache turned into the same image, or a deploy that recreated nothing, is
    reported unchanged.
  - In check mode nothing runs; C(changed) is O(run).
options:
  cli:
    description: Path of the llmhost executable.
    type: path
    required: true
  config:
    description: llmhost.yaml to pass as C(--config).
    type: path
    required: true
  argv:
    description: Arguments after C(llmhost --config CONFIG).
    type: list
    elements: str
    required: true
  run:
    description: Whether the action is needed at all.
    type: bool
    default: true
  probe:
    description: What to compare before and after.
    type: str
    choices: [images, project, none]
    default: none
  images:
    description: Image tags for O(probe=images).
    type: list
    elements: str
    default: []
  project:
    description: Compose project for O(probe=project).
    type: str
  compose_file:
    description: The project's compose file for O(probe=project).
    type: path
  timeout:
    description: Seconds the command may run.
    type: int
    default: 7200
author: llmhost
"""

RETURN = r"""
before:
  description: The probe before the command.
  type: dict
  returned: always
after:
  description: The probe after the command (equal to before when nothing ran).
  type: dict
  returned: always
stdout_lines:
  description: The command's last 60 output lines.
  type: list
  returned: when the command ran
"""


def _docker(*args: str) -> str:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def probe_images(tags: list[str]) -> dict[str, str | None]:
    return {tag: _docker("image", "inspect", "-f", "{{.Id}}", tag) or None for tag in tags}


def probe_project(project: str, compose_file: str | None) -> dict[str, object]:
    digest = None
    if compose_file and os.path.isfile(compose_file):
        with open(compose_file, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
    ids = _docker("ps", "-aq", "--no-trunc", "--filter",
                  f"label=com.docker.compose.project={project}").split()
    containers = {}
    for cid in ids:
        info = _docker("inspect", "-f", "{{.Name}} {{.Image}} {{.State.Status}}", cid).split()
        if len(info) == 3:
            containers[info[0].lstrip("/")] = {"id": cid, "image": info[1], "state": info[2]}
    return {"compose_sha256": digest, "containers": containers}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cli": {"type": "path", "required": True},
            "config": {"type": "path", "required": True},
            "argv": {"type": "list", "elements": "str", "required": True},
            "run": {"type": "bool", "default": True},
            "probe": {"type": "str", "choices": ["images", "project", "none"], "default": "none"},
            "images": {"type": "list", "elements": "str", "default": []},
            "project": {"type": "str"},
            "compose_file": {"type": "path"},
            "timeout": {"type": "int", "default": 7200},
        },
        required_if=[("probe", "project", ("project",))],
        supports_check_mode=True,
    )
    p = module.params

    def probe() -> dict:
        if p["probe"] == "images":
            return probe_images(p["images"])
        if p["probe"] == "project":
            return probe_project(p["project"], p["compose_file"])
        return {}

    before = probe()
    cmd = [p["cli"], "--config", p["config"], *p["argv"]]
    if not p["run"] or module.check_mode:
        module.exit_json(changed=bool(p["run"]), before=before, after=before, cmd=cmd,
                         msg=("would run: " if p["run"] else "not needed: ") + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=p["timeout"],
                              check=False)
    except subprocess.TimeoutExpired:
        module.fail_json(msg=f"{' '.join(cmd)} ran longer than {p['timeout']} s", cmd=cmd)
    lines = (proc.stdout + proc.stderr).splitlines()[-60:]
    after = probe()
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or lines[-1:] or ["no output"]
        module.fail_json(msg=f"{' '.join(cmd[3:5])} failed (exit {proc.returncode}): {last[0]}",
                         rc=proc.returncode, cmd=cmd, stdout_lines=lines, before=before,
                         after=after)
    changed = before != after if p["probe"] != "none" else True
    module.exit_json(changed=changed, rc=0, cmd=cmd, before=before, after=after,
                     stdout_lines=lines, diff={"before": json.dumps(before, indent=2) + "\n",
                                               "after": json.dumps(after, indent=2) + "\n"})


if __name__ == "__main__":
    main()
