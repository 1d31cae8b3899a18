"""Disposable Debian 12 VMs for the fleet tests: one image built per content, guests on overlays.

The guest boots through real GRUB: qemu loads GRUB itself as its `-kernel` (lnxboot.img + a
core image whose prefix is the disk's /boot/grub), and GRUB reads the grub.cfg that update-grub
writes inside the guest, so a GRUB drop-in + update-grub + reboot changes the kernel command line
exactly as on a workstation. qemu runs under TCG (`-accel tcg`): KVM guests hang on CI machines.
A guest's reboot ends its qemu (`-no-reboot`) and a fresh qemu boots the same disk: after a reset
in the same process, qemu 7.2's TCG took 130 s instead of 2 s to unpack the initrd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.infra import DEBIAN_MIRROR, InfraError, _run, cache_dir

# Bump when the recipe below changes in a way the hashed inputs do not show.
RECIPE_VERSION = 5
GUEST_USER = "provision"
# python3-pip (what llmhost_facts installs with apt) and python3-apt (what Ansible's apt module
# installs first when it is missing) are in the image, so that neither is installed under TCG on
# every guest (minutes each). systemd-networkd (part of systemd) gives the guest qemu's address.
GUEST_PACKAGES = (
    "systemd-sysv", "udev", "linux-image-cloud-amd64", "grub-pc", "openssh-server", "python3",
    "python3-venv", "python3-pip", "python3-apt", "iproute2", "sudo", "kmod", "dbus",
)  # fmt: skip
GRUB_MODULES = (
    "biosdisk", "ext2", "linux", "normal", "search", "search_label", "search_fs_uuid",
    "configfile", "serial", "terminal", "test", "gzio", "echo",
)  # fmt: skip
# Console on the serial port (the test keeps it as a log) and stable NIC names (eth0).
BASE_CMDLINE = "console=ttyS0,115200 net.ifnames=0 biosdevname=0"
# What a stock Debian install has, plus the serial console: the drop-in must keep all of it.
GRUB_DEFAULTS = f"""\
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="{BASE_CMDLINE}"
GRUB_TERMINAL=serial
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""
# qemu's user-mode network: 10.0.2.15, gateway .2, DNS .3 (no DHCP round trip at boot).
NETWORK = "[Match]\nName=eth0\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\nDNS=10.0.2.3\n"
# Only for the first boot: update-grub inside the guest replaces it on the first provisioning.
FIRST_GRUB_CFG = f"""\
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
search --no-floppy --label root --set=root
linux /vmlinuz root=LABEL=root ro quiet {BASE_CMDLINE}
initrd /initrd.img
boot
"""
GUEST_FILES = {
    "etc/fstab": "LABEL=root / ext4 defaults,errors=remount-ro 0 1\n",
    "etc/hostname": "llmhost-guest\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 llmhost-guest\n",
    "etc/systemd/network/20-eth0.network": NETWORK,
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
    "etc/default/grub": GRUB_DEFAULTS,
    "boot/grub/grub.cfg": FIRST_GRUB_CFG,
    f"etc/sudoers.d/{GUEST_USER}": f"{GUEST_USER} ALL=(ALL) NOPASSWD: ALL\n",
    "etc/ssh/sshd_config.d/llmhost-fleet.conf": "UseDNS no\nPasswordAuthentication no\n",
    "etc/apt/sources.list": f"deb {DEBIAN_MIRROR} bookworm main\n",
}
# Units that would compete with the test (and the boot) for the guest's emulated CPU.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                "e2scrub_reap.service", "fstrim.timer", "man-db.timer")  # fmt: skip
IMAGE_SIZE = "3G"


@dataclass(frozen=True)
class GuestImage:
    """A bootable disk (raw ext4, no partition table), GRUB as a kernel, and the SSH key."""

    disk: Path
    grub: Path
    key: Path


def _recipe_key() -> str:
    recipe = {
        "version": RECIPE_VERSION, "packages": GUEST_PACKAGES, "modules": GRUB_MODULES,
        "files": GUEST_FILES, "masked": MASKED_UNITS, "size": IMAGE_SIZE, "mirror": DEBIAN_MIRROR,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _chroot(root: Path, *cmd: str) -> None:
    _run(["chroot", str(root), *cmd], capture_output=True)


def _build(dest: Path) -> None:
    for tool in ("debootstrap", "mkfs.ext4", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise InfraError(f"{tool} is missing: apt-get install -y debootstrap openssh-client")
    root = dest / "root"
    _run(["debootstrap", "--variant=minbase", "--include=" + ",".join(GUEST_PACKAGES),
          "bookworm", str(root), DEBIAN_MIRROR], capture_output=True)  # fmt: skip
    for rel, text in GUEST_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / f"etc/sudoers.d/{GUEST_USER}").chmod(0o440)
    (root / "etc/default/grub.d").mkdir(exist_ok=True)
    _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", GUEST_USER)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llmhost-fleet",
          "-f", str(dest / "id_ed25519")])  # fmt: skip
    ssh_dir = root / "home" / GUEST_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text((dest / "id_ed25519.pub").read_text())
    _chroot(root, "chown", "-R", f"{GUEST_USER}:{GUEST_USER}", f"/home/{GUEST_USER}/.ssh")
    _chroot(root, "systemctl", "mask", *MASKED_UNITS)
    _chroot(root, "systemctl", "enable", "systemd-networkd")
    modules = root / "usr/lib/grub/i386-pc"
    shutil.copytree(modules, root / "boot/grub/i386-pc", dirs_exist_ok=True)
    _chroot(root, "grub-mkimage", "-O", "i386-pc", "-p", "(hd0)/boot/grub",
            "-o", "/boot/grub/i386-pc/llmhost-core.img", *GRUB_MODULES)  # fmt: skip
    core = root / "boot/grub/i386-pc/llmhost-core.img"
    (dest / "grub.img").write_bytes((modules / "lnxboot.img").read_bytes() + core.read_bytes())
    # No package lists or caches, as in a cloud image: with them, every apt task (even one that
    # finds its packages installed) rebuilt apt's cache under TCG, about 2.5 min per guest.
    for leftovers in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                      "var/lib/apt/lists/*_Packages", "var/lib/apt/lists/*Release*"):  # fmt: skip
        for entry in root.glob(leftovers):
            entry.unlink()
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(dest / "root.img"),
          IMAGE_SIZE], capture_output=True)  # fmt: skip
    shutil.rmtree(root)


def ensure_guest_image() -> GuestImage:
    """Build the guest image unless one from the same recipe is cached (~3-5 min)."""
    base = cache_dir() / "fleet"
    final = base / _recipe_key()
    if not (final / "DONE").exists():
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=base, prefix="build-") as tmp:
            _build(Path(tmp))
            (Path(tmp) / "DONE").write_text(time.strftime("%F %T\n"))
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            Path(tmp).mkdir()  # TemporaryDirectory cleans up a path that must exist
    return GuestImage(final / "root.img", final / "grub.img", final / "id_ed25519")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Guest:
    """One VM: a copy-on-write overlay of the image, its own SSH port on 127.0.0.1."""

    name: str
    cpus: int
    workdir: Path
    image: GuestImage
    memory_mb: int = 1024
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    _powered: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def overlay(self) -> Path:
        return self.workdir / f"{self.name}.qcow2"

    @property
    def console_log(self) -> Path:
        return self.workdir / f"{self.name}-console.log"

    def create_overlay(self) -> None:
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self.image.disk), "-F", "raw",
              str(self.overlay)], capture_output=True)  # fmt: skip

    def start(self) -> None:
        """Power on (the overlay keeps the disk across power cycles)."""
        with self._lock:
            if self.running:
                return
            self._powered = True
            self.proc = self._launch()
        threading.Thread(target=self._boot_again_after_reboot, daemon=True).start()

    def _launch(self) -> subprocess.Popen:
        netdev = f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22"
        cmd = [
            "qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", str(self.cpus),
            "-m", str(self.memory_mb), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-kernel", str(self.image.grub),
            "-drive", f"if=virtio,file={self.overlay},format=qcow2,cache=unsafe",
            "-netdev", netdev, "-device", "virtio-net-pci,netdev=net0",
            "-chardev", f"file,id=console,path={self.console_log},append=on",
            "-serial", "chardev:console",
        ]  # fmt: skip
        with (self.workdir / f"{self.name}-qemu.log").open("ab") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip

    def _boot_again_after_reboot(self) -> None:
        """The machine's side of a reboot: a qemu that the guest ended by resetting is started
        again on the same disk (one that was powered off, or halted, stays off)."""
        while True:
            proc = self.proc
            assert proc is not None
            if proc.wait() != 0 or not self._last_shutdown_was_a_reboot():
                return
            with self._lock:
                if not self._powered or self.proc is not proc:
                    return
                self.proc = self._launch()

    def _last_shutdown_was_a_reboot(self) -> bool:
        text = self.console_log.read_text(errors="replace") if self.console_log.exists() else ""
        return text.rfind("reboot: Restarting system") > text.rfind("reboot: Power down")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def power_off(self) -> None:
        """Pull the plug: no shutdown inside the guest."""
        with self._lock:
            self._powered = False
            proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *ssh_options(self.image.key), "-p", str(self.port),
                f"{GUEST_USER}@127.0.0.1", command]  # fmt: skip

    def ssh(self, command: str, timeout: float = 120, check: bool = True,
            input: str | None = None) -> str:
        """Run `command` in the guest as the provisioning user; its stdout."""
        proc = subprocess.run(self.ssh_argv(command), capture_output=True, text=True,
                              timeout=timeout, check=False, input=input)  # fmt: skip
        if check and proc.returncode != 0:
            raise InfraError(f"{self.name}: `{command}` exited {proc.returncode}: "
                             f"{proc.stderr.strip()[-500:]}")  # fmt: skip
        return proc.stdout

    def wait_ssh(self, timeout_s: float = 420) -> float:
        """Seconds until SSH answered; raises with the console's tail when it never does."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if not self.running:
                break
            try:
                if self._ssh_ok():
                    return time.monotonic() - start
            except subprocess.TimeoutExpired:
                pass
            time.sleep(3)
        log = self.console_log
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise InfraError(f"{self.name}: no SSH after {timeout_s:.0f} s; console tail:\n{tail}")

    def _ssh_ok(self) -> bool:
        probe = subprocess.run(self.ssh_argv("true"), capture_output=True, timeout=20, check=False)
        return probe.returncode == 0


def ssh_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
            "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=6"]  # fmt: skip


def boot(guests: Sequence[Guest]) -> dict[str, float]:
    """Create overlays, power every guest on, wait for all of them: seconds to SSH per guest."""
    for guest in guests:
        guest.create_overlay()
        guest.start()
    return {guest.name: guest.wait_ssh() for guest in guests}


def shutdown(guests: Sequence[Guest]) -> None:
    for guest in guests:
        guest.power_off()
