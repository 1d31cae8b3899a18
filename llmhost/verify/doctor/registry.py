"""The ordered list of doctor checks: (id, title, function)."""

from __future__ import annotations

from llmhost.verify.doctor import container_checks as cc
from llmhost.verify.doctor import evidence_checks as ec
from llmhost.verify.doctor import gpu_checks as gc
from llmhost.verify.doctor import host_checks as hc
from llmhost.verify.doctor import live_checks as lc
from llmhost.verify.doctor import selftest_checks as sc
from llmhost.verify.doctor import version_checks as vc
from llmhost.verify.doctor.result import CheckFn

CHECKS: tuple[tuple[str, str, CheckFn], ...] = (
    ("cpu.microarchitecture", "CPU microarchitecture", hc.cpu_microarchitecture),
    ("cpu.vnni", "CPU int8 dot-product ISA (VNNI)", hc.cpu_vnni),
    ("plan", "Tuning plan", hc.plan_ready),
    ("tuning.evidence", "Tuning evidence", ec.tuning_evidence),
    ("gpu.present", "NVIDIA GPU", gc.gpu_present),
    ("gpu.architecture", "GPU architecture", gc.gpu_architecture),
    ("gpu.cuda_driver", "CUDA driver version", gc.cuda_driver),
    ("gpu.kernel_module", "NVIDIA kernel module", gc.kernel_module),
    ("gpu.driver_mismatch", "Kernel module and NVML library", gc.driver_mismatch),
    ("gpu.memory_in_use", "GPU memory held by others", gc.memory_in_use),
    ("gpu.persistence", "GPU persistence mode", gc.persistence),
    ("gpu.pcie", "GPU PCIe link", gc.pcie_link),
    ("gpu.throttling", "GPU throttling and power cap", gc.throttling),
    ("gpu.mig", "MIG", gc.mig),
    ("gpu.uvm", "/dev/nvidia-uvm", gc.uvm_device),
    ("memory.hugepages", "2 MiB hugepages", hc.hugepages_reserved),
    ("memory.thp", "Transparent hugepages", hc.transparent_hugepages),
    ("memory.boot_hugepages", "Boot-time hugepages vs RAM", hc.boot_hugepages),
    ("kernel.cpu_isolation", "CPU isolation", hc.cpu_isolation),
    ("kernel.governor", "CPU frequency governor", hc.cpu_governor),
    ("docker.engine", "Docker engine", cc.docker_engine),
    ("docker.compose", "Docker compose v2", cc.docker_compose),
    ("docker.nvidia_runtime", "NVIDIA container runtime", cc.nvidia_runtime),
    ("images.flags", "Images built for this host", cc.images_match),
    ("services.health", "Services", cc.services_healthy),
    ("security.nvidia_toolkit", "NVIDIA Container Toolkit security floor", vc.nvidia_toolkit),
    ("security.runc", "runc security floor", vc.container_runtime),
    ("security.docker_engine", "Docker Engine security floor", vc.docker_engine),
    ("security.containerd", "containerd security floor", vc.containerd),
    ("security.images", "Image versions vs security floors", vc.image_floors),
    ("images.cpu_isa", "CPU image instruction sets on this CPU", vc.cpu_image_isa),
    ("images.cpu_selftest", "CPU image self-test on this CPU", sc.cpu_image_selftest),
    ("images.gpu_code", "GPU images: machine code, CUDA, driver", vc.gpu_images),
    ("live.hugepages", "Weights on 2 MiB pages (running server)", lc.weights_on_hugepages),
    ("live.threads", "Compute threads on planned CPUs (running server)", lc.threads_pinned),
    ("live.pool_used", "Reserved hugepage pool in use", lc.pool_used),
    ("live.mlock", "mlock in effect (running servers)", lc.mlock_effective),
)
