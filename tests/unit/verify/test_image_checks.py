"""What images really contain: cuobjdump listings, torch arch lists, CUDA vs driver, forward
compatibility, and CPU instruction sets against a host without AVX-512.

tests/fixtures/cuobjdump/ holds real `cuobjdump` 13.5 output over small CUDA libraries built with
nvcc 13.0 the way the plan's flags build libggml-cuda: h100 = arch 90 (SASS + PTX), 5090 = 120a
(SASS only), ptx = 90-virtual (PTX only), multi = 89 + 120a.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.actions.deploy import preflight
from llmhost.errors import LlmhostError
from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config
from llmhost.plan.planner import make_plan
from llmhost.verdict import Status
from llmhost.verify.image_checks import (
    CuobjdumpError,
    cpu_image_check,
    cuda_driver_check,
    forward_compat_check,
    image_isa,
    machine_code_check,
    missing_isa,
    parse_compat_listing,
    parse_cuobjdump,
    parse_system_info,
    parse_torch_arch_list,
    required_cuda,
)
from tests.support import FIXTURES, REPO, SNAPSHOTS

CUOBJDUMP = FIXTURES / "cuobjdump"
ZEN3 = SNAPSHOTS / "ryzen9-5900xt-noavx512.tar.gz"


def listing(build: str, kind: str) -> str:
    return (CUOBJDUMP / f"{build}.list-{kind}.txt").read_text()


@pytest.mark.parametrize(
    ("build", "sass", "ptx"),
    [
        ("h100", ("90",), ("90",)),
        ("5090", ("120a",), ()),
        ("ptx", (), ("90",)),
        ("multi", ("89", "120a"), ("120a",)),
    ],
)
def test_parse_real_cuobjdump_listings(build, sass, ptx):
    assert parse_cuobjdump(listing(build, "elf")) == sass
    assert parse_cuobjdump(listing(build, "ptx")) == ptx


def test_cuobjdump_errors_and_other_spellings():
    with pytest.raises(CuobjdumpError, match="Could not open input file"):
        parse_cuobjdump("cuobjdump fatal   : Could not open input file '/x/libggml-cuda.so'\n")
    assert parse_cuobjdump("cuobjdump info    : File 'k.cu' does not contain device code") == ()
    assert parse_cuobjdump("ELF file    1: libggml-cuda.so.0.14.36.sm_120a.cubin") == ("120a",)
    assert parse_cuobjdump("PTX file    1: embedded.compute_120.ptx") == ("120",)


@pytest.mark.parametrize(
    ("build", "cc", "level", "text"),
    [
        ("h100", (9, 0), Status.OK, "has sm_90 machine code"),
        ("ptx", (9, 0), Status.WARN, "only PTX sm_90: the driver JIT-compiles"),
        ("5090", (12, 0), Status.OK, "has sm_120 machine code (sm_120a)"),
        ("5090", (9, 0), Status.FAIL, "no kernel image is available"),
        ("h100", (12, 0), Status.WARN, "only PTX sm_90"),  # PTX 9.0 JITs on newer GPUs
        ("multi", (8, 9), Status.OK, "sm_89"),
        ("multi", (8, 6), Status.FAIL, "neither sm_86"),  # sm_89 code does not run on 8.6
        ("multi", (12, 1), Status.FAIL, ""),  # 120a is for 12.0 exactly
    ],
)
def test_machine_code_verdicts(build, cc, level, text):
    result = machine_code_check(
        parse_cuobjdump(listing(build, "elf")), parse_cuobjdump(listing(build, "ptx")), cc
    )
    assert result.level is level, result.detail
    assert text in result.detail


def test_compatible_machine_code_is_a_warning():
    result = machine_code_check(("80",), (), (8, 6))
    assert result.level is Status.WARN and "compatible sm_80" in result.detail


def test_torch_arch_list():
    text = "['sm_75', 'sm_80', 'sm_86', 'sm_89', 'sm_90', 'sm_100', 'sm_120', 'compute_120']\n"
    sass, ptx = parse_torch_arch_list(text)
    assert sass == ("75", "80", "86", "89", "90", "100", "120") and ptx == ("120",)
    assert machine_code_check(sass, ptx, (9, 0), "torch").level is Status.OK
    old = parse_torch_arch_list("['sm_70', 'sm_75', 'sm_80', 'sm_86', 'compute_86']")
    assert machine_code_check(*old, (12, 0)).level is Status.WARN  # PTX JIT only


def test_cuda_image_against_driver():
    env = [
        "PATH=/usr/bin",
        "CUDA_VERSION=13.0.1",
        "NVIDIA_REQUIRE_CUDA=cuda>=13.0 brand=unknown,driver>=535,driver<536",
    ]
    assert required_cuda(env) == "13.0"
    assert required_cuda(["CUDA_VERSION=12.8.1"]) == "12.8"
    assert required_cuda(["PATH=/bin"]) is None
    bad = cuda_driver_check("13.0.1", "12.8", "llmhost/llama-cuda:latest")
    assert bad.level is Status.FAIL
    assert "unsatisfied condition: cuda>=13.0" in bad.detail
    assert cuda_driver_check("12.8.1", "13.0").level is Status.OK
    assert cuda_driver_check("12.9.1", "12.8").level is Status.FAIL  # minor too new as well


def test_forward_compat_listing():
    ls = "libcuda.so\nlibcuda.so.1\nlibcuda.so.580.82.07\nlibnvidia-nvvm.so.4\nLD_LIBRARY_PATH=/usr"
    assert parse_compat_listing(ls) == "580.82.07"
    assert parse_compat_listing("LD_LIBRARY_PATH=") is None


@pytest.mark.parametrize(
    ("compat", "host", "gpu", "on_path", "level", "text"),
    [
        (None, "580.95.05", "NVIDIA H100 80GB HBM3", False, Status.OK, "no CUDA forward-compat"),
        ("575.57.08", "580.95.05", "NVIDIA H100 80GB HBM3", False, Status.OK, "unused"),
        ("575.57.08", "580.95.05", "NVIDIA GeForce RTX 5090", True, Status.FAIL, "LD_LIBRARY_PATH"),
        ("580.82.07", "570.172.08", "NVIDIA H100 80GB HBM3", False, Status.WARN, "overrides"),
        ("580.82.07", "570.172.08", "NVIDIA GeForce RTX 5090", False, Status.FAIL, "error 804"),
    ],
)
def test_forward_compat(compat, host, gpu, on_path, level, text):
    result = forward_compat_check(compat, host, [gpu], on_path)
    assert result.level is level and text in result.detail


SYSTEM_INFO = (
    "system_info: n_threads = 8 (n_threads_batch = 8) / 16 | CPU : SSE3 = 1 | SSSE3 = 1 | "
    "AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | "
    "AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)


def zen3_facts():
    return gather(SnapshotSource(ZEN3))


def test_system_info_line_and_missing_isa():
    isa = parse_system_info(SYSTEM_INFO)
    assert isa == (
        "sse3",
        "ssse3",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "bmi2",
        "avx512",
        "avx512_vbmi",
        "avx512_vnni",
        "avx512_bf16",
    )
    cpu = zen3_facts().cpu
    assert not cpu.has("avx512f") and cpu.has("avx2")
    assert missing_isa(isa, cpu.flags) == ("avx512", "avx512_vbmi", "avx512_vnni", "avx512_bf16")


def test_isa_from_cmake_flags_when_the_isa_label_is_missing():
    labels = {"io.llmhost.llama.cmake_flags": "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=ON"}
    assert image_isa(labels) == ("avx2", "avx512")


def test_cpu_image_refused_on_a_cpu_without_avx512():
    facts = zen3_facts()
    image = next(i for i in facts.containers.images if "llmhost/llama-cpu:latest" in i.tags)
    result = cpu_image_check(image.labels, facts.cpu.flags, facts.cpu.model_name)
    assert result.level is Status.FAIL
    assert "avx512, avx512_vbmi, avx512_vnni, avx512_bf16" in result.detail
    assert "AMD Ryzen 9 5900XT" in result.detail and "SIGILL" in result.detail
    native = {"io.llmhost.llama.cmake_flags": "-DGGML_NATIVE=ON"}
    assert cpu_image_check(native, facts.cpu.flags, "x").level is Status.WARN
    variants = {"io.llmhost.llama.cmake_flags": "-DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"}
    assert cpu_image_check(variants, facts.cpu.flags, "x").level is Status.OK


def test_deploy_preflight_refuses_before_starting_anything(tmp_path):
    facts = zen3_facts()
    config = Config(models_dir=str(tmp_path))
    plan = make_plan(facts, config, "cpu")
    with pytest.raises(LlmhostError) as exc:
        preflight(plan, config, facts, allow_no_hugepages=True)
    message = str(exc.value)
    assert message.startswith("llmhost/llama-cpu:latest was compiled for avx512")
    assert "llmhost build --profile cpu" in message


def _fake_cuobjdump(tmp_path: Path, build: str) -> Path:
    """A stand-in printing the recorded listing (no CUDA tools here); the H100 run uses the real."""
    tool = tmp_path / "cuobjdump"
    tool.write_text(
        "#!/bin/sh\n"
        f'case "$1" in --list-elf) cat "{CUOBJDUMP}/{build}.list-elf.txt";;'
        f' --list-ptx) cat "{CUOBJDUMP}/{build}.list-ptx.txt";; esac\n'
    )
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return tool


@pytest.mark.parametrize(
    ("build", "code", "word"), [("h100", 0, "ok:"), ("ptx", 1, "warn:"), ("5090", 2, "fail:")]
)
def test_cuda_arch_check_script(tmp_path, build, code, word):
    tool = _fake_cuobjdump(tmp_path, build)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "cuda_arch_check.py"),
            "libggml-cuda.so",
            "--arch",
            "90",
            "--cuobjdump",
            str(tool),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith(word)
