"""site.yml provisions real VMs from one inventory, in parallel, through a reboot.

The guests boot through GRUB (see guests.py), so isolcpus / nohz_full / boot-time hugepages are
proven where they take effect: on the running kernel after the roles' reboot contract.
Order matters (file order, shared guests): check mode on fresh guests -> a first run that loses
a guest midway -> the rerun with it back converges through the reboot -> a second run changes
nothing -> --limit with a hand-edited drop-in. A JSON report (per guest: kernel command line,
isolated CPUs, nohz_full and hugepages before and after; each run's recap, seconds and slowest
tasks) is written to $LLMHOST_FLEET_REPORT, default <pytest tmp>/fleet-report.json; each run's
output, every line with its second, to <pytest tmp>/fleet-<run>.log.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.support import Run, logged_playbook, task_seconds
from tests.fleet.conftest import BOOT_SECONDS, FULL
from tests.fleet.guests import Guest

pytestmark = [pytest.mark.fleet]

# The host roles only: Docker and the services are proven on the CI machine itself (tests/ansible).
SKIP_TAGS = "docker,nvidia_container_toolkit,images,services,validation"
GRUB_DROPIN = "/etc/default/grub.d/99-llmhost.cfg"
VICTIM = "guest-c"
# --limit runs on EDITED after a hand edit of its drop-in; UNTOUCHED must not change meanwhile.
EDITED, UNTOUCHED = ("guest-b", "guest-a") if FULL else ("guest-a", "guest-c")
# The victim loses power when this task starts: llmhost installed, nothing tuned yet.
POWER_OFF_AT = "TASK [hugepages : Require the llmhost_facts role to have run]"
REPORT: dict[str, Any] = {"mode": "full" if FULL else "ci", "guests": {}, "runs": {}}
# Every path the host roles write, fingerprinted inside a guest (run there with python3).
FINGERPRINT = r"""
import hashlib, json, os
out = {}
def walk(p):
    if os.path.islink(p): out[p] = "link:" + os.readlink(p)
    elif os.path.isfile(p): out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    elif os.path.isdir(p):
        out[p] = "dir"
        for c in sorted(os.listdir(p)): walk(os.path.join(p, c))
for p in ("/etc/llmhost", "/opt/llmhost", "/etc/sysctl.d", "/etc/default/grub",
          "/etc/default/grub.d", "/boot/grub/grub.cfg", "/etc/systemd/system.conf.d",
          "/usr/local/bin/llmhost", "/var/lib/llmhost", "/var/run/reboot-required"):
    walk(p)
out["vm.nr_hugepages"] = open("/proc/sys/vm/nr_hugepages").read().strip()
out["/proc/cmdline"] = open("/proc/cmdline").read().strip()
print(json.dumps(out))
"""


def _playbook(inventory: Path, name: str, *args: str,
              on_line: Callable[[str], None] | None = None, **kwargs: Any) -> Run:
    """site.yml, host roles only, recorded in the report under `name`.
    Facts are gathered once per run (smart), not once per play of site.yml."""
    log = inventory.parent / f"fleet-{name}.log"
    run = logged_playbook("site.yml", "-i", str(inventory), "--skip-tags", SKIP_TAGS, *args,
                          log=log, on_line=on_line, env={"ANSIBLE_GATHERING": "smart"},
                          timeout=2400, **kwargs)  # fmt: skip
    recap = run.recaps if "PLAY RECAP" in run.output else None
    REPORT["runs"][name] = {"rc": run.rc, "seconds": round(run.seconds, 1), "recap": recap,
                            "slowest_tasks": task_seconds(log)[:5]}  # fmt: skip
    return run


def fingerprint(guest: Guest) -> dict[str, str]:
    return json.loads(guest.ssh("sudo python3 -", input=FINGERPRINT))


def observe(guest: Guest) -> dict[str, str]:
    """What the running kernel shows: command line, isolated and nohz_full CPUs, the pool."""
    text = guest.ssh("cat /proc/cmdline /sys/devices/system/cpu/isolated "
                     "/sys/devices/system/cpu/nohz_full; grep HugePages_Total /proc/meminfo")
    cmdline, isolated, nohz, pool = text.splitlines()
    return {"cmdline": cmdline, "isolated": isolated, "nohz_full": nohz,
            "hugepages_total": pool.split()[-1]}  # fmt: skip


def doctor(guest: Guest) -> dict[str, Any]:
    text = guest.ssh("sudo /usr/local/bin/llmhost doctor --json; test $? -le 1")
    return json.loads(text)


def check(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["id"] == check_id)


@pytest.fixture(scope="module", autouse=True)
def _write_report(tmp_path_factory: pytest.TempPathFactory):
    yield
    default = tmp_path_factory.getbasetemp() / "fleet-report.json"
    path = Path(os.environ.get("LLMHOST_FLEET_REPORT") or default)
    REPORT["boot_seconds"] = {name: round(s, 1) for name, s in BOOT_SECONDS.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(REPORT, indent=2) + "\n")
    print(f"fleet report: {path}")


def test_check_mode_on_fresh_guests_changes_nothing(guests: dict[str, Guest], inventory: Path):
    before = {name: fingerprint(g) for name, g in guests.items()}
    for name, guest in guests.items():
        REPORT["guests"][name] = {"vcpus": guest.cpus, "before": observe(guest)}
    run = _playbook(inventory, "check_fresh", "--check", "--diff")
    assert run.rc == 0, run.tail()
    assert set(run.recaps) == set(guests), run.tail()
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recaps.values())
    after = {name: fingerprint(g) for name, g in guests.items()}
    for name in guests:
        changed = sorted(k for k in before[name].keys() | after[name].keys()
                         if before[name].get(k) != after[name].get(k))  # fmt: skip
        assert not changed, f"{name}: check mode changed {changed}"


def test_first_run_reports_a_guest_powered_off_midway(guests: dict[str, Guest], inventory: Path):
    victim = guests[VICTIM]
    cut: list[str] = []
    back: list[str] = []

    def pull_the_plug(line: str) -> None:
        # After llmhost is installed everywhere, as the host roles start changing things.
        if not cut and line.startswith(POWER_OFF_AT):
            victim.power_off()
            cut.append(line.strip())
        # Once the run has given the victim up it never contacts it again (asserted below), so
        # it boots for the rerun while the others finish this run.
        elif cut and not back and line.startswith(f"fatal: [{VICTIM}]"):
            victim.start()
            back.append(line)

    # Stage first, reboot later (a maintenance window): the inventory says reboot_ok.
    run = _playbook(inventory, "first_guest_lost", extra_vars={"cpu_isolation_reboot_ok": False},
                    on_line=pull_the_plug)  # fmt: skip
    REPORT["runs"]["first_guest_lost"]["powered_off_at"] = cut[0] if cut else None
    assert cut, run.tail()
    recaps = run.recaps
    assert run.rc != 0, "a lost host must fail the run"
    assert recaps[VICTIM]["unreachable"] + recaps[VICTIM]["failed"] >= 1, run.tail()
    assert f"[{VICTIM}]: UNREACHABLE!" in run.output or f"fatal: [{VICTIM}]" in run.output
    assert back, run.tail()
    given_up = run.output[run.output.index(back[0]) + len(back[0]):run.output.rindex("PLAY RECAP")]
    assert VICTIM not in _hosts_reported(given_up), "the run went back to the lost guest"
    for name in set(guests) - {VICTIM}:
        assert recaps[name]["failed"] == 0 and recaps[name]["unreachable"] == 0, run.tail()
        found = check(doctor(guests[name]), "kernel.cpu_isolation")
        REPORT["guests"][name]["doctor_before_reboot"] = found
        assert found["status"] == "warn" and found["detail"].startswith("pending reboot"), found
        state = observe(guests[name])
        REPORT["guests"][name]["staged"] = state
        assert "isolcpus=" not in state["cmdline"] and state["isolated"] == ""


def test_rerun_with_the_guest_back_converges_through_reboot(
    guests: dict[str, Guest], inventory: Path
):
    victim = guests[VICTIM]
    victim.start()
    victim.wait_ssh()
    run = _playbook(inventory, "converge_reboot")
    assert run.rc == 0, run.tail()
    assert set(run.recaps) == set(guests)
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in run.recaps.values())
    rebooted = _changed_hosts(run, "TASK [cpu_isolation : Reboot]")
    assert rebooted == set(guests), f"expected every guest rebooted, got {rebooted}"
    for name, guest in guests.items():
        report = doctor(guest)
        plan = report["plan"]
        state = observe(guest)
        REPORT["guests"][name].update(after=state, plan_kernel_params=plan["kernel_params"],
                                      doctor_after=check(report, "kernel.cpu_isolation"))
        planned = ",".join(str(c) for c in plan["cores"]["inference_cpus"])
        for key, value in plan["kernel_params"].items():
            assert f"{key}={value}" in state["cmdline"].split(), (name, state)
        assert _cpus(state["isolated"]) == _cpus(planned), (name, state)
        assert _cpus(state["nohz_full"]) == _cpus(planned), (name, state)
        assert int(state["hugepages_total"]) == plan["hugepages"]["pages"], (name, state)
        assert check(report, "kernel.cpu_isolation")["status"] == "ok"
        assert not [c for c in report["checks"] if "pending reboot" in (c["detail"] or "")]


def test_second_run_changes_nothing(guests: dict[str, Guest], inventory: Path):
    run = _playbook(inventory, "second")
    assert run.rc == 0, run.tail()
    assert {name: r["changed"] for name, r in run.recaps.items()} == dict.fromkeys(guests, 0), (
        run.changed_tasks()
    )


def test_limit_and_a_hand_edited_dropin(guests: dict[str, Guest], inventory: Path):
    edited_host, other = guests[EDITED], guests[UNTOUCHED]
    edited_host.ssh(f"sudo sed -i 's/^LLMHOST_CMDLINE=\"/LLMHOST_CMDLINE=\"mitigations=off /' "
                    f"{GRUB_DROPIN}")  # fmt: skip
    edited = edited_host.ssh(f"cat {GRUB_DROPIN}")
    assert "mitigations=off" in edited
    untouched = fingerprint(other)
    # The drop-in is cpu_isolation's: the role it belongs to (and llmhost_facts) is what runs.
    run = _playbook(inventory, "limit_hand_edited", "--limit", edited_host.name,
                    "--tags", "cpu_isolation")  # fmt: skip
    assert run.rc == 0, run.tail()
    assert set(run.recaps) == {edited_host.name}, run.recaps
    assert run.recaps[edited_host.name]["changed"] == 0, run.changed_tasks()
    assert f"{GRUB_DROPIN} was edited by hand and is kept" in " ".join(run.output.split())
    assert edited_host.ssh(f"cat {GRUB_DROPIN}") == edited
    assert fingerprint(other) == untouched


def _cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _hosts_reported(output: str) -> set[str]:
    """Hosts with a task result (`ok: [host]`, `fatal: [host]`, ...) or an include in `output`."""
    hosts = set()
    for line in output.splitlines():
        if re.match(r"^[a-z]+: \[", line):
            hosts.add(line.split("[", 1)[1].split("]", 1)[0].split(" -> ")[0])
        elif line.startswith("included: "):
            hosts.update(h.strip() for h in line.rsplit(" for ", 1)[-1].split(","))
    return hosts


def _changed_hosts(run: Run, task: str) -> set[str]:
    """Hosts that reported changed under the TASK header starting with `task`."""
    hosts, current = set(), ""
    for line in run.output.splitlines():
        if line.startswith("TASK ["):
            current = line
        elif line.startswith("changed: [") and current.startswith(task):
            hosts.add(line.split("[", 1)[1].split("]", 1)[0])
    return hosts
