"""Checks on NVIDIA GPUs and the CUDA driver."""

from __future__ import annotations

from llmhost.facts.gpu import Gpu
from llmhost.plan.planner import MIN_CUDA_FOR_CC
from llmhost.untrusted import shown
from llmhost.verify.doctor.result import Context, Finding, fail, ok, skip, warn

CUDA_IMAGE_MAJOR = 13  # llmhost's GPU images are CUDA 13 builds
DRIVER_FIX = "install an NVIDIA driver with CUDA 13 support (580 or newer)"


def gpu_present(ctx: Context) -> Finding:
    gpu = ctx.facts.gpu
    if gpu.present:
        names = ", ".join(f"[{g.index}] {g.name}" for g in gpu.gpus)
        return ok(f"driver {gpu.driver_version}, CUDA {gpu.cuda_driver_version}: {names}")
    if not ctx.wants_gpu:
        return skip(f"no NVIDIA GPU ({gpu.error or 'none found'}); the cpu profile needs none")
    return fail(f"no NVIDIA GPU usable: {gpu.error or 'no devices'}", DRIVER_FIX)


def gpu_architecture(ctx: Context) -> Finding:
    gpus = ctx.facts.gpu.gpus
    if not gpus:
        return skip("no GPU")
    unknown = [g for g in gpus if g.architecture.startswith("unknown") or not g.compute_capability]
    detail = "; ".join(
        f"[{g.index}] {g.architecture} sm_{(g.compute_capability or '?').replace('.', '')}, "
        f"{(g.memory_total_mib or 0) / 1024:.0f} GiB, PCIe gen{g.pcie_generation} x{g.pcie_width}"
        for g in gpus
    )
    if unknown:
        return warn(detail + ": architecture not recognised; set images.cuda_version by hand")
    return ok(detail)


def cuda_driver(ctx: Context) -> Finding:
    gpu = ctx.facts.gpu
    if not gpu.present or not gpu.cuda_driver_version:
        return skip("no GPU")
    have = tuple(int(p) for p in gpu.cuda_driver_version.split(".") if p.isdigit())
    if not have:  # only a forged nvidia-smi output says so
        return fail(
            f"the driver's CUDA version {shown(gpu.cuda_driver_version)!r} is not a version",
            "check `nvidia-smi` (its header names the CUDA version)",
        )
    for g in gpu.gpus:
        need = MIN_CUDA_FOR_CC.get(g.cc_tuple) if g.cc_tuple else None
        if need and have < tuple(int(p) for p in need.split(".")):
            return fail(
                f"{g.name} (sm_{g.compute_capability}) needs CUDA {need}+, "
                f"driver supports {gpu.cuda_driver_version}",
                DRIVER_FIX,
            )
    if have[0] < CUDA_IMAGE_MAJOR:
        return warn(
            f"driver supports CUDA {gpu.cuda_driver_version}: CUDA 13 images will not start "
            "(llmhost falls back to a 12.x image)",
            DRIVER_FIX,
        )
    return ok(f"CUDA {gpu.cuda_driver_version} driver runs CUDA 13 images")


# ---------------------------------------------------------------- what GPU users hit in practice

OTHERS_WARN_MIB = 1024  # memory held by non-llmhost processes worth a word


def _gpus(ctx: Context) -> tuple[Gpu, ...] | None:
    return ctx.facts.gpu.gpus if ctx.facts.gpu.present else None


def kernel_module(ctx: Context) -> Finding:
    """Blackwell needs NVIDIA's open kernel module; the proprietary one does not drive it."""
    gpu = ctx.facts.gpu
    if not gpu.present:
        return skip("no GPU")
    if gpu.kernel_module is None:
        return skip("/proc/driver/nvidia/version not readable: kernel module flavour unknown")
    blackwell = [g for g in gpu.gpus if g.cc_tuple and g.cc_tuple >= (10, 0)]
    if blackwell and gpu.kernel_module != "open":
        return fail(
            f"{blackwell[0].name} needs NVIDIA's open kernel module; the proprietary one is loaded",
            "sudo apt-get install nvidia-open  # or the driver installer with -m=kernel-open, "
            "then reboot",
        )
    return ok(f"{gpu.kernel_module} kernel module {gpu.kernel_module_version}")


def driver_mismatch(ctx: Context) -> Finding:
    """The kernel module and the NVML library must be the same driver release."""
    gpu = ctx.facts.gpu
    if gpu.error and "mismatch" in gpu.error.lower():
        return fail(f"driver/library version mismatch: {gpu.error}", MISMATCH_FIX)
    if not gpu.present or not gpu.kernel_module_version or not gpu.driver_version:
        return skip("no GPU, or the kernel module's version is not readable")
    if gpu.kernel_module_version != gpu.driver_version:
        return fail(
            f"kernel module {gpu.kernel_module_version} but NVML library {gpu.driver_version} "
            "(a driver upgrade without a reboot)",
            MISMATCH_FIX,
        )
    return ok(f"kernel module and NVML library are both {gpu.driver_version}")


MISMATCH_FIX = "sudo reboot  # loads the upgraded kernel module"


def memory_in_use(ctx: Context) -> Finding:
    """Memory other processes (a display, another model) hold: the plan subtracts it."""
    gpus = _gpus(ctx)
    if gpus is None:
        return skip("no GPU")
    busy = [g for g in gpus if g.held_by_others_mib >= OTHERS_WARN_MIB]
    if not busy:
        return ok("no GPU memory held by other processes")
    detail = "; ".join(
        f"[{g.index}] {g.held_by_others_mib} MiB held by "
        + (
            ", ".join(
                f"{p.name} (pid {p.pid}, {p.used_mib} MiB)" for p in g.processes if not p.service
            )
            or "processes NVML does not list"
        )
        for g in busy
    )
    return warn(
        detail + ": the GPU memory plan leaves it to them",
        "stop them (or move the display to another GPU), then `llmhost plan` again",
    )


def persistence(ctx: Context) -> Finding:
    gpus = _gpus(ctx)
    if gpus is None:
        return skip("no GPU")
    off = [g for g in gpus if g.persistence_mode is False]
    if off:
        return warn(
            f"persistence mode off on GPU {', '.join(str(g.index) for g in off)}: every start "
            "re-initialises the driver (seconds of latency, lost clocks)",
            "sudo systemctl enable --now nvidia-persistenced  # or: sudo nvidia-smi -pm 1",
        )
    return ok("persistence mode on") if gpus else skip("no GPU")


def pcie_link(ctx: Context) -> Finding:
    """A link narrower than the slot's maximum: a card in a x4/x8 slot, or badly seated."""
    gpus = _gpus(ctx)
    if gpus is None:
        return skip("no GPU")
    narrow = [g for g in gpus if g.pcie_width and g.pcie_max_width and g.pcie_width <
              g.pcie_max_width]  # fmt: skip
    if narrow:
        return warn(
            "; ".join(f"[{g.index}] PCIe x{g.pcie_width} of x{g.pcie_max_width}" for g in narrow)
            + ": model loading and host transfers run slower",
            "reseat the card or move it to a full-width slot (check the BIOS lane split)",
        )
    widths = ", ".join(f"x{g.pcie_width}" for g in gpus if g.pcie_width)
    return ok(f"PCIe links at full width ({widths})") if widths else skip("PCIe width unknown")


def throttling(ctx: Context) -> Finding:
    """Clock-event reasons that slow the GPU, and a power cap below the board's default."""
    gpus = _gpus(ctx)
    if gpus is None:
        return skip("no GPU")
    problems, fixes = [], []
    for g in gpus:
        if g.throttle_reasons:
            problems.append(f"[{g.index}] slowed by {', '.join(g.throttle_reasons)}")
            fixes.append("check cooling and the power supply")
        if (
            g.power_limit_w
            and g.default_power_limit_w
            and g.power_limit_w < 0.95 * (g.default_power_limit_w)
        ):
            problems.append(
                f"[{g.index}] power cap {g.power_limit_w:.0f} W below the default "
                f"{g.default_power_limit_w:.0f} W"
            )
            fixes.append(f"sudo nvidia-smi -i {g.index} -pl {g.default_power_limit_w:.0f}")
    if problems:
        return warn("; ".join(problems), "; ".join(dict.fromkeys(fixes)))
    return ok("no throttling, power caps at their defaults")


def mig(ctx: Context) -> Finding:
    gpus = _gpus(ctx)
    if gpus is None:
        return skip("no GPU")
    on = [g for g in gpus if g.mig_enabled]
    if on:
        return warn(
            f"MIG is enabled on GPU {', '.join(str(g.index) for g in on)}: each engine sees a "
            "slice, not the card the plan sized",
            " && ".join(f"sudo nvidia-smi -i {g.index} -mig 0" for g in on) + " && sudo reboot",
        )
    return ok("MIG off")


def uvm_device(ctx: Context) -> Finding:
    gpu = ctx.facts.gpu
    if not gpu.present:
        return skip("no GPU")
    if gpu.uvm_device is None:
        return skip("/dev not listable")
    if not gpu.uvm_device:
        return fail(
            "/dev/nvidia-uvm is missing: CUDA programs fail to start (cudaErrorUnknown)",
            "sudo nvidia-modprobe -u -c=0  # or: sudo modprobe nvidia-uvm",
        )
    return ok("/dev/nvidia-uvm present")
