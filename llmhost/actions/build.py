"""Build the plan's images through the docker SDK, from templates rendered with the plan's flags."""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmhost import __version__
from llmhost.actions.source_fixes import FixedFile, fix_tree
from llmhost.actions.templates import render
from llmhost.cache import cache_dir
from llmhost.errors import LlmhostError
from llmhost.facts import our_labels
from llmhost.plan.config import Config
from llmhost.plan.planner import CUDA_IMAGES, Plan, ServicePlan
from llmhost.plan.services import REGISTRY, VLLM
from llmhost.progress import ByteProgress, Progress, PullProgress
from llmhost.verify import selftest
from llmhost.verify.floors import build_gate
from llmhost.verify.image_checks import add_labels, verify_built_image

# A release at or above every llama.cpp security floor known to llmhost (docs/security.md).
DEFAULT_LLAMA_REF = "b10864"
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)
CUDA_IMAGE = "nvidia/cuda:{version}-{flavour}-{os}"  # the devel one also holds cuobjdump


def cuda_image(version: str, flavour: str) -> str:
    """nvidia/cuda:<version>-<devel|runtime>-<the Ubuntu llmhost builds that CUDA on>."""
    return CUDA_IMAGE.format(version=version, flavour=flavour, os=CUDA_IMAGES[version])


LLAMA_TARBALL = "https://github.com/ggml-org/llama.cpp/archive/refs/tags/{ref}.tar.gz"
# Source paths a server build never reads: kept out of the build context.
CONTEXT_EXCLUDES = (
    "models",
    "docs",
    "media",
    "tests",
    "examples",
    "pocs",
    "benches",
    ".git",
    ".github",
    "build",
    "tools/ui/tests",
)


@dataclass(frozen=True)
class LlamaSource:
    tree: Path
    version: str  # "b10864", or what a local tree says of itself
    commit: str | None


@dataclass(frozen=True)
class BuiltImage:
    service: str
    tag: str
    image_id: str
    seconds: float
    labels: dict[str, str]


def _git_commit(tree: Path) -> str | None:
    """HEAD's commit from a checkout's .git (a dir, or a file pointing at one), without git."""
    git = tree / ".git"
    if git.is_file():
        target = git.read_text().partition("gitdir:")[2].strip()
        git = (tree / target).resolve()
    head = git / "HEAD"
    if not head.is_file():
        return None
    text = head.read_text().strip()
    if text.startswith("ref:"):
        ref = git / text[4:].strip()
        return ref.read_text().strip() if ref.is_file() else None
    return text or None


def local_source(path: str | Path) -> LlamaSource:
    tree = Path(path).resolve()
    if not (tree / "CMakeLists.txt").is_file() or not (tree / "ggml").is_dir():
        raise LlmhostError(f"{tree} is not a llama.cpp source tree (no CMakeLists.txt and ggml/)")
    commit = _git_commit(tree)
    version = "local" + (f"-{commit[:9]}" if commit else "")
    info = tree / "LLMHOST_SOURCE"  # written by test infra for trees taken from an sdist
    if info.is_file():
        version = info.read_text().strip() or version
    return LlamaSource(tree, version, commit)


def fetch_release(ref: str, progress: Progress) -> LlamaSource:
    """Download and unpack a llama.cpp release tarball once into the cache."""
    dest = cache_dir() / "llama-src" / ref
    tree = dest / "llama.cpp"
    if (tree / "CMakeLists.txt").is_file():
        return LlamaSource(tree, ref, None)
    url = LLAMA_TARBALL.format(ref=ref)
    progress(f"downloading llama.cpp {ref} from {url}")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, tempfile.TemporaryFile() as tmp:
            size = int(resp.headers.get("Content-Length") or 0)
            counter = ByteProgress(f"llama.cpp {ref}", size, progress)
            while chunk := resp.read(1 << 20):
                tmp.write(chunk)
                counter.add(len(chunk))
            tmp.seek(0)
            with tarfile.open(fileobj=tmp, mode="r:gz") as tar:
                tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise LlmhostError(
            f"cannot download llama.cpp {ref} ({exc}); on an air-gapped host pass "
            "--llama-source DIR"
        ) from None
    (dest / f"llama.cpp-{ref}").rename(tree)
    return LlamaSource(tree, ref, None)


def _excluded(rel: str) -> bool:
    return any(rel == e or rel.startswith(e + "/") for e in CONTEXT_EXCLUDES)


def build_context(
    dockerfile: str, source: LlamaSource | None, fixed: dict[str, FixedFile] | None = None
) -> IO[bytes]:
    """A gzip tar: the rendered Dockerfile plus `llama.cpp/` (no copy of the tree on disk), with
    `fixed` files (llmhost.actions.source_fixes) in place of the tree's."""
    fixed = fixed or {}
    buf = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed by the caller
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        if source is not None:
            for root, dirs, files in os.walk(source.tree):
                rel_root = os.path.relpath(root, source.tree)
                rel_root = "" if rel_root == "." else rel_root + "/"
                dirs[:] = [d for d in dirs if not _excluded(rel_root + d)]
                for name in files:
                    arcname = f"llama.cpp/{rel_root}{name}"
                    if rel_root + name in fixed:
                        data = fixed[rel_root + name].data
                        info = tar.gettarinfo(os.path.join(root, name), arcname)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
                    else:
                        tar.add(os.path.join(root, name), arcname, recursive=False)
    buf.seek(0)
    return buf


def from_refs(dockerfile: str) -> list[str]:
    """The images a Dockerfile builds FROM, in order, without earlier stages and scratch."""
    stages: set[str] = set()
    refs: list[str] = []
    for line in dockerfile.splitlines():
        if match := _FROM.match(line):
            ref, stage = match.group(1), match.group(2)
            if ref.lower() not in stages and ref != "scratch" and ref not in refs:
                refs.append(ref)
            if stage:
                stages.add(stage.lower())
    return refs


def base_digests(client: Any, dockerfile: str) -> str:
    """our_labels.BASE_IMAGES' value: each FROM image and the digest it is now (after the build,
    the engine has every base it pulled)."""
    from docker.errors import DockerException

    resolved = []
    for ref in from_refs(dockerfile):
        try:
            info = client.inspect_image(ref)
        except DockerException:
            resolved.append(f"{ref}=unresolved")
            continue
        digests = [d.split("@", 1)[1] for d in info.get("RepoDigests") or [] if "@" in d]
        resolved.append(f"{ref}={digests[0] if digests else info['Id']}")
    return ", ".join(resolved)


def labels_for(svc: ServicePlan, plan: Plan, source: LlamaSource | None) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": f"llmhost {svc.name}",
        "org.opencontainers.image.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "org.opencontainers.image.vendor": "llmhost",
        our_labels.PROFILE: REGISTRY[svc.name].image_profile,
        our_labels.BUILT_FOR: plan.hostname,
        our_labels.LLMHOST_VERSION: __version__,
        our_labels.ISA: ",".join(plan.build.cpu_isa),
    }
    if source is not None:
        labels["org.opencontainers.image.source"] = "https://github.com/ggml-org/llama.cpp"
        labels["org.opencontainers.image.version"] = source.version
        labels[our_labels.LLAMA_VERSION] = source.version
        if source.commit:
            labels["org.opencontainers.image.revision"] = source.commit
            labels[our_labels.LLAMA_COMMIT] = source.commit
    if plan.build.cuda_version and svc.gpu:
        labels[our_labels.CUDA_VERSION] = plan.build.cuda_version
    return labels


def render_dockerfile(
    svc: ServicePlan,
    plan: Plan,
    config: Config,
    base_image: str,
    labels: dict[str, str],
    jobs: int,
    buildkit: bool = False,
) -> str:
    """The service's Dockerfile template, given every build input (each uses what it needs)."""
    build = plan.build
    if svc.gpu and build.cuda_version is None:
        raise LlmhostError(f"{svc.name} needs a GPU plan: no NVIDIA GPU was detected")
    cuda = build.cuda_version
    return render(
        REGISTRY[svc.name].dockerfile,
        base_image=base_image,
        labels=labels,
        jobs=jobs,
        cmake_flags=list(build.llama_cpu_cmake_flags),
        cuda_devel_image=cuda_image(cuda, "devel") if cuda else None,
        cuda_runtime_image=cuda_image(cuda, "runtime") if cuda else None,
        cuda_architectures=build.cuda_architectures,
        vllm_version=config.images.vllm_version,
        torch_cuda_arch_list=build.torch_cuda_arch_list,
        buildkit=buildkit,
    )


@dataclass(frozen=True)
class BuildKit:
    """A docker CLI that builds with BuildKit: its argv and the environment it needs."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def _docker_clis() -> list[str]:
    """Every `docker` executable on PATH, in PATH's order, each file once."""
    found: list[str] = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = os.path.join(folder or ".", "docker")
        if os.access(path, os.X_OK) and os.path.realpath(path) not in map(os.path.realpath, found):
            found.append(path)
    return found


def find_buildkit() -> BuildKit | None:
    """The first docker CLI on PATH that builds with BuildKit: one with the buildx plugin, or a
    CLI older than 23.0, whose `docker build` is BuildKit's own when DOCKER_BUILDKIT=1 (newer
    CLIs hand BuildKit builds to buildx alone). None: the engine's classic builder."""
    for cli in _docker_clis():
        try:
            if subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=20,
                              check=False).returncode == 0:  # fmt: skip
                return BuildKit((cli, "buildx", "build", "--load"))  # into the engine's images
            version = subprocess.run(
                [cli, "version", "--format", "{{.Client.Version}}"],
                capture_output=True, text=True, timeout=20, check=False,
            ).stdout  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = re.match(r"\s*(\d+)\.", version)
        if major and int(major[1]) < 23:
            return BuildKit((cli, "build"), (("DOCKER_BUILDKIT", "1"),))
    return None


TAIL_LINES = 8  # of the build log, in the error when a build fails


def _build_failed(why: str, tail: deque[str]) -> LlmhostError:
    """A failed build, either builder's: why, then the last lines of its log."""
    return LlmhostError(f"image build failed: {why}\n" + "\n".join(tail))


def build_with_buildkit(kit: BuildKit, context: IO[bytes], tag: str, progress: Progress) -> None:
    """`docker build` of a gzip tar context on stdin, BuildKit's plain log streamed."""
    cmd = [*kit.argv, "--progress=plain", "--tag", tag, "-"]
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    env = {**os.environ, **dict(kit.env)}
    with subprocess.Popen(cmd, stdin=context, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", env=env) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                tail.append(line.rstrip())
                progress(line.rstrip())
        rc = proc.wait()
    if rc != 0:
        raise _build_failed(f"{' '.join(kit.argv)} exited {rc}", tail)


def _floor_gates(
    plan: Plan,
    config: Config,
    source: LlamaSource | None,
    allow_below_floor: bool,
    progress: Progress,
) -> dict[str, dict[str, str]]:
    """Security-floor labels per service; raises before any build when a version is below."""
    flags = " ".join(plan.build.llama_cpu_cmake_flags)
    gates: dict[str, dict[str, str]] = {}
    for svc in plan.services:
        version = (
            config.images.vllm_version if svc.engine == VLLM else (source.version if source else "")
        )
        gates[svc.name], note = build_gate(
            svc.name, version, allow_below_floor=allow_below_floor, cmake_flags=flags
        )
        if note:
            progress(note)
    return gates


def _stream(events: Iterator[dict[str, Any]], progress: Progress) -> str:
    """Print the build log as it streams (a base image's pull condensed); return the image id or
    raise with the last lines."""
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    image_id = ""
    pull = PullProgress(progress)
    for event in events:
        if "status" in event:
            pull.feed(event)
        if "stream" in event:
            for line in event["stream"].splitlines():
                if line.strip():
                    tail.append(line)
                    progress(line)
        if "aux" in event and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
        if "error" in event:
            raise _build_failed(event["error"].strip(), tail)
    return image_id


def with_tag(image: str, tag: str) -> str:
    """`llmhost/llama-cpu:latest` -> `llmhost/llama-cpu:<tag>`."""
    return f"{image.rpartition(':')[0] or image}:{tag}"


def selftest_gate(
    client: Any, svc: ServicePlan, candidate: str, plan: Plan, progress: Progress, *, run: bool
) -> dict[str, str]:
    """Self-test a CPU image before it gets its tag: labels to record on success; on a crash the
    candidate is kept as `:refused` (its labels tell the next plan what to leave out) and the
    build stops with the signal, the instruction when known, and the fix."""
    if not run:
        progress(f"self-test of {svc.image} not run: built for {plan.hostname}, not this host")
        return {our_labels.SELFTEST: f"not run: built for {plan.hostname} on another host"}
    progress(f"self-test: llama-bench of {candidate} on {', '.join(selftest.MODEL_TYPES)} models")
    result = selftest.run_selftest(client, candidate, threads=min(4, os.cpu_count() or 2))
    summary = result.summary()
    if result.passed:
        progress(f"self-test passed: {summary}")
        return {our_labels.SELFTEST: "passed", our_labels.SELFTEST_CPU: plan.build.cpu_model}
    for case in result.crashed:
        progress(f"--- {case.name}: exit {case.exit_code} ---\n{case.output}")
    leave = result.leave_out(plan.build.cpu_isa)
    refused = with_tag(svc.image, "refused")
    labels = {
        our_labels.SELFTEST: f"failed: {summary}"[:900],
        our_labels.SELFTEST_LEAVE_OUT: leave or "",
        our_labels.SELFTEST_CPU: plan.build.cpu_model,
    }
    add_labels(client, candidate, labels)
    client.tag(candidate, *refused.rsplit(":", 1))
    client.remove_image(candidate)
    if leave:
        fix = (
            f"run `llmhost build --profile cpu` again: the next plan leaves {leave} out on this "
            f"CPU ({refused} records why; `docker rmi {refused}` forgets it)"
        )
    else:
        fix = (
            "build another llama.cpp release (--llama-ref TAG) and report it with "
            f"`llmhost snapshot`; {refused} keeps the image for a look"
        )
    raise LlmhostError(
        f"{svc.image} was not tagged: its self-test crashed on this CPU: {summary}", fix=fix
    )


def build_images(
    plan: Plan,
    config: Config,
    *,
    source: LlamaSource | None,
    base_image: str | None,
    progress: Progress,
    jobs: int | None = None,
    allow_below_floor: bool = False,
    selftest_here: bool = True,
    buildkit: BuildKit | None = None,
) -> list[BuiltImage]:
    """Build every planned service's image; the llama ones from `source` with the known source
    fixes. Versions below their security floor are refused first; each image is built under a
    `:candidate` tag, checked against the plan's host, the CPU image self-tested (unless built
    for another host: `selftest_here`), and only then tagged as the plan names it. With
    `buildkit` the docker CLI builds them (compiles through ccache in a cache mount), else the
    engine's classic builder."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.APIClient(timeout=3600)
        client.ping()
    except DockerException as exc:
        raise LlmhostError(f"Docker engine not reachable: {str(exc).splitlines()[0]}") from None
    built = []
    gates = _floor_gates(plan, config, source, allow_below_floor, progress)
    for svc in plan.services:
        needs_source = REGISTRY[svc.name].needs_llama_source
        if needs_source and source is None:
            raise LlmhostError("no llama.cpp source given")
        labels = {**labels_for(svc, plan, source if needs_source else None), **gates[svc.name]}
        fixed = fix_tree(source.tree, plan.build.llama_cpu_cmake_flags) if source else {}
        for rel, fixed_file in fixed.items() if needs_source else ():
            fix = fixed_file.fix
            progress(f"llama.cpp source fix {fix.id} in {rel}: {fix.why} ({fix.upstream})")
        if fixed and needs_source:
            labels[our_labels.SOURCE_FIXES] = ",".join(sorted(f.fix.id for f in fixed.values()))
        if plan.build.left_out and needs_source:
            labels[our_labels.ISA_LEFT_OUT] = "; ".join(
                f"{k}: {v}" for k, v in plan.build.left_out.items()
            )
        planned_jobs = plan.build.cuda_compile_jobs if svc.gpu else plan.build.compile_jobs
        dockerfile = render_dockerfile(
            svc, plan, config, base_image or config.images.base_image, labels,
            jobs or planned_jobs, buildkit=buildkit is not None,
        )  # fmt: skip
        candidate = with_tag(svc.image, "candidate")
        how = "BuildKit" if buildkit else "the classic builder"
        progress(f"building {svc.image} ({svc.name}) with {how}")
        start = time.monotonic()
        context = build_context(dockerfile, source if needs_source else None, fixed)
        with context as ctx:
            if buildkit is not None:
                build_with_buildkit(buildkit, ctx, candidate, progress)
            else:
                events = client.build(
                    fileobj=ctx,
                    custom_context=True,
                    encoding="gzip",
                    tag=candidate,
                    rm=True,
                    forcerm=True,
                    decode=True,
                )
                _stream(events, progress)
        info = client.inspect_image(candidate)
        cuda = plan.build.cuda_version
        devel = cuda_image(cuda, "devel") if cuda else None
        found = verify_built_image(
            client, svc.name, candidate, info["Config"].get("Labels") or {}, plan, devel, progress
        )
        if needs_source and not svc.gpu:  # a CPU llama.cpp image: self-test it here
            found.update(selftest_gate(client, svc, candidate, plan, progress, run=selftest_here))
        found[our_labels.BASE_IMAGES] = base_digests(client, dockerfile)
        image_id = add_labels(client, candidate, found) if found else info["Id"]
        if found.get(our_labels.SELFTEST) == "passed":
            selftest.remember(image_id, plan.build.cpu_model, "self-test passed at build")
        client.tag(image_id, *svc.image.rsplit(":", 1))
        client.remove_image(candidate)
        info = client.inspect_image(svc.image)
        seconds = time.monotonic() - start
        progress(f"built {svc.image} in {seconds:.0f} s")
        built.append(
            BuiltImage(
                svc.name,
                svc.image,
                image_id,
                seconds,
                dict(info["Config"].get("Labels") or {}),
            )
        )
    client.close()
    return built
