"""Fixtures of the fleet tests: the guest image, a wheelhouse, the booted guests, an inventory.

LLMHOST_FLEET=1 (CI) boots guest-a and guest-c: between them every property of the fleet (a group's
settings and a host's own, a guest lost and one that carries on, --limit and a guest left alone).
LLMHOST_FLEET=full adds guest-b, a second guest of guest-a's group.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.infra import InfraError, _run, cache_dir
from tests.fleet.guests import Guest, GuestImage, boot, ensure_guest_image, shutdown

REPO = Path(__file__).resolve().parents[2]
# name -> (vCPUs, group) ; guest-c has its own core count and pool in host_vars.
ALL_GUESTS = {"guest-a": (2, "rack_1"), "guest-b": (2, "rack_1"), "guest-c": (3, "rack_2")}
FULL = os.environ.get("LLMHOST_FLEET") == "full"
GUESTS = {n: spec for n, spec in ALL_GUESTS.items() if FULL or n != "guest-b"}
# Seconds from power-on to SSH, per guest (for the report).
BOOT_SECONDS: dict[str, float] = {}
GROUP_CONFIG = {
    "profile": "cpu",
    "inference_cores": 1,
    "hugepages": {"enabled": True, "boot_time": True, "gib": 0.0625},
}
HOST_CONFIG = {"guest-c": {**GROUP_CONFIG, "inference_cores": 2,
                           "hugepages": {"enabled": True, "boot_time": True, "gib": 0.125}}}


_PREPARING = threading.Lock()  # one builder of the image and wheelhouse at a time


def prepare() -> GuestImage:
    """The wheelhouse and the guest image, built once (a second caller waits for the first)."""
    with _PREPARING:
        ensure_wheelhouse()
        return ensure_guest_image()


def prepare_in_background() -> None:
    """Build the wheelhouse and guest image (debootstrap, ~3 min) while the tests before the
    fleet's run; the fleet's fixture then finds them ready, or waits for the build. A failure
    here is left for that fixture to report."""
    if not _enabled() or os.geteuid() != 0 or _missing_tools():
        return

    def build() -> None:
        with contextlib.suppress(Exception):  # reported by the fixture, which builds again
            prepare()

    threading.Thread(target=build, name="fleet-prepare", daemon=True).start()


def _enabled() -> bool:
    return os.environ.get("LLMHOST_FLEET") in ("1", "full")


def _missing_tools() -> list[str]:
    return [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "ssh")
            if not shutil.which(t)]  # fmt: skip


def _required() -> None:
    if not _enabled():
        pytest.skip("boots two VMs (~15 min): set LLMHOST_FLEET=1 (scripts/test-all.sh does); "
                    "LLMHOST_FLEET=full boots three")  # fmt: skip
    if os.geteuid() != 0:
        pytest.fail("building the guest image needs root (debootstrap, chroot)")
    missing = _missing_tools()
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install -y qemu-system-x86 "
                    "qemu-utils debootstrap openssh-client")  # fmt: skip


def ensure_wheelhouse() -> Path:
    """llmhost's dependencies as wheels, cached per pyproject.toml: the guests install from them
    with no index, as an air-gapped lab would (llmhost's own wheel comes from the bundle)."""
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()[:16]
    final = cache_dir() / "fleet" / f"wheels-{key}"
    if not (final / "DONE").exists():
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
              "--wheel-dir", str(partial), str(REPO)],
             capture_output=True)  # fmt: skip
        for own in partial.glob("llmhost-*.whl"):
            own.unlink()
        (partial / "DONE").write_text("")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    return final


@pytest.fixture(scope="package")
def guests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Guest]]:
    """The guests booted from overlays of one image; always powered off at the end."""
    _required()
    try:
        image = prepare()
    except (InfraError, subprocess.CalledProcessError) as err:
        pytest.fail(f"guest image: {err}")
    workdir = tmp_path_factory.mktemp("fleet")
    fleet = {name: Guest(name, cpus, workdir, image) for name, (cpus, _) in GUESTS.items()}
    try:
        BOOT_SECONDS.update(boot(list(fleet.values())))
        yield fleet
    finally:
        shutdown(list(fleet.values()))


@pytest.fixture(scope="package")
def inventory(guests: dict[str, Guest], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An inventory in the shape of inventories/lab: groups, group_vars, a host's overrides."""
    root = tmp_path_factory.mktemp("inventory")
    key = next(iter(guests.values())).image.key
    racks: dict[str, dict] = {}
    for name, (_, rack) in GUESTS.items():
        racks.setdefault(rack, {"hosts": {}})["hosts"][name] = {"ansible_port": guests[name].port}
    (root / "hosts.yml").write_text(yaml.safe_dump({"llmhost": {"children": racks}}))
    (root / "group_vars").mkdir()
    (root / "group_vars" / "llmhost.yml").write_text(yaml.safe_dump({
        "ansible_host": "127.0.0.1",
        "ansible_user": "provision",
        "ansible_become": True,
        "ansible_ssh_private_key_file": str(key),
        # Keepalives: a guest that reboots under qemu's user networking never resets the old
        # TCP connection, and without them the reboot command's ssh waited forever (seen once).
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
                                   "-o LogLevel=ERROR -o ServerAliveInterval=10 "
                                   "-o ServerAliveCountMax=6",
        "cpu_isolation_reboot_ok": True,
        "cpu_isolation_reboot_throttle": 1,
        "cpu_isolation_reboot_timeout": 900,
        "llmhost_facts_wheelhouse": str(ensure_wheelhouse()),
        "llmhost_facts_config": GROUP_CONFIG,
    }, sort_keys=False))  # fmt: skip
    (root / "host_vars").mkdir()
    for name, config in HOST_CONFIG.items():
        (root / "host_vars" / f"{name}.yml").write_text(
            yaml.safe_dump({"llmhost_facts_config": config}, sort_keys=False)
        )
    return root
