"""Run ansible-playbook / ansible-lint from the repository, read recaps, fingerprint the host.

The host fingerprint covers every path the roles manage, the live hugepage pool, hugetlbfs
mounts and the Docker objects llmhost owns: equal fingerprints mean the run changed nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
ROLE_NAMES = ("llmhost_facts", "hugepages", "cpu_isolation", "docker", "nvidia_container_toolkit",
              "llmhost_images", "llmhost_services", "llmhost_validation")  # fmt: skip

# Every path a role writes (files and directories, walked recursively).
MANAGED_PATHS = (
    "/etc/llmhost",
    "/opt/llmhost",
    "/etc/sysctl.d",
    "/etc/default/grub",
    "/etc/default/grub.d",
    "/boot/grub",
    "/etc/systemd/system.conf.d",
    "/etc/docker",
    "/etc/fstab",
    "/etc/apt/sources.list.d",
    "/etc/apt/keyrings",
    "/var/lib/dpkg/status",
    "/usr/local/bin/llmhost",
    "/usr/local/lib/docker/cli-plugins",
    "/var/lib/llmhost",
    "/var/run/reboot-required",
    "/var/run/reboot-required.pkgs",
)
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)"
    r"\s+ignored=(?P<ignored>\d+)",
    re.M,
)


@dataclass
class Run:
    args: tuple[str, ...]
    rc: int
    output: str
    seconds: float

    @property
    def recap_line(self) -> str:
        lines = [m.group(0) for m in RECAP.finditer(self.output)]
        return lines[-1] if lines else "(no recap)"

    @property
    def recap(self) -> dict[str, int]:
        match = list(RECAP.finditer(self.output))
        if not match:
            raise AssertionError(f"no PLAY RECAP in the output:\n{self.tail()}")
        return {k: int(v) for k, v in match[-1].groupdict().items() if k != "host"}

    @property
    def recaps(self) -> dict[str, dict[str, int]]:
        """Per host, from the last PLAY RECAP (several hosts: an inventory of guests)."""
        if "PLAY RECAP" not in self.output:
            raise AssertionError(f"no PLAY RECAP in the output:\n{self.tail()}")
        section = self.output[self.output.rindex("PLAY RECAP"):]
        return {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
                for m in RECAP.finditer(section)}  # fmt: skip

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported changed (default callback output)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                names.append(current)
        return names


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLMHOST_CONFIG", "LLMHOST_STATE_DIR", "ANSIBLE_"))}  # fmt: skip
    # JSON results print each message on one line, so tests can search them.
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PYTHONUNBUFFERED="1",
               ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    env.update(extra or {})
    return env


def ansible_playbook(playbook: str | Path, *args: str, extra_vars: dict[str, Any] | None = None,
                     vars_file: Path | None = None, env: dict[str, str] | None = None,
                     timeout: float = 3600,
                     on_line: Callable[[str], None] | None = None) -> Run:  # fmt: skip
    """ansible-playbook from the repository root (its ansible.cfg and local inventory).
    With `on_line`, every output line is handed to it as it is printed (to act mid-run)."""
    cmd = [sys.executable, "-m", "ansible.cli.playbook", str(playbook), *args]
    if vars_file is not None:
        cmd += ["-e", f"@{vars_file}"]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    start = time.monotonic()
    if on_line is None:
        proc = subprocess.run(cmd, cwd=REPO, env=_env(env), capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
        return Run(tuple(cmd[3:]), proc.returncode, proc.stdout + proc.stderr,
                   time.monotonic() - start)
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=REPO, env=_env(env), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as stream:  # fmt: skip
        assert stream.stdout is not None
        for line in stream.stdout:
            lines.append(line)
            on_line(line)
            if time.monotonic() - start > timeout:
                stream.kill()
        rc = stream.wait()
    return Run(tuple(cmd[3:]), rc, "".join(lines), time.monotonic() - start)


def logged_playbook(playbook: str | Path, *args: str, log: Path,
                    on_line: Callable[[str], None] | None = None, **kwargs: Any) -> Run:
    """ansible_playbook with every output line also written to `log`, prefixed by the seconds
    since the start: what task_seconds reads."""
    start = time.monotonic()
    with log.open("w") as out:

        def line(text: str) -> None:
            out.write(f"{time.monotonic() - start:8.1f} {text}")
            out.flush()
            if on_line is not None:
                on_line(text)

        return ansible_playbook(playbook, *args, on_line=line, **kwargs)


def task_seconds(log: Path) -> list[tuple[str, float]]:
    """(task, seconds from its header to the next one), slowest first, from a timestamped log."""
    spans, task, began = [], None, 0.0
    for entry in log.read_text().splitlines():
        second, _, text = entry.strip().partition(" ")
        if text.startswith(("TASK [", "RUNNING HANDLER [", "PLAY [", "PLAY RECAP")):
            if task is not None:
                spans.append((task, round(float(second) - began, 1)))
            task, began = text.rstrip("* "), float(second)
    return sorted(spans, key=lambda span: -span[1])


def run_module(module: str, args: dict[str, Any], tmp: Path, *, library: Path,
               check: bool = False, diff: bool = False) -> dict[str, Any]:
    """Run one module of a role's library/ through a real ansible-playbook; return its result
    (with `_rc`, the playbook's exit status, and `_output`, everything it printed)."""
    playbook = tmp / f"module-{module}-{time.monotonic_ns()}.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": f"Run {module}", "hosts": "localhost", "gather_facts": False,
        "tasks": [{"name": "Under test", module: args, "register": "result",
                   "ignore_errors": True},
                  {"name": "Show the result", "ansible.builtin.debug": {"var": "result"}}],
    }]))  # fmt: skip
    flags = (["--check"] if check else []) + (["--diff"] if diff else [])
    run = ansible_playbook(playbook, "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", *flags,
                           env={"ANSIBLE_LIBRARY": str(library),
                                # the role's module_utils, as a play of the role would see it
                                "ANSIBLE_MODULE_UTILS": str(library.parent / "module_utils"),
                                "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})  # fmt: skip
    try:
        shown = run.output[run.output.index("TASK [Show the result]"):]
        data, _ = json.JSONDecoder().raw_decode(shown[shown.index("{"):])
    except ValueError:
        raise AssertionError(f"no result from ansible-playbook:\n{run.tail()}") from None
    result = data["result"]
    result["_rc"], result["_output"] = run.rc, run.output
    return result


# ---------------------------------------------------------------- the host's fingerprint


def _walk(path: Path, out: dict[str, str]) -> None:
    if path.is_symlink():
        out[str(path)] = "link:" + os.readlink(path)
    elif path.is_file():
        out[str(path)] = "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    elif path.is_dir():
        out[str(path)] = "dir"
        for child in sorted(path.iterdir()):
            _walk(child, out)


def _docker(*args: str) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else f"<docker {args[0]} failed>"


def host_state(project: str | None = None,
               images: tuple[str, ...] = ("llmhost/llama-cpu:latest",)) -> dict[str, str]:
    """Everything a role may change, as strings: compare two of these to prove nothing changed.
    Docker objects: the planned images and the project's containers (other llmhost/* images
    belong to other tests)."""
    state: dict[str, str] = {}
    for root in MANAGED_PATHS:
        _walk(Path(root), state)
    state["sysctl vm.nr_hugepages"] = Path("/proc/sys/vm/nr_hugepages").read_text().strip()
    state["mounts hugetlbfs"] = "\n".join(
        line for line in Path("/proc/mounts").read_text().splitlines() if " hugetlbfs " in line
    )
    for image in images:
        state[f"docker image {image}"] = _docker("image", "inspect", "-f", "{{.Id}}", image)
    if project:
        state["docker containers"] = _docker(
            "ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}",
            "--format", "{{.ID}} {{.Image}} {{.State}}",
        )
    return state


def state_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k, '<absent>')} -> {after.get(k, '<absent>')}" for k in keys
            if before.get(k) != after.get(k)]  # fmt: skip


def role_file(role: str, rel: str) -> Any:
    return yaml.safe_load((ROLES / role / rel).read_text())
