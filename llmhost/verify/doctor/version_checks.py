"""Security floors (llmhost/data/floors.toml) and what the built images really contain.

Every verdict comes from facts already gathered (nvidia-ctk --version, the engine's version
components, image labels): no subprocess here, so doctor stays fast.
"""

from __future__ import annotations

from llmhost.facts import our_labels
from llmhost.facts.containers import ImageInfo
from llmhost.plan.planner import IMAGES
from llmhost.verdict import Status
from llmhost.verify.doctor.result import Context, Finding, fail, needs_engine, ok, skip, warn
from llmhost.verify.floors import State, Verdict, check, engine_scopes, scopes_of
from llmhost.verify.image_checks import (
    Check,
    cpu_image_check,
    cuda_driver_check,
    forward_compat_check,
    machine_code_check,
    parse_torch_arch_list,
)

_RANK = {Status.SKIP: 0, Status.OK: 1, Status.WARN: 2, Status.FAIL: 3}


def _finding(verdict: Verdict, prefix: str = "") -> Finding:
    detail = prefix + verdict.describe()
    state = verdict.state
    if state in (State.VULNERABLE, State.REFUSED):
        return fail(detail, verdict.component.fix)
    if state is State.UNKNOWN:
        return warn(detail, verdict.component.fix)
    return ok(detail)


def nvidia_toolkit(ctx: Context) -> Finding:
    """nvidia-ctk and libnvidia-container, which is packaged and patched on its own (the GPU
    device requests run through it): each against the toolkit's floors."""
    c = ctx.facts.containers
    found = []
    if c.nvidia_ctk_version:
        found.append(_finding(check("nvidia-container-toolkit", c.nvidia_ctk_version)))
    if c.libnvidia_container_version:
        found.append(
            _finding(
                check("nvidia-container-toolkit", c.libnvidia_container_version),
                "libnvidia-container: ",
            )
        )
    if not found:
        return skip("nvidia-ctk not installed")
    return max(found, key=lambda f: _RANK[f.status])


@needs_engine
def container_runtime(ctx: Context) -> Finding:
    """runc decides the runc escapes; the engine's version (the runc it shipped) only when runc
    is not reported."""
    c = ctx.facts.containers
    if c.runc_version:
        return _finding(check("runc", c.runc_version), f"Docker {c.engine_version}, ")
    if c.engine_version:
        verdict = check("docker-engine", c.engine_version, judged_by="runc")
        return _finding(verdict, "runc version not reported; ")
    return warn("the engine reported neither its version nor runc's")


@needs_engine
def docker_engine(ctx: Context) -> Finding:
    """The engine's own advisories (published-port filtering); the firewalld-scoped ones only
    where the engine reports firewalld as its firewall backend."""
    c = ctx.facts.containers
    if not c.engine_version:
        return warn("the engine did not report its version")
    scopes = engine_scopes(c.firewall_backend)
    verdict = check("docker-engine", c.engine_version, scopes, judged_by=None)
    return _finding(verdict, "firewalld running; " if scopes else "")


@needs_engine
def containerd(ctx: Context) -> Finding:
    c = ctx.facts.containers
    if not c.containerd_version:
        return skip("the engine reports no containerd component")
    return _finding(check("containerd", c.containerd_version))


def _our_images(ctx: Context) -> list[tuple[str, ImageInfo]]:
    """(service, image) for each llmhost image the plan uses (every built one without a plan)."""
    c = ctx.facts.containers
    wanted = [s.name for s in ctx.plan.services] if ctx.plan else list(IMAGES)
    found = []
    for service in wanted:
        image = next((i for i in c.images if IMAGES[service] in i.tags), None)
        if image is not None:
            found.append((service, image))
    return found


_RANK = {Status.OK: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2}


def _worst(findings: list[Finding]) -> Status:
    return max((f.status for f in findings), key=_RANK.__getitem__, default=Status.SKIP)


def _combine(findings: list[Finding], none: str) -> Finding:
    if not findings:
        return skip(none)
    status = _worst(findings)
    chosen = [f for f in findings if f.status is status]
    detail = "; ".join(f.detail for f in chosen)
    fix = next((f.remediation for f in chosen if f.remediation), None)
    return Finding(status, detail, fix)


@needs_engine
def image_floors(ctx: Context) -> Finding:
    """llama.cpp build and vLLM version in each image against their floors, overrides included."""
    findings = []
    for service, image in _our_images(ctx):
        tag, labels = IMAGES[service], image.labels
        override = labels.get(our_labels.FLOOR_OVERRIDE)
        if override:
            findings.append(
                fail(
                    f"{tag} was built below its security floor: {override}",
                    f"llmhost build --profile {_profile(service)}",
                )
            )
            continue
        if service == "vllm-gpu":
            version, component, scopes = labels.get(our_labels.VLLM_VERSION), "vllm", frozenset()
        else:
            version, component = labels.get(our_labels.LLAMA_VERSION), "llama-cpp"
            scopes = scopes_of(labels.get(our_labels.CMAKE, ""))
        if not version:
            findings.append(
                warn(
                    f"{tag} has no version label (built before llmhost recorded it)",
                    f"llmhost build --profile {_profile(service)}",
                )
            )
            continue
        verdict = check(component, version, scopes)
        finding = _finding(verdict, f"{tag}: ")
        if verdict.state is not State.OK:
            finding = Finding(
                finding.status, finding.detail, f"llmhost build --profile {_profile(service)}"
            )
        findings.append(finding)
    return _combine(findings, "no llmhost images built")


def _profile(service: str) -> str:
    return "cpu" if service == "llama-cpu" else "gpu"


def cpu_image_isa(ctx: Context) -> Finding:
    """The instruction sets compiled into the llama.cpp CPU image, against this CPU's flags."""
    image = dict(_our_images(ctx)).get("llama-cpu")
    if image is None:
        return skip("no llama-cpu image built (or not in this profile)")
    cpu = ctx.facts.cpu
    return _from_check(cpu_image_check(image.labels, cpu.flags, cpu.model_name))


def _from_check(result: Check) -> Finding:
    return Finding(result.level, result.detail, result.fix)


def gpu_images(ctx: Context) -> Finding:
    """GPU images: machine code for these GPUs, CUDA against the driver, forward-compat libs."""
    gpu = ctx.facts.gpu
    images = [(s, i) for s, i in _our_images(ctx) if s != "llama-cpu"]
    if not images:
        return skip("no GPU images built (or not in this profile)")
    if not gpu.present:
        return skip("no GPU here to judge the GPU images against")
    caps = sorted({g.cc_tuple for g in gpu.gpus if g.cc_tuple})
    names = [g.name for g in gpu.gpus]
    findings: list[Finding] = []
    for service, image in images:
        tag, labels = IMAGES[service], image.labels
        image_cuda = labels.get(our_labels.REQUIRE) or (
            labels.get(our_labels.CUDA_VERSION) if service == "llama-gpu" else None
        )
        if image_cuda and gpu.cuda_driver_version:
            verdict = cuda_driver_check(image_cuda, gpu.cuda_driver_version, tag)
            findings.append(_from_check(verdict))
        if service == "llama-gpu":
            sass, ptx = _archs(labels.get(our_labels.SASS)), _archs(labels.get(our_labels.PTX))
            what = f"{tag} (libggml-cuda)"
        else:
            sass, ptx = parse_torch_arch_list(labels.get(our_labels.TORCH, ""))
            what = f"{tag} (torch)"
        if sass is None or (not sass and not ptx and service == "vllm-gpu"):
            findings.append(
                warn(
                    f"{what}: machine code not verified (built before llmhost "
                    "checked it, or the check could not run)",
                    f"llmhost build --profile {_profile(service)}",
                )
            )
        else:
            for cc in caps:
                findings.append(_from_check(machine_code_check(sass, ptx or (), cc, what)))
        if our_labels.COMPAT in labels:
            on_path = labels.get(our_labels.COMPAT_ON_PATH) == "true"
            findings.append(
                _from_check(
                    forward_compat_check(
                        labels[our_labels.COMPAT], gpu.driver_version, names, on_path, tag
                    )
                )
            )
    problems = [f for f in findings if f.status is not Status.OK]
    if problems:
        return _combine(problems, "")
    return ok("; ".join(f.detail for f in findings))


def _archs(label: str | None) -> tuple[str, ...] | None:
    if label is None:
        return None
    return tuple(a for a in label.split(",") if a and a != "none")
