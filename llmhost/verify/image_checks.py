"""What an image really contains, judged against this host's hardware.

GPU images: machine code (SASS) for the GPU's architecture in libggml-cuda (`cuobjdump`), the
architectures torch was built for (vLLM), the CUDA version against the driver's, and CUDA
forward-compat libraries that would override the host driver. CPU image: the instruction sets
compiled into llama.cpp against the host's. Parsers and verdicts are pure functions over text and
labels; `verify_built_image` runs the tools after `llmhost build` and records what they found as
labels, so doctor and deploy judge from labels alone.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts, our_labels
from llmhost.facts.isa import REQUIRES as ISA_REQUIRES
from llmhost.plan.planner import IMAGES, Plan
from llmhost.progress import Progress
from llmhost.verdict import Status

FIX_REBUILD_CPU = "llmhost build --profile cpu"
FIX_REBUILD_GPU = "llmhost build --profile gpu"


@dataclass(frozen=True)
class Check:
    level: Status
    detail: str
    fix: str | None = None


# ---------------------------------------------------------------- GPU machine code


class CuobjdumpError(LlmhostError):
    """cuobjdump could not read the file (not found, not a CUDA binary)."""


_LISTING = re.compile(r"^(ELF|PTX) file\s+\d+:\s+(\S+)\s*$")
_ARCH_IN_NAME = re.compile(r"\.(?:sm|compute)_(\d+[a-z]?)\.(?:cubin|ptx)$")


def parse_cuobjdump(text: str) -> tuple[str, ...]:
    """`cuobjdump --list-elf` or `--list-ptx` output -> sorted unique architectures ("90", "120a").

    "No ELF file found" / "does not contain device code" mean none; "fatal" is an error."""
    archs: set[str] = set()
    for line in text.splitlines():
        if "cuobjdump fatal" in line:
            raise CuobjdumpError(line.split(":", 1)[-1].strip() or line.strip())
        match = _LISTING.match(line.strip())
        if match:
            arch = _ARCH_IN_NAME.search(match.group(2))
            if arch:
                archs.add(arch.group(1))
    return tuple(sorted(archs, key=_arch_key))


def _split_arch(arch: str) -> tuple[int, int, str]:
    """ "90" -> (9, 0, ""), "120a" -> (12, 0, "a"), "sm_86" -> (8, 6, "")."""
    match = re.fullmatch(r"(?:sm_|compute_)?(\d+)(\d)([a-z]?)", arch.strip())
    if not match:
        raise ValueError(f"not a CUDA architecture: {arch!r}")
    return int(match.group(1)), int(match.group(2)), match.group(3)


def _arch_key(arch: str) -> tuple[int, int, str]:
    return _split_arch(arch)


def arch_name(cc: tuple[int, int]) -> str:
    return f"sm_{cc[0]}{cc[1]}"


def sass_runs_on(arch: str, cc: tuple[int, int]) -> bool:
    """Machine code runs on the same major with an equal or newer minor; `a` code only on its own
    exact architecture, `f` code on its family (same major)."""
    major, minor, suffix = _split_arch(arch)
    if suffix == "a":
        return (major, minor) == cc
    return major == cc[0] and minor <= cc[1]


def ptx_jits_on(arch: str, cc: tuple[int, int]) -> bool:
    """PTX is JIT-compiled for any newer GPU, except architecture-specific (`a`/`f`) PTX."""
    major, minor, suffix = _split_arch(arch)
    if suffix == "a":
        return (major, minor) == cc
    if suffix == "f":
        return major == cc[0] and minor <= cc[1]
    return (major, minor) <= cc


def machine_code_check(
    sass: Iterable[str], ptx: Iterable[str], cc: tuple[int, int], what: str = "libggml-cuda"
) -> Check:
    """Is this GPU's architecture present as machine code, or only as PTX (JIT), or not at all?"""
    sass, ptx = tuple(sass), tuple(ptx)
    want = arch_name(cc)
    exact = [a for a in sass if _split_arch(a)[:2] == cc and sass_runs_on(a, cc)]
    compatible = [a for a in sass if sass_runs_on(a, cc)]
    jit = [a for a in ptx if ptx_jits_on(a, cc)]
    found = f"machine code {_names(sass) or 'none'}, PTX {_names(ptx) or 'none'}"
    if exact:
        return Check(Status.OK, f"{what} has {want} machine code ({_names(exact)})")
    if compatible:
        return Check(
            Status.WARN,
            f"{what} has no {want} machine code; the GPU runs the compatible "
            f"{_names(compatible)} code, not tuned for it ({found})",
            FIX_REBUILD_GPU,
        )
    if jit:
        return Check(
            Status.WARN,
            f"{what} has no {want} machine code, only PTX {_names(jit)}: the driver JIT-compiles "
            f"every kernel at first start (minutes; cached per container) ({found})",
            FIX_REBUILD_GPU,
        )
    return Check(
        Status.FAIL,
        f"{what} has neither {want} machine code nor PTX it can JIT ({found}): kernels fail with "
        "'no kernel image is available for execution on the device'",
        FIX_REBUILD_GPU,
    )


def _names(archs: Iterable[str]) -> str:
    return ", ".join(a if a.startswith(("sm_", "compute_")) else f"sm_{a}" for a in archs)


def parse_torch_arch_list(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`torch.cuda.get_arch_list()` printed (`['sm_80', 'sm_90', 'compute_90']`) -> (sass, ptx)."""
    items = re.findall(r"(sm|compute)_(\d+[a-z]?)", text)
    sass = tuple(sorted({a for kind, a in items if kind == "sm"}, key=_arch_key))
    ptx = tuple(sorted({a for kind, a in items if kind == "compute"}, key=_arch_key))
    return sass, ptx


# ---------------------------------------------------------------- CUDA version vs the driver


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = [*(int(p) for p in re.findall(r"\d+", version)[:2]), 0, 0][:2]
    return major, minor


def required_cuda(env: Iterable[str]) -> str | None:
    """An image's Env -> the CUDA it demands: NVIDIA_REQUIRE_CUDA="cuda>=13.0 brand=..." -> "13.0",
    else CUDA_VERSION=12.8.1 -> "12.8"."""
    values = dict(item.partition("=")[::2] for item in env)
    match = re.search(r"cuda>=(\d+\.\d+)", values.get("NVIDIA_REQUIRE_CUDA", ""))
    if match:
        return match.group(1)
    if values.get("CUDA_VERSION"):
        major, minor = _major_minor(values["CUDA_VERSION"])
        return f"{major}.{minor}"
    return None


def cuda_driver_check(image_cuda: str, driver_cuda: str, image: str = "the image") -> Check:
    """A CUDA X.Y image needs a driver supporting X.Y: nvidia-container-cli enforces it at start."""
    need, have = _major_minor(image_cuda), _major_minor(driver_cuda)
    want = f"{need[0]}.{need[1]}"
    if need > have:
        return Check(
            Status.FAIL,
            f"{image} is built on CUDA {image_cuda} and the driver supports CUDA {driver_cuda}: "
            f"the container will not start (nvidia-container-cli: requirement error: "
            f"unsatisfied condition: cuda>={want})",
            f"install an NVIDIA driver with CUDA {want} support, or rebuild: {FIX_REBUILD_GPU} "
            "(it picks the newest CUDA the driver runs)",
        )
    return Check(Status.OK, f"{image}: CUDA {image_cuda} on a CUDA {driver_cuda} driver")


# ---------------------------------------------------------------- CUDA forward compatibility


_LIBCUDA = re.compile(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)\b")
# Forward compatibility is supported on data-center GPUs only (NVIDIA's CUDA compatibility guide).
_NOT_DATACENTER = re.compile(r"GeForce|TITAN|Quadro|RTX|Jetson", re.IGNORECASE)


def parse_compat_listing(text: str) -> str | None:
    """`ls /usr/local/cuda*/compat` -> the forward-compat libcuda's driver version, if any."""
    versions = _LIBCUDA.findall(text)
    return max(versions, key=lambda v: tuple(int(p) for p in v.split("."))) if versions else None


def _driver_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def forward_compat_check(
    compat: str | None,
    host_driver: str | None,
    gpu_names: Iterable[str],
    on_library_path: bool = False,
    image: str = "the image",
) -> Check:
    """Explain a CUDA forward-compat libcuda inside an image against the host driver.

    NVIDIA Container Toolkit >= 1.17.5 enables it only when it is newer than the host driver; an
    image that puts it on LD_LIBRARY_PATH loads it whatever the host has."""
    if not compat or compat == "none":
        return Check(Status.OK, f"{image} carries no CUDA forward-compat libraries")
    if not host_driver:
        return Check(Status.OK, f"{image} carries forward-compat libcuda {compat} (no driver here)")
    names = list(gpu_names)
    consumer = [n for n in names if _NOT_DATACENTER.search(n)]
    newer = _driver_tuple(compat) > _driver_tuple(host_driver)
    older = _driver_tuple(compat) < _driver_tuple(host_driver)
    if older and on_library_path:
        return Check(
            Status.FAIL,
            f"{image} puts its CUDA forward-compat libcuda {compat} on LD_LIBRARY_PATH, ahead of "
            f"the newer host driver {host_driver}: CUDA runs against the older library and fails "
            "with 'system has unsupported display driver / cuda driver combination' (error 803)",
            "remove /usr/local/cuda/compat from the image's LD_LIBRARY_PATH, then "
            + FIX_REBUILD_GPU,
        )
    if older or not newer:
        return Check(
            Status.OK,
            f"{image}'s forward-compat libcuda {compat} is not newer than the "
            f"host driver {host_driver}: unused",
        )
    if consumer:
        return Check(
            Status.FAIL,
            f"{image}'s forward-compat libcuda {compat} is newer than the host driver "
            f"{host_driver} and would override it, but forward compatibility works on data-center "
            f"GPUs only: on {consumer[0]} CUDA fails with error 804 (forward compatibility was "
            "attempted on non supported HW)",
            f"upgrade the host driver to {compat} or newer, or rebuild: {FIX_REBUILD_GPU}",
        )
    return Check(
        Status.WARN,
        f"{image}'s forward-compat libcuda {compat} overrides the older host driver {host_driver} "
        "(forward compatibility, supported on this data-center GPU): the kernel module stays "
        f"{host_driver}",
        f"upgrade the host driver to {compat} or newer",
    )


# ---------------------------------------------------------------- CPU instruction sets



def cmake_defines(flags: str) -> dict[str, str]:
    """ "-DGGML_AVX2=ON -DX=Y" -> {"GGML_AVX2": "ON", "X": "Y"} (as doctor's images check reads)."""
    out = {}
    for token in flags.split():
        if token.startswith("-D") and "=" in token:
            key, _, value = token[2:].partition("=")
            out[key.split(":")[0]] = value
    return out


def image_isa(labels: dict[str, str]) -> tuple[str, ...]:
    """ISA compiled into a llama.cpp image: its io.llmhost.isa label plus every ISA switch its
    CMake flags turned ON (the flags are what cmake was really given)."""
    names = {n.strip() for n in labels.get(our_labels.ISA, "").split(",") if n.strip()}
    for key, value in cmake_defines(labels.get(our_labels.CMAKE, "")).items():
        name = key.removeprefix("GGML_").lower()
        if value.upper() == "ON" and name in ISA_REQUIRES:
            names.add(name)
    return tuple(n for n in ISA_REQUIRES if n in names) + tuple(sorted(names - set(ISA_REQUIRES)))


def parse_system_info(text: str) -> tuple[str, ...]:
    """llama.cpp's start-up line "system_info: ... | CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | ..."
    -> the ISA it was compiled with, in llmhost's names."""
    found = {m.group(1).lower() for m in re.finditer(r"\b([A-Z0-9_]+)\s*=\s*1\b", text)}
    return tuple(n for n in ISA_REQUIRES if n in found)


def missing_isa(isa: Iterable[str], host_flags: Iterable[str]) -> tuple[str, ...]:
    """ISA names whose CPU flags the host lacks (names llmhost does not know are not judged)."""
    flags = set(host_flags)
    return tuple(n for n in isa if n in ISA_REQUIRES and not set(ISA_REQUIRES[n]) <= flags)


def flags_of(isa: Iterable[str]) -> set[str]:
    """The cpuinfo flags a list of ISA names stands for (a plan's cpu_isa describes its host)."""
    return {flag for name in isa for flag in ISA_REQUIRES.get(name, ())}


def cpu_image_check(
    labels: dict[str, str], host_flags: Iterable[str], cpu: str, image: str = IMAGES["llama-cpu"]
) -> Check:
    """Every instruction set compiled into the CPU image must be on this CPU (`cpu` names it)."""
    switches = cmake_defines(labels.get(our_labels.CMAKE, ""))
    if switches.get("GGML_BACKEND_DL") == "ON" and switches.get("GGML_CPU_ALL_VARIANTS") == "ON":
        return Check(Status.OK, f"{image} carries every x86 variant and picks one at start")
    if switches.get("GGML_NATIVE") == "ON":
        built_for = labels.get(our_labels.BUILT_FOR, "another host")
        return Check(
            Status.WARN,
            f"{image} was built with -march=native on {built_for}: what it "
            "needs of the CPU is not recorded",
            FIX_REBUILD_CPU,
        )
    isa = image_isa(labels)
    missing = missing_isa(isa, host_flags)
    if missing:
        return Check(
            Status.FAIL,
            f"{image} was compiled for {', '.join(missing)}, which the CPU here ({cpu}) lacks: "
            "llama-server would die with SIGILL (illegal instruction) and restart in a loop",
            FIX_REBUILD_CPU,
        )
    return Check(
        Status.OK, f"{image} uses {', '.join(isa) or 'no SIMD extensions'}: all present on this CPU"
    )


def refuse_mismatched_cpu_image(plan: Plan, facts: HostFacts) -> None:
    """Deploy preflight: refuse, before any container starts, a CPU image this CPU cannot run."""
    if plan.service("llama-cpu") is None:
        return
    tag = IMAGES["llama-cpu"]
    image = next((i for i in facts.containers.images if tag in i.tags), None)
    if image is None:
        return
    verdict = cpu_image_check(image.labels, facts.cpu.flags, facts.cpu.model_name, tag)
    if verdict.level is Status.FAIL:
        raise LlmhostError(f"{verdict.detail}: rebuild it here with `{FIX_REBUILD_CPU}`")


# ---------------------------------------------------------------- after `llmhost build`

_PROBE = (
    'ls -1 /usr/local/cuda*/compat/ 2>/dev/null; echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; '
    "readlink -f /app/libggml-cuda.so 2>/dev/null"
)


def _run(
    client: Any,
    image: str,
    command: list[str],
    *,
    entrypoint: list[str] | None = None,
    gpu: bool = False,
    gpus: tuple[int, ...] = (),
    files: tuple[str, bytes] | None = None,
) -> tuple[int, str]:
    """Run a throwaway container and return (exit code, output)."""
    from docker.types import DeviceRequest

    host_config = client.create_host_config(
        device_requests=[gpu_device_request(DeviceRequest, gpus)] if gpu else None
    )
    box = client.create_container(
        image, command=command, entrypoint=entrypoint, host_config=host_config, user="0"
    )
    try:
        if files:
            client.put_archive(box["Id"], files[0], files[1])
        client.start(box["Id"])
        code = client.wait(box["Id"], timeout=600).get("StatusCode", 1)
        output = client.logs(box["Id"], stdout=True, stderr=True).decode(errors="replace")
    finally:
        client.remove_container(box["Id"], force=True)
    return code, output


def gpu_device_request(device_request: Any, gpus: tuple[int, ...]) -> Any:
    """The one GPU path, as compose's deploy.resources.reservations.devices renders it: the
    nvidia driver, these GPUs (all when none are named), the gpu capability."""
    if gpus:
        return device_request(
            driver="nvidia", device_ids=[str(i) for i in gpus], capabilities=[["gpu"]]
        )
    return device_request(driver="nvidia", count=-1, capabilities=[["gpu"]])


def _copy_out(client: Any, image: str, path: str) -> bytes:
    """The tar stream of `path` inside `image` (a created, never started, container)."""
    box = client.create_container(image)
    try:
        stream, _ = client.get_archive(box["Id"], path)
        return b"".join(stream)
    finally:
        client.remove_container(box["Id"], force=True)


def _single_file_tar(name: str, tar_bytes: bytes) -> bytes:
    """Re-pack the one regular file of a get_archive stream under `name`."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as src:
        member = next(m for m in src.getmembers() if m.isfile())
        data = src.extractfile(member).read()  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as dst:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def probe_cuda_image(client: Any, image: str, devel_image: str | None) -> dict[str, str]:
    """Labels describing a built CUDA image: forward-compat libs, NVIDIA_REQUIRE_CUDA, and (for the
    llama.cpp image, with cuobjdump from `devel_image`) the architectures in libggml-cuda."""
    labels: dict[str, str] = {}
    env = client.inspect_image(image)["Config"].get("Env") or []
    need = required_cuda(env)
    if need:
        labels[our_labels.REQUIRE] = need
    _, out = _run(client, image, ["-c", _PROBE], entrypoint=["/bin/sh"])
    labels[our_labels.COMPAT] = parse_compat_listing(out) or "none"
    ld_path = next((line for line in out.splitlines() if line.startswith("LD_LIBRARY_PATH=")), "")
    labels[our_labels.COMPAT_ON_PATH] = "true" if "compat" in ld_path else "false"
    library = next((line for line in out.splitlines() if line.startswith("/app/lib")), None)
    if devel_image and library:
        lib_tar = _single_file_tar("libggml-cuda.so", _copy_out(client, image, library))
        script = (
            "cuobjdump --list-elf /tmp/libggml-cuda.so; echo '=== PTX'; "
            "cuobjdump --list-ptx /tmp/libggml-cuda.so"
        )
        _, listing = _run(
            client, devel_image, ["-c", script], entrypoint=["/bin/sh"], files=("/tmp", lib_tar)
        )
        elf, _, ptx = listing.partition("=== PTX")
        labels[our_labels.SASS] = ",".join(parse_cuobjdump(elf)) or "none"
        labels[our_labels.PTX] = ",".join(parse_cuobjdump(ptx)) or "none"
    return labels


def probe_torch_arch(client: Any, image: str) -> dict[str, str]:
    """torch.cuda.get_arch_list() inside the vLLM image (empty without a GPU: run on one)."""
    code, out = _run(
        client,
        image,
        ["-c", "import torch; print(torch.cuda.get_arch_list())"],
        entrypoint=["python3"],
        gpu=True,
    )
    sass, ptx = parse_torch_arch_list(out)
    if code != 0 or not (sass or ptx):
        raise LlmhostError(f"torch.cuda.get_arch_list() in {image} gave: {out.strip()[-200:]}")
    return {our_labels.TORCH: ",".join([f"sm_{a}" for a in sass] + [f"compute_{a}" for a in ptx])}


def add_labels(client: Any, image: str, labels: dict[str, str]) -> str:
    """Re-tag `image` with extra labels (docker commit of a never-started container: no new
    layer, same entrypoint and config). Returns the new image id."""
    repository, _, tag = image.rpartition(":")
    box = client.create_container(image)
    try:
        changes = [f"LABEL {key}={json.dumps(value)}" for key, value in sorted(labels.items())]
        return str(client.commit(box["Id"], repository=repository, tag=tag, changes=changes)["Id"])
    finally:
        client.remove_container(box["Id"], force=True)


def verify_built_image(
    client: Any,
    service: str,
    image: str,
    labels: dict[str, str],
    plan: Plan,
    devel_image: str | None,
    progress: Progress,
) -> dict[str, str]:
    """After a build: refuse a CPU image this host cannot run; for GPU images, find what they really
    contain and return it as labels (empty when the tools could not run; doctor then warns)."""
    if service == "llama-cpu":
        verdict = cpu_image_check(
            labels, flags_of(plan.build.cpu_isa), plan.build.reason.split(":")[0], image
        )
        if verdict.level is Status.FAIL:
            raise LlmhostError(verdict.detail)
        progress(f"checked {image}: {verdict.detail}")
        return {}
    from docker.errors import DockerException

    found: dict[str, str] = {}
    try:
        cuobjdump_from = devel_image if service == "llama-gpu" else None
        found.update(probe_cuda_image(client, image, cuobjdump_from))
        if service == "vllm-gpu":
            found.update(probe_torch_arch(client, image))
    except (DockerException, LlmhostError, StopIteration, tarfile.TarError) as exc:
        progress(
            f"could not inspect {image} fully ({str(exc).splitlines()[0][:200]}); "
            "doctor will report it as unverified"
        )
    if found:
        progress(
            f"checked {image}: "
            + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(found.items()))
        )
    return found
