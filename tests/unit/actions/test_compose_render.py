"""The compose file for RTX 5090 and H100 plans: rendered from the plan, valid for compose."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace

import pytest
import yaml

from llmhost.actions.deploy import render_compose
from llmhost.cpulist import parse_cpulist
from llmhost.facts import gather
from llmhost.facts.sources import LiveSource, SnapshotSource
from llmhost.plan.config import Config
from llmhost.plan.planner import make_plan
from tests.support import CPUINFO, H100_SNAPSHOT, RTX_5090, FakeNvml, write_host_tree


def _config(tmp_path, **kw):
    base = Config(models_dir=str(tmp_path), **kw)
    services = {
        k: replace(v, model="m.gguf" if k != "vllm-gpu" else "hf-model")
        for k, v in base.services.items()
    }
    return replace(base, services=services)


def reference_box_plan(tmp_path, config):
    root = write_host_tree(
        tmp_path / "root",
        (CPUINFO / "ryzen9-9950x.txt").read_text(),
        cores=16,
        threads_per_core=2,
        cores_per_l3=8,
    )
    facts = gather(LiveSource(str(root), nvml_module=FakeNvml(gpus=[RTX_5090])), containers=False)
    return make_plan(facts, config, "all")


def h100_plan(config):
    return make_plan(gather(SnapshotSource(H100_SNAPSHOT)), config, "all")


@pytest.mark.parametrize("which", ["rtx5090", "h100"])
def test_compose_from_plan(tmp_path, which):
    config = _config(tmp_path)
    plan = reference_box_plan(tmp_path, config) if which == "rtx5090" else h100_plan(config)
    doc = yaml.safe_load(render_compose(plan, config))
    services = doc["services"]
    assert set(services) == {"llama-cpu", "llama-gpu", "vllm-gpu"}
    for name, svc in services.items():
        planned = plan.service(name)
        assert svc["cpuset"] == planned.cpuset
        assert svc["ports"] == [f"127.0.0.1:{planned.port}:{planned.container_port}"]
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges:true"]
        assert svc["user"] == "10001:10001" and svc["restart"] == "unless-stopped"
        assert svc["volumes"][0]["read_only"] is True and svc["volumes"][0]["target"] == "/models"
        assert "/health" in svc["healthcheck"]["test"][-1]
        assert svc["command"] == list(planned.args)
        assert svc["logging"] == {"driver": "json-file",
                                  "options": {"max-size": "20m", "max-file": "3"}}  # fmt: skip
        assert svc["pids_limit"] == 4096
        writable_root = name == "vllm-gpu"  # until a GPU run proves vLLM's caches all go to /tmp
        assert svc.get("read_only", False) is not writable_root
        assert svc.get("tmpfs", ["/tmp"]) == ["/tmp"]
    for name in ("llama-gpu", "vllm-gpu"):
        gpu = services[name]
        assert "runtime" not in gpu  # one GPU path: the device request below
        assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "runtime" not in services["llama-cpu"]
    # The GPU engines stay off the isolated cores and off CPU 0's core.
    gpu_cpus = set(parse_cpulist(services["llama-gpu"]["cpuset"])) | set(
        parse_cpulist(services["vllm-gpu"]["cpuset"])
    )
    assert gpu_cpus <= set(plan.cores.housekeeping_cpus) - {0}
    assert services["llama-cpu"]["cpuset"] == plan.cores.inference_cpulist
    # One GPU: both engines on it, by device id.
    for name in ("llama-gpu", "vllm-gpu"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"][0]
        assert devices["device_ids"] == ["0"] and "count" not in devices
    if which == "rtx5090":
        assert services["llama-cpu"]["cpuset"] == "1-4,8-15,17-20,24-31"
        assert "--threads" in services["llama-cpu"]["command"]
        idx = services["llama-cpu"]["command"].index("--threads")
        assert services["llama-cpu"]["command"][idx + 1] == "12"


KEY = "${LLMHOST_KEY}-$HOME-" + "k" * 24  # `$` must reach the servers literally


def test_public_bind_reads_the_api_key_from_a_private_file(tmp_path, monkeypatch):
    """The key is never in compose.yaml: a 0600 env file in a 0700 directory, single-quoted so
    compose substitutes nothing, and `docker compose config` reads it back literally."""
    from llmhost.actions.deploy import write_compose

    monkeypatch.setenv("LLMHOST_STATE_DIR", str(tmp_path / "state"))
    config = _config(tmp_path, bind_address="0.0.0.0", api_key=KEY)
    plan = h100_plan(config)
    path = write_compose(plan, config)
    text = path.read_text()
    assert KEY not in text and "LLMHOST_KEY" not in text
    services = yaml.safe_load(text)["services"]
    assert services["llama-gpu"]["ports"] == ["0.0.0.0:8004:8080"]
    assert services["llama-gpu"]["env_file"] == ["secrets.env"]
    secrets = path.with_name("secrets.env")
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert secrets.read_text() == f"LLAMA_API_KEY='{KEY}'\nVLLM_API_KEY='{KEY}'\n"
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:  # fmt: skip
        out = subprocess.run(["docker", "compose", "-f", str(path), "config", "--format", "json"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        env = json.loads(out)["services"]["vllm-gpu"]["environment"]
        # Not substituted: `config` prints the literal value with each `$` escaped as `$$`.
        assert env["VLLM_API_KEY"] == KEY.replace("$", "$$")
    # Without a key, no file is left behind.
    write_compose(plan, _config(tmp_path))
    assert not secrets.exists()


@pytest.mark.skipif(shutil.which("docker") is None, reason="docker CLI absent")
@pytest.mark.parametrize("which", ["rtx5090", "h100"])
def test_docker_compose_config_accepts_it(tmp_path, which):
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose v2 plugin absent")
    config = _config(tmp_path)
    plan = reference_box_plan(tmp_path, config) if which == "rtx5090" else h100_plan(config)
    path = tmp_path / "compose.yaml"
    path.write_text(render_compose(plan, config))
    proc = subprocess.run(
        ["docker", "compose", "-f", str(path), "config", "--quiet"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("origin", "llama", "vllm"),
    [
        (None, "localhost", []),  # default: pages of this machine (llama-server: any port)
        ("*", "*", ["*"]),
        ("http://192.168.1.5:3000", "http://192.168.1.5:3000", ["http://192.168.1.5:3000"]),
    ],
)
def test_cors_origin_reaches_both_engines(tmp_path, origin, llama, vllm):
    config = _config(tmp_path) if origin is None else _config(tmp_path, cors_origin=origin)
    services = yaml.safe_load(render_compose(h100_plan(config), config))["services"]
    for name in ("llama-cpu", "llama-gpu"):
        assert services[name]["environment"]["LLAMA_ARG_CORS_ORIGINS"] == llama
    command = services["vllm-gpu"]["command"]
    assert json.loads(command[command.index("--allowed-origins") + 1]) == vllm
