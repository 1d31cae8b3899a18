"""The CPU image's self-test, for real: the product image passes it here; an image whose
extra-buffer kernels (AMX / repacked weights) execute an AMX instruction this CPU cannot run -
what the Intel CI machines hit - is refused by the build's gate with the signal, the instruction
and the fix, kept as `:refused`, and the next plan leaves AMX out; doctor fails it too.

The crashing image is the product image with one change: the entry of every extra-buffer
`compute_forward` in libggml-cpu.so overwritten with `tilezero %tmm4` (c4 e2 7b 49 e0), which
raises #UD on any CPU without configured AMX tiles. Building a crashing llama.cpp from source
would take the CI machine half an hour; this takes seconds and crashes the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from llmhost.actions.build import selftest_gate, with_tag
from llmhost.errors import LlmhostError
from llmhost.facts import gather, our_labels
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config
from llmhost.plan.planner import make_plan
from llmhost.verify import selftest
from tests.e2e import infra

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
TILEZERO_TMM4 = bytes.fromhex("c4e27b49e0")
CRASHING = "llmhost/llama-cpu-selftest:crashing"
# Extra-buffer kernels: repacked weights (any x86) and AMX.
EXTRA_BUFFER_KERNELS = re.compile(r"(repack|amx)13tensor_traits.*compute_forward")


def _prereq(what: str, exc: Exception) -> None:
    if os.environ.get("LLMHOST_E2E") == "1":
        pytest.fail(f"{what}: {exc}")
    pytest.skip(f"{what}: {exc}")


@pytest.fixture(scope="module")
def product_image() -> str:
    try:
        return infra.ensure_llama_cpu_image()
    except infra.InfraError as exc:
        _prereq("llama-cpu image", exc)
        raise


@pytest.fixture(scope="module")
def crashing_image(product_image: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        box = subprocess.run(["docker", "create", product_image], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        try:
            readlink = ["docker", "run", "--rm", "--entrypoint", "readlink", product_image]
            real = subprocess.run([*readlink, "-f", "/app/libggml-cpu.so"], capture_output=True,
                                  text=True, check=True).stdout.strip()  # fmt: skip
            subprocess.run(["docker", "cp", f"{box}:{real}", str(work / "lib.so")], check=True)
        finally:
            subprocess.run(["docker", "rm", box], capture_output=True, check=False)
        lib = bytearray((work / "lib.so").read_bytes())
        symbols = subprocess.run(["nm", "-D", "--defined-only", str(work / "lib.so")],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        patched = 0
        for line in symbols.splitlines():
            address, _, name = line.split(maxsplit=2)
            if EXTRA_BUFFER_KERNELS.search(name):
                offset = selftest.file_offset(bytes(lib), int(address, 16))
                assert offset is not None, name
                lib[offset : offset + len(TILEZERO_TMM4)] = TILEZERO_TMM4
                patched += 1
        assert patched, "no extra-buffer compute_forward symbol in libggml-cpu.so"
        name = Path(real).name
        (work / name).write_bytes(bytes(lib))
        (work / "Dockerfile").write_text(f"FROM {product_image}\nCOPY {name} {real}\n")
        subprocess.run(["docker", "build", "-q", "-t", CRASHING, str(work)], check=True,
                       capture_output=True)  # fmt: skip
    yield CRASHING
    for tag in (CRASHING, with_tag(CRASHING, "refused"), with_tag(CRASHING, "candidate")):
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


def test_product_image_passes_its_selftest(product_image: str) -> None:
    import docker

    result = selftest.run_selftest(docker.APIClient(), product_image)
    assert result.passed, result.summary()
    assert {(c.model, c.repack) for c in result.cases} == {
        (m, r) for m in selftest.MODEL_TYPES for r in (True, False)
    }


def test_a_crashing_build_is_refused_and_amx_left_out(crashing_image: str) -> None:
    import docker

    client = docker.APIClient()
    facts = gather(LiveSource())
    plan = make_plan(facts, Config(inference_cores=1), "cpu")
    svc = plan.service("llama-cpu")
    candidate = with_tag(crashing_image, "candidate")
    client.tag(crashing_image, *candidate.rsplit(":", 1))
    svc = type(svc)(**{**svc.__dict__, "image": crashing_image})
    lines: list[str] = []
    before = selftest.kernel_log()
    with pytest.raises(LlmhostError) as exc:
        selftest_gate(client, svc, candidate, plan, lines.append, run=True)
    message = str(exc.value)
    assert message.startswith(f"{crashing_image} was not tagged: its self-test crashed on this CPU")
    assert "SIGILL (illegal instruction)" in message
    assert "q4_0 with extra-buffer kernels" in message
    assert "without extra-buffer kernels" not in message.split("(")[-1]  # those runs passed
    after = selftest.kernel_log()
    if after is None:
        assert "the kernel log is not readable here" in message, message
    elif _trapped(before, after):  # the kernel named the place: the instruction read back
        assert "at `tilezero %tmm4`" in message or "(amx_tile)" in message, message
        assert "libggml-cpu.so" in message
    else:
        # Not every SIGILL is logged: on a CPU with AMX, a tile instruction of a process
        # without AMX permission is refused through the #NM handler, which prints nothing
        # (and printk's rate limit can drop a trap line). The gate still decides.
        assert "the kernel logged no fault for it" in message, message
    assert "leaves amx out" in (exc.value.fix or ""), exc.value.fix
    # The candidate is gone, kept as :refused, labelled for the next plan.
    refused = with_tag(crashing_image, "refused")
    labels = client.inspect_image(refused)["Config"]["Labels"]
    assert labels[our_labels.SELFTEST].startswith("failed: llama-bench died with SIGILL")
    assert labels[our_labels.SELFTEST_LEAVE_OUT] == "amx"
    assert labels[our_labels.SELFTEST_CPU] == facts.cpu.model_name
    assert not client.images(name=candidate)
    replan = make_plan(gather(LiveSource()), Config(inference_cores=1), "cpu")
    assert "amx" in replan.build.left_out
    assert f"docker rmi {refused}" in replan.build.left_out["amx"]
    assert "-DGGML_AMX_INT8=OFF" in replan.build.llama_cpu_cmake_flags


def _trapped(before: str | None, after: str) -> bool:
    """Whether the kernel logged a llama-bench trap between two reads of its log."""
    new = after[len(before) :] if before and after.startswith(before) else after
    return any("llama-bench[" in line and "trap" in line for line in new.splitlines())


def test_doctor_fails_a_crashing_image(crashing_image: str, tmp_path: Path) -> None:
    """doctor runs the same self-test against the llama-cpu image it finds."""
    import docker

    client = docker.APIClient()
    product = "llmhost/llama-cpu:latest"
    keep = client.inspect_image(product)["Id"]
    client.tag(crashing_image, "llmhost/llama-cpu", "latest")
    try:
        config = tmp_path / "llmhost.yaml"
        config.write_text("inference_cores: 1\n")
        proc = subprocess.run(
            [sys.executable, "-m", "llmhost.cli.main", "--config", str(config), "doctor",
             "--json", "--profile", "cpu"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        checks = {c["id"]: c for c in json.loads(proc.stdout)["checks"]}
        found = checks["images.cpu_selftest"]
        assert found["status"] == "fail", found
        assert "crashes on this CPU" in found["detail"] and "SIGILL" in found["detail"]
        assert found["remediation"] == "llmhost build --profile cpu"
        assert proc.returncode == 1
    finally:
        client.tag(keep, "llmhost/llama-cpu", "latest")


def test_nm_is_available() -> None:
    """The crashing image above is made with binutils' nm (scripts/test-all.sh installs it)."""
    assert shutil.which("nm"), "binutils missing: apt-get install -y binutils"
