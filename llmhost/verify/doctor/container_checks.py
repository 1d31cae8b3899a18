"""Checks on Docker, compose, the NVIDIA runtime, built images and running services."""

from __future__ import annotations

from llmhost.facts import our_labels
from llmhost.plan.planner import BuildPlan
from llmhost.plan.services import LLAMA_CPP, REGISTRY
from llmhost.verify.doctor.result import Context, Finding, fail, needs_engine, ok, skip, warn
from llmhost.verify.image_checks import cmake_defines

IMAGE_PROFILES = {name: spec.image_profile for name, spec in REGISTRY.items()}


def flag_mismatches(label: str, build: BuildPlan) -> list[str]:
    """Plan switches the image lacks or has the other way: "-DGGML_AVX512=OFF (plan: ON)"."""
    have = cmake_defines(label)
    wrong = []
    for key, want in cmake_defines(" ".join(build.llama_cpu_cmake_flags)).items():
        if have.get(key) != want:
            wrong.append(f"-D{key}={have.get(key, 'unset')} (plan: {want})")
    return wrong


def docker_engine(ctx: Context) -> Finding:
    c = ctx.facts.containers
    if c.engine_reachable:
        return ok(
            f"Docker {c.engine_version} (API {c.api_version}), cgroup {c.cgroup_driver} "
            f"v{c.cgroup_version}, runtimes: {', '.join(c.runtimes)}"
        )
    return fail(
        f"Docker engine not reachable: {c.engine_error}",
        "ansible-playbook site.yml --tags docker  (or: systemctl start docker)",
    )


def docker_compose(ctx: Context) -> Finding:
    c = ctx.facts.containers
    if c.compose_version and int(c.compose_version.split(".")[0]) >= 2:
        return ok(f"docker compose {c.compose_version}")
    return fail(
        f"docker compose v2 missing ({c.compose_error or c.compose_version})",
        "ansible-playbook site.yml --tags docker  (installs the compose v2 plugin)",
    )


def nvidia_runtime(ctx: Context) -> Finding:
    c = ctx.facts.containers
    if not ctx.wants_gpu:
        return skip("cpu profile: no GPU containers")
    if not c.engine_reachable:
        return skip("Docker engine not reachable")
    fix = "ansible-playbook site.yml --tags nvidia_container_toolkit"
    if c.nvidia_container_cli_error:
        return fail(
            "GPU device requests (compose's device reservations, doctor's probes) run through "
            f"libnvidia-container, and `nvidia-container-cli info` failed: "
            f"{c.nvidia_container_cli_error}",
            fix,
        )
    lib = c.libnvidia_container_version or "version unknown"
    return ok(f"libnvidia-container {lib} sees the GPUs (`nvidia-container-cli info`)")


@needs_engine
def images_match(ctx: Context) -> Finding:
    if ctx.plan is None:
        return skip("no plan")
    c = ctx.facts.containers
    problems: list[str] = []
    missing: list[str] = []
    good: list[str] = []
    for svc in ctx.plan.services:
        image = next((i for i in c.images if svc.image in i.tags), None)
        if image is None:
            missing.append(svc.image)
            continue
        if svc.engine == LLAMA_CPP and not svc.gpu:
            wrong = flag_mismatches(image.labels.get(our_labels.CMAKE, ""), ctx.plan.build)
            if wrong:
                problems.append(f"{svc.image} was built with {', '.join(wrong)}")
                continue
        elif svc.engine == LLAMA_CPP:
            have = image.labels.get(our_labels.CUDA_ARCH)
            if have != ctx.plan.build.cuda_architectures:
                problems.append(
                    f"{svc.image} has CUDA archs {have!r}, GPUs need "
                    f"{ctx.plan.build.cuda_architectures!r}"
                )
                continue
        good.append(svc.image)
    profile_flag = f"--profile {ctx.profile}"
    if problems:
        return fail("; ".join(problems), f"llmhost build {profile_flag}")
    if missing:
        return warn(f"not built: {', '.join(missing)}", f"llmhost build {profile_flag}")
    return ok(f"built for this host: {', '.join(good)}")


@needs_engine
def services_healthy(ctx: Context) -> Finding:
    if ctx.plan is None:
        return skip("no plan")
    c = ctx.facts.containers
    ours = {x.service: x for x in c.containers if x.project == ctx.config.project}
    bad, down, good = [], [], []
    for svc in ctx.plan.services:
        box = ours.get(svc.name)
        if box is None or box.state != "running":
            down.append(svc.name)
        elif box.health not in (None, "healthy"):
            bad.append(f"{svc.name} is {box.health}")
        else:
            good.append(f"{svc.name} :{svc.port}")
    if bad:
        return fail("; ".join(bad), f"llmhost logs {bad[0].split()[0]}")
    if down:
        return warn(f"not running: {', '.join(down)}", f"llmhost deploy --profile {ctx.profile}")
    return ok("healthy: " + ", ".join(good))
