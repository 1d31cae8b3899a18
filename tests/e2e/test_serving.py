"""Serving path end to end, for real: build the CPU image from the vendored llama.cpp, deploy it
with compose, bench it, check doctor's live view, the bad-input refusals, and `down`.

Needs root and a Docker engine (tests/e2e/infra.py starts one). With LLMHOST_E2E=1 (CI) a
missing prerequisite fails the run instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import infra

pytestmark = [pytest.mark.docker, pytest.mark.e2e]
PROJECT = "llmhost-e2e"
PORT = 18001


def _prereq(what: str, exc: Exception) -> None:
    if os.environ.get("LLMHOST_E2E") == "1":
        pytest.fail(f"{what}: {exc}")
    pytest.skip(f"{what}: {exc}")


def llmhost(*args: str, env: dict[str, str], check: bool = False, timeout: float = 1800):
    proc = subprocess.run(
        [sys.executable, "-m", "llmhost.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"llmhost {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def read_nr_hugepages() -> int:
    return int(Path("/proc/sys/vm/nr_hugepages").read_text())


def set_nr_hugepages(n: int) -> None:
    Path("/proc/sys/vm/nr_hugepages").write_text(f"{n}\n")


def _write_unloadable_gguf(path: Path) -> None:
    """A well-formed GGUF llama-server cannot load: an architecture it does not know."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llmhost-unknown-arch")
    writer.add_tensor("token_embd.weight", np.zeros((8, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serving")


@pytest.fixture(scope="session")
def e2e_env(workdir: Path) -> Iterator[dict[str, str]]:
    """Docker up, base image and llama.cpp source ready, a model, a config for this host."""
    if os.geteuid() != 0:
        _prereq("the serving e2e tests need root", RuntimeError("not root"))
    try:
        infra.ensure_dockerd()
        base = infra.ensure_base_image()
        source = infra.ensure_llama_source()
        model = infra.ensure_tiny_gguf()
    except Exception as exc:  # any missing prerequisite is reported the same way
        _prereq("e2e infrastructure", exc)
    models = workdir / "models"
    models.mkdir(exist_ok=True)
    shutil.copy(model, models / "tiny.gguf")
    _write_unloadable_gguf(models / "broken.gguf")
    config = workdir / "llmhost.yaml"
    config.write_text(
        f"inference_cores: 1\nproject: {PROJECT}\nmodels_dir: {models}\n"
        f"services:\n  llama-cpu:\n    port: {PORT}\n    model: tiny.gguf\n    ctx_size: 1024\n"
        "bench: {requests: 6, max_tokens: 32, warmup: 1}\n"
    )
    env = {
        **os.environ,
        "LLMHOST_CONFIG": str(config),
        "LLMHOST_STATE_DIR": str(workdir / "st"),
        "E2E_BASE_IMAGE": base,
        "E2E_LLAMA_SOURCE": str(source),
    }
    yield env
    llmhost("down", env=env)


@pytest.fixture(scope="session")
def built(e2e_env: dict[str, str]) -> dict[str, str]:
    """`llmhost build --profile cpu` from the vendored tree, once per test run."""
    assert infra.ensure_llama_cpu_image() == "llmhost/llama-cpu:latest"
    return e2e_env


@pytest.fixture
def hugepages_for_plan(built: dict[str, str]) -> Iterator[int]:
    """Reserve exactly the pages the plan asks for, and give them back afterwards."""
    plan = json.loads(llmhost("plan", "--json", env=built, check=True).stdout)
    need = plan["hugepages"]["pages"]
    before = read_nr_hugepages()
    set_nr_hugepages(before + need)
    yield need
    llmhost("down", env=built, check=True)
    set_nr_hugepages(before)


def containers(project: str = PROJECT) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def test_image_labels_record_the_plan(built: dict[str, str]) -> None:
    plan = json.loads(llmhost("plan", "--json", env=built, check=True).stdout)
    labels = json.loads(
        subprocess.run(
            [
                "docker",
                "image",
                "inspect",
                "-f",
                "{{json .Config.Labels}}",
                "llmhost/llama-cpu:latest",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    for flag in plan["build"]["llama_cpu_cmake_flags"]:
        assert flag in labels["io.llmhost.llama.cmake_flags"].split()
    assert labels["io.llmhost.profile"] == "cpu"
    assert labels["io.llmhost.llama.commit"]
    # The base image as the digest it was when built (an imported base: its image id).
    base = built["E2E_BASE_IMAGE"]
    base_id = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", base],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert labels["io.llmhost.base_images"] == f"{base}={base_id}"
    user = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Config.User}}", "llmhost/llama-cpu:latest"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert user == "10001:10001"


def test_deploy_bench_doctor_down(built: dict[str, str], hugepages_for_plan: int) -> None:
    env = built
    deploy = llmhost("deploy", "--profile", "cpu", "--timeout", "300", env=env)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "llama-cpu: " in deploy.stdout and "PASS" in deploy.stdout
    compose_file = Path(env["LLMHOST_STATE_DIR"]) / PROJECT / "compose.yaml"
    subprocess.run(["docker", "compose", "-f", str(compose_file), "config", "-q"], check=True)

    status = llmhost("status", "--json", env=env, check=True)
    (state,) = json.loads(status.stdout)
    assert (state["service"], state["state"], state["health"]) == (
        "llama-cpu",
        "running",
        "healthy",
    )

    bench = llmhost(
        "bench",
        "--service",
        "llama-cpu",
        "--json",
        "--requests",
        "4",
        "--out",
        env["LLMHOST_STATE_DIR"],
        env=env,
    )
    report = json.loads(bench.stdout)
    run = report["runs"][0]
    assert run["summary"]["completed"] == 4 and run["summary"]["total_output_tokens"] > 0
    assert report["image_labels"]["io.llmhost.profile"] == "cpu"
    assert report["host"]["cpu"]["microarchitecture"]

    # status: the container and, from llama-server's own /metrics and /slots, what it is doing.
    (row,) = json.loads(llmhost("status", "--json", env=env, check=True).stdout)
    assert (row["model"], row["ctx"]) == ("tiny.gguf", 1024) and row["where"].startswith("CPU ")
    now = row["live"]
    assert now["error"] is None and now["running"] == 0 and now["slots"] >= 1
    assert now["tokens_total"] >= 4 * 32 and now["kv_used_pct"] is not None  # the bench's
    table = llmhost("status", env=env, check=True).stdout
    assert "TOK/S" in table and "tiny.gguf" in table

    doctor = json.loads(llmhost("doctor", "--json", env=env).stdout)
    checks = {c["id"]: c for c in doctor["checks"]}
    assert checks["images.flags"]["status"] == "ok", checks["images.flags"]
    assert checks["services.health"]["status"] == "ok", checks["services.health"]
    assert checks["memory.hugepages"]["status"] == "ok", checks["memory.hugepages"]

    logs = llmhost("logs", "llama-cpu", "--tail", "200", env=env, check=True)
    assert "listening" in logs.stdout
    every = llmhost("logs", "--tail", "200", env=env, check=True).stdout  # all services
    assert any(line.startswith("llama-cpu") and "listening" in line for line in every.splitlines())

    (box,) = containers()
    inspect = subprocess.run(["docker", "inspect", "-f", "{{json .HostConfig}}", box],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    host_config = json.loads(inspect)
    assert host_config["ReadonlyRootfs"] is True and "/tmp" in host_config["Tmpfs"]
    # The plan's memory limit holds the server through deploy, bench and status.
    planned = json.loads(llmhost("plan", "--json", "--profile", "cpu", env=env, check=True).stdout)
    (svc,) = planned["services"]
    assert svc["memory_limit_mib"] and host_config["Memory"] == svc["memory_limit_mib"] * 2**20
    # ... as the kernel holds it: the container's cgroup (v2 memory.max, v1 limit_in_bytes).
    read = ("cat /sys/fs/cgroup/memory.max 2>/dev/null"
            " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")  # fmt: skip
    kernel = subprocess.run(["docker", "exec", box, "sh", "-c", read],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert int(kernel) == svc["memory_limit_mib"] * 2**20

    # CORS by default: a page served from this machine may call the service, any other may not.
    assert allowed_origin("http://localhost:3000") == "http://localhost:3000"
    assert allowed_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert allowed_origin("https://evil.example") is None

    llmhost("down", env=env, check=True)
    assert containers() == []


def allowed_origin(origin: str) -> str | None:
    """The Access-Control-Allow-Origin the deployed service answers a page of `origin` with."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v1/models", headers={"Origin": origin}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers.get("Access-Control-Allow-Origin")


def test_bench_agrees_with_server_timings(built: dict[str, str], hugepages_for_plan: int) -> None:
    from llmhost.verify.bench.runner import run_bench
    from tests.unit.verify.test_bench_client import FIXED_LENGTH, assert_agrees_with_server_timings

    llmhost("deploy", "--profile", "cpu", "--no-bench", env=built, check=True)
    result = run_bench(
        f"http://127.0.0.1:{PORT}", requests=4, max_tokens=24, extra_body=FIXED_LENGTH
    )
    assert_agrees_with_server_timings(result.records, 24)


API_KEY = "${LLMHOST_KEY}$HOME-e2e-" + "k" * 24  # `$` must reach llama-server literally


def test_deploy_with_an_api_key(built: dict[str, str], workdir: Path, hugepages_for_plan: int):
    """401 without the key (deploy itself checks it), 200 with it; the key is in no compose
    file, no container label or environment listing Docker keeps in the file, and no log."""
    import urllib.error
    import urllib.request

    env = _with_model(built, workdir, "tiny.gguf", f"api_key: '{API_KEY}'\n")
    deploy = llmhost("deploy", "--profile", "cpu", "--no-bench", "--timeout", "300", env=env)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "a request without it gets 401" in deploy.stdout
    url = f"http://127.0.0.1:{PORT}/v1/models"
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(url, timeout=10)
    assert denied.value.code == 401
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {API_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    compose_file = Path(env["LLMHOST_STATE_DIR"]) / PROJECT / "compose.yaml"
    assert API_KEY not in compose_file.read_text()
    (box,) = containers()
    labels = subprocess.run(["docker", "inspect", "-f", "{{json .Config.Labels}}", box],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert API_KEY not in labels and "LLMHOST_KEY" not in labels
    logs = llmhost("logs", "llama-cpu", "--tail", "500", env=env, check=True)
    assert API_KEY not in logs.stdout + logs.stderr
    llmhost("down", env=env, check=True)


def _with_model(env: dict[str, str], workdir: Path, model: str, extra: str = "") -> dict[str, str]:
    text = Path(env["LLMHOST_CONFIG"]).read_text().replace("model: tiny.gguf", f"model: {model}")
    path = workdir / f"llmhost-{model.replace('/', '_')}.yaml"
    path.write_text(text + extra)
    return {**env, "LLMHOST_CONFIG": str(path)}


def test_missing_model_is_refused(built: dict[str, str], workdir: Path) -> None:
    env = _with_model(built, workdir, "absent.gguf")
    proc = llmhost("deploy", "--profile", "cpu", env=env)
    assert proc.returncode == 1 and "absent.gguf does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr and containers() == []


def test_port_taken_is_refused(built: dict[str, str], hugepages_for_plan: int) -> None:
    assert containers() == []
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", PORT))
        sock.listen()
        proc = llmhost("deploy", "--profile", "cpu", env=built)
    assert proc.returncode == 1 and f"port 127.0.0.1:{PORT}" in proc.stderr
    assert containers() == []


def test_short_hugepage_pool_is_refused(built: dict[str, str]) -> None:
    before = read_nr_hugepages()
    set_nr_hugepages(0)
    try:
        proc = llmhost("deploy", "--profile", "cpu", env=built)
    finally:
        set_nr_hugepages(before)
    assert proc.returncode == 1
    assert "free 2 MiB hugepages" in proc.stderr and "sysctl -w vm.nr_hugepages=" in proc.stderr
    assert containers() == []


def test_never_healthy_is_taken_down(built: dict[str, str], workdir: Path) -> None:
    env = _with_model(built, workdir, "broken.gguf", "hugepages: {enabled: false}\n")
    proc = llmhost("deploy", "--profile", "cpu", "--timeout", "120", env=env)
    assert proc.returncode == 1, proc.stdout
    assert "llama-cpu" in proc.stderr and "taken down" in proc.stderr
    assert "last log lines" in proc.stdout
    assert containers() == []


def test_failed_redeploy_keeps_the_healthy_deployment(
    built: dict[str, str], workdir: Path, hugepages_for_plan: int
) -> None:
    llmhost("deploy", "--profile", "cpu", "--no-bench", env=built, check=True)
    compose_file = Path(built["LLMHOST_STATE_DIR"]) / PROJECT / "compose.yaml"
    healthy = compose_file.read_text()
    env = _with_model(built, workdir, "broken.gguf")
    proc = llmhost("deploy", "--profile", "cpu", "--no-bench", "--timeout", "120", env=env)
    assert proc.returncode == 1, proc.stdout
    assert "the previous deployment was restored (llama-cpu healthy)" in proc.stderr
    assert "restoring the previous deployment: llama-cpu" in proc.stdout
    assert compose_file.read_text() == healthy
    assert compose_file.with_name("compose.yaml.prev").read_text() == healthy
    (state,) = json.loads(llmhost("status", "--json", env=built, check=True).stdout)
    assert (state["state"], state["health"]) == ("running", "healthy")
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v1/models", timeout=10) as response:
        served = json.load(response)["data"][0]["id"]
    assert "tiny" in served, served  # the earlier model, not the broken one


def test_docker_down_is_one_clear_line(built: dict[str, str]) -> None:
    env = {**built, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    proc = llmhost("deploy", "--profile", "cpu", env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Docker engine not reachable" in proc.stderr
