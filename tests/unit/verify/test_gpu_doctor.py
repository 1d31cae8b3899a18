"""The doctor checks GPU users hit in practice, each with its fix, through NVML doubles and the
kernel's own files (/proc/driver/nvidia/version, /dev/nvidia-uvm) in a host tree."""

from __future__ import annotations

from dataclasses import replace

import pytest

from llmhost.facts import gather
from llmhost.facts.gpu import parse_module_version
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config
from llmhost.verify.doctor import run_doctor
from tests.support import CPUINFO, H100, RTX_5090, FakeNvml, write_host_tree

OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U22-I3-B13-02-5)  Tue Sep 30 2026\nGCC version:  gcc version 13.3.0\n"  # noqa: E501
PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 30 2026\nGCC version:  gcc version 13.3.0\n"  # noqa: E501


def doctor(tmp_path, gpu=RTX_5090, *, driver="580.95.05", module=OPEN, uvm=True, error=None):
    files = {"proc/driver/nvidia/version": module} if module else {}
    if uvm:
        files["dev/nvidia-uvm"] = ""
    else:
        files["dev/nvidia0"] = ""
    cpuinfo = (CPUINFO / "ryzen9-9950x.txt").read_text()
    root = write_host_tree(tmp_path, cpuinfo, cores=16, threads_per_core=2, cores_per_l3=8,
                           files=files)  # fmt: skip
    nvml = FakeNvml(driver=driver, gpus=[gpu], init_error=error)
    facts = gather(LiveSource(str(root), nvml_module=nvml), containers=False)
    report = run_doctor(facts, Config(), "gpu", live=True)
    return {r.id: r for r in report.results}


@pytest.mark.parametrize(
    ("text", "flavour", "version"),
    [(OPEN, "open", "580.95.05"), (PROPRIETARY, "proprietary", "580.95.05"), ("", None, None)],
)
def test_module_version(text, flavour, version):
    assert parse_module_version(text) == (flavour, version)


def test_a_healthy_rtx5090(tmp_path):
    checks = doctor(tmp_path)
    names = ("gpu.kernel_module", "gpu.driver_mismatch", "gpu.memory_in_use", "gpu.persistence",
             "gpu.pcie", "gpu.throttling", "gpu.mig", "gpu.uvm")  # fmt: skip
    for check in names:
        assert checks[check].status.value == "ok", (check, checks[check].detail)


def test_blackwell_on_the_proprietary_module_fails(tmp_path):
    found = doctor(tmp_path, module=PROPRIETARY)["gpu.kernel_module"]
    assert found.status.value == "fail" and "open kernel module" in found.detail
    assert "nvidia-open" in found.remediation
    # Hopper runs on either.
    assert (
        doctor(tmp_path / "h", H100, module=PROPRIETARY)["gpu.kernel_module"].status.value == "ok"
    )


def test_module_and_library_from_two_releases(tmp_path):
    found = doctor(tmp_path, driver="580.105.08")["gpu.driver_mismatch"]
    assert found.status.value == "fail"
    assert "kernel module 580.95.05 but NVML library 580.105.08" in found.detail
    assert found.remediation.startswith("sudo reboot")


def test_nvml_mismatch_error_is_named(tmp_path):
    checks = doctor(tmp_path, error="Driver/library version mismatch")
    assert checks["gpu.driver_mismatch"].status.value == "fail"
    assert checks["gpu.driver_mismatch"].remediation.startswith("sudo reboot")


def test_memory_held_by_a_display_and_another_program(tmp_path):
    held = ((1201, "/usr/lib/xorg/Xorg", 1 << 30), (4242, "ollama", 2 << 30))
    busy = replace(RTX_5090, used_bytes=3 << 30, processes=held)
    found = doctor(tmp_path, busy)["gpu.memory_in_use"]
    assert found.status.value == "warn"
    assert "3072 MiB held by /usr/lib/xorg/Xorg (pid 1201, 1024 MiB), ollama" in found.detail


@pytest.mark.parametrize(
    ("gpu", "check", "detail", "fix"),
    [
        (replace(RTX_5090, persistence=0), "gpu.persistence", "persistence mode off on GPU 0",
         "nvidia-persistenced"),
        (replace(RTX_5090, pcie_width=8), "gpu.pcie", "[0] PCIe x8 of x16", "reseat the card"),
        (replace(RTX_5090, clock_reasons=0x20 | 0x1), "gpu.throttling",
         "slowed by software thermal slowdown", "check cooling"),
        (replace(RTX_5090, power_mw=400000), "gpu.throttling",
         "power cap 400 W below the default 575 W", "sudo nvidia-smi -i 0 -pl 575"),
        (replace(H100, mig=1), "gpu.mig", "MIG is enabled on GPU 0", "sudo nvidia-smi -i 0 -mig 0"),
    ],
)  # fmt: skip
def test_each_problem_warns_with_its_fix(tmp_path, gpu, check, detail, fix):
    found = doctor(tmp_path, gpu)[check]
    assert found.status.value == "warn", found
    assert detail in found.detail and fix in found.remediation


def test_missing_uvm_device_fails(tmp_path):
    found = doctor(tmp_path, uvm=False)["gpu.uvm"]
    assert found.status.value == "fail" and "nvidia-modprobe -u" in found.remediation
