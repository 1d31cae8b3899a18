"""Checks on NVIDIA GPUs and the CUDA driver."""

from __future__ import annotations

from llmhost.doctor.result import Context, Finding, fail, ok, skip, warn
from llmhost.plan import MIN_CUDA_FOR_CC

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
    have = tuple(int(p) for p in gpu.cuda_driver_version.split("."))
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
