"""The CLI end to end through CliRunner: outputs, exit codes, and one clear line on bad input."""

import json
import tarfile

import pytest
from click.testing import CliRunner

from llmhost.cli import app as app_module
from llmhost.cli.main import cli
from llmhost.facts import gather
from llmhost.facts.sources import (
    LiveSource,
    RecordingSource,
    SnapshotSource,
    _docker_error_sentence,
)
from tests.support import (
    CPUINFO,
    H100_SNAPSHOT,
    NO_DRIVER,
    ZEN4_SNAPSHOT,
    FakeNvml,
    write_host_tree,
)


def run(*args, env=None):
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result


def assert_one_clear_line(result, code, text):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert len(lines) == 1, result.output
    assert text in lines[0]


@pytest.fixture(autouse=True)
def _no_host_config(tmp_path, monkeypatch):
    """A provisioned host's /etc/llmhost/llmhost.yaml must not change these tests' defaults."""
    empty = tmp_path / "llmhost-empty.yaml"
    empty.write_text("")
    monkeypatch.setenv("LLMHOST_CONFIG", str(empty))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "llmhost.yaml"
    path.write_text("inference_cores: 1\n")
    return str(path)


def test_doctor_on_zen4_snapshot(config):
    result = run("--config", config, "doctor", "--from", str(ZEN4_SNAPSHOT))
    assert "Zen 4 (Genoa)" in result.output
    assert "AVX-512 VNNI present" in result.output
    assert result.exit_code in (0, 1)


def test_doctor_json_on_h100_snapshot():
    result = run("doctor", "--json", "--profile", "gpu", "--from", str(H100_SNAPSHOT))
    data = json.loads(result.output)
    checks = {c["id"]: c for c in data["checks"]}
    assert checks["gpu.architecture"]["status"] == "ok"
    assert "Hopper sm_90" in checks["gpu.architecture"]["detail"]
    assert checks["gpu.cuda_driver"]["status"] == "ok"
    assert checks["cpu.microarchitecture"]["detail"].startswith("GenuineIntel Emerald Rapids")
    # The gpu profile isolates nothing (no llama-cpu to give isolated cores to).
    assert checks["kernel.cpu_isolation"]["status"] == "ok"
    assert "gpu profile: no CPU isolation" in checks["kernel.cpu_isolation"]["detail"]
    assert checks["docker.engine"]["status"] == "fail"  # the device machine has no Docker
    assert result.exit_code == 1
    assert data["plan"]["build"]["cuda_architectures"] == "90"
    assert data["facts"]["gpu"]["gpus"][0]["compute_capability"] == "9.0"
    for check in data["checks"]:
        assert check["status"] in ("ok", "warn", "fail", "skip")
        if check["status"] in ("warn", "fail") and check["id"] != "plan":
            assert check["remediation"], check


def test_plan_json():
    result = run("plan", "--json", "--profile", "all", "--from", str(H100_SNAPSHOT))
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["cores"]["inference_cpus"] == list(range(1, 13))
    assert data["kernel_params"]["nohz_full"] == "1-12"
    assert data["build"]["torch_cuda_arch_list"] == "9.0"


def test_plan_text_says_why(config):
    result = run("--config", config, "plan", "--from", str(ZEN4_SNAPSHOT))
    assert result.exit_code == 0
    assert "inference CPUs   1" in result.output and "why" in result.output
    assert "-DGGML_AVX512_VNNI=ON" in result.output


def test_gpu_plan_says_no_core_is_isolated(config):
    result = run("--config", config, "plan", "--profile", "gpu", "--from", str(H100_SNAPSHOT))
    assert result.exit_code == 0, result.output
    assert "inference CPUs   none" in result.output and "(0 cores)" not in result.output


def test_plan_shows_the_evidence_for_this_kind_of_host(tmp_path):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("profile: cpu\ninference_cores: 8\nhugepages: {gib: 1}\n")
    text = run("--config", str(cfg), "plan", "--from", str(H100_SNAPSHOT)).output
    assert "  evidence         " in text
    # One line a knob, the verdict first; the numbers are in --json.
    assert "  recommended: CPU pinning + hugetlb weights (llama-cpu)\n" in text
    assert "  applied, measured nil: CPU pinning (llama-cpu)\n" in text
    assert "(measured on Emerald Rapids; the numbers: llmhost plan --json)" in text
    data = json.loads(
        run("--config", str(cfg), "plan", "--json", "--from", str(H100_SNAPSHOT)).output
    )
    recs = {r["knob"]: r for r in data["recommendations"]}
    assert recs["cpu.pinning_hugetlb"]["verdict"] == "positive"
    assert recs["cpu.pinning"]["applied"] is True and recs["cpu.pinning"]["verdict"] == "nil"


def test_doctor_reports_tuning_evidence(config):
    result = run("--config", config, "doctor", "--json", "--from", str(ZEN4_SNAPSHOT))
    data = json.loads(result.output)
    check = next(c for c in data["checks"] if c["id"] == "tuning.evidence")
    assert check["title"] == "Tuning evidence"
    assert check["status"] in ("warn", "skip", "ok")
    assert "Zen 4" in check["detail"]


def test_plan_too_many_cores(tmp_path):
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("inference_cores: 12\n")
    result = run("--config", str(cfg), "plan", "--from", str(ZEN4_SNAPSHOT))
    assert_one_clear_line(result, 1, "set inference_cores: 1")


def test_first_plan_on_a_small_host_needs_no_config():
    """No configuration: the cores and the profile follow the hardware, and plan says so."""
    result = run("plan", "--from", str(ZEN4_SNAPSHOT))
    assert result.exit_code == 0, result.output
    assert "1 of 2 cores for inference: a quarter stays" in result.output
    assert "profile cpu: no usable NVIDIA GPU" in result.output
    gpu = run("plan", "--from", str(H100_SNAPSHOT))
    assert gpu.exit_code == 0 and "profile gpu: an NVIDIA GPU is usable" in gpu.output


def test_missing_snapshot(tmp_path):
    result = run("doctor", "--from", str(tmp_path / "nope.tar.gz"))
    assert_one_clear_line(result, 1, "does not exist")


def test_corrupt_snapshot(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08garbage" * 10)
    assert_one_clear_line(run("doctor", "--from", str(bad)), 1, "not a readable tar.gz")
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(__file__, arcname="proc/cpuinfo")
    assert_one_clear_line(run("plan", "--from", str(plain)), 1, "not an llmhost snapshot")


def test_cpuinfo_without_flags(tmp_path):
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n\n"
    root = write_host_tree(tmp_path / "root", arm, cores=4)
    recorder = RecordingSource(LiveSource(str(root)))
    recorder.read_text("/proc/cpuinfo")
    snap = recorder.write(tmp_path / "arm.tar.gz", {})
    assert_one_clear_line(run("doctor", "--from", str(snap)), 1, "no 'flags' line")


def test_unknown_profile():
    result = run("doctor", "--profile", "tpu")
    assert result.exit_code == 2
    assert "'tpu' is not one of" in result.output


def test_bad_config_value(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("hugepages:\n  enabled: yes\n")
    result = run("--config", str(cfg), "plan", "--from", str(ZEN4_SNAPSHOT))
    assert_one_clear_line(result, 2, "hugepages.enabled must be true or false")


def _live_with(monkeypatch, tmp_path, nvml):
    root = write_host_tree(
        tmp_path / "root",
        (CPUINFO / "ryzen9-9950x.txt").read_text(),
        cores=16,
        threads_per_core=2,
        cores_per_l3=8,
    )
    monkeypatch.setattr(
        app_module.App, "source", lambda self, snap: LiveSource(str(root), nvml_module=nvml)
    )


def test_nvml_absent_gpu_profile(monkeypatch, tmp_path):
    _live_with(monkeypatch, tmp_path, FakeNvml(init_error=NO_DRIVER))
    result = run("doctor", "--json", "--profile", "gpu")
    checks = {c["id"]: c for c in json.loads(result.output)["checks"]}
    assert result.exit_code == 1
    assert checks["gpu.present"]["status"] == "fail"
    assert "libnvidia-ml.so" in checks["gpu.present"]["detail"]
    assert checks["plan"]["status"] == "fail" and "needs an NVIDIA GPU" in checks["plan"]["detail"]
    plan = run("plan", "--profile", "gpu")
    assert_one_clear_line(plan, 1, "needs an NVIDIA GPU")


def test_nvml_absent_cpu_profile_is_fine(monkeypatch, tmp_path):
    _live_with(monkeypatch, tmp_path, FakeNvml(init_error=NO_DRIVER))
    checks = {c["id"]: c for c in json.loads(run("doctor", "--json").output)["checks"]}
    assert checks["gpu.present"]["status"] == "skip"
    assert checks["plan"]["status"] == "ok"


def test_docker_socket_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    _live_with(monkeypatch, tmp_path, FakeNvml(init_error=NO_DRIVER))
    result = run("doctor", "--json")
    checks = {c["id"]: c for c in json.loads(result.output)["checks"]}
    assert checks["docker.engine"]["status"] == "fail"
    assert "no Docker socket" in checks["docker.engine"]["detail"]
    assert "Traceback" not in result.output


def test_docker_error_sentences():
    from docker.errors import DockerException

    denied = DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "PermissionError(13, 'Permission denied'))"
    )
    assert "permission denied" in _docker_error_sentence(denied)
    refused = DockerException(
        "Error while fetching server API version: ('Connection aborted.', "
        "ConnectionRefusedError(111, 'Connection refused'))"
    )
    assert "refused" in _docker_error_sentence(refused)


def test_snapshot_roundtrip(tmp_path):
    out = tmp_path / "me.tar.gz"
    result = run("snapshot", "-o", str(out))
    assert result.exit_code == 0 and out.exists()
    live, snap = gather(LiveSource()), gather(SnapshotSource(out))
    assert snap.cpu == live.cpu
    assert snap.kernel.cmdline == live.kernel.cmdline
    assert snap.memory.total_kb == live.memory.total_kb
    assert snap.gpu.gpus == live.gpu.gpus
    assert snap.containers.engine_reachable == live.containers.engine_reachable


def test_config_on_stdin_and_doctor_with_host_files_as_ansible_asks():
    """The llmhost_facts role's one call: the wanted config on stdin, the drop-ins in the JSON."""
    wanted = "inference_cores: 1\nhugepages: {enabled: true, gib: 0.5}\n"
    args = ["--config", "-", "doctor", "--json", "--host-files", "--from", str(ZEN4_SNAPSHOT)]
    result = CliRunner().invoke(cli, args, input=wanted, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    report = json.loads(result.output)
    assert report["plan"]["cores"] and report["plan"]["hugepages"]["pages"] == 256
    alone = run("plan", "--host-files", "--from", str(ZEN4_SNAPSHOT), "--config", "-")
    assert alone.exit_code == 0  # stdin empty here: the defaults, also a valid config
    planned = CliRunner().invoke(cli, ["--config", "-", "plan", "--host-files", "--from",
                                       str(ZEN4_SNAPSHOT)], input=wanted)  # fmt: skip
    assert report["host_files"] == json.loads(planned.output)  # the same files as plan renders


def test_doctor_host_files_without_a_plan_or_without_json():
    args = ["--config", "-", "doctor", "--json", "--host-files", "--from", str(ZEN4_SNAPSHOT)]
    result = CliRunner().invoke(cli, args, input="inference_cores: 512\n")
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["host_files"] is None
    assert "no plan" in next(c["detail"] for c in report["checks"] if c["id"] == "plan")
    assert_one_clear_line(run("doctor", "--host-files"), 2, "--host-files goes with --json")
    bad = CliRunner().invoke(cli, ["--config", "-", "plan"], input="inference_cores: [\n")
    assert_one_clear_line(bad, 2, "config on stdin is not valid YAML")


def test_status_with_the_engine_down_is_one_line():
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    assert_one_clear_line(run("status", env=env), 1, "Docker engine not reachable")


def _model_config(tmp_path, model: str = "m.gguf") -> str:
    from llmhost.devtools.synthetic_gguf import write_llama_gguf

    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    write_llama_gguf(models / "m.gguf", None, tensor_type="q8_0")
    config = tmp_path / "llmhost.yaml"
    config.write_text(
        f"inference_cores: 1\nmodels_dir: {models}\n"
        f"services:\n  llama-cpu: {{model: {model}, ctx_size: 2048}}\n"
    )
    return str(config)


def test_a_snapshot_carries_the_model_facts_and_plans_as_the_host_did(tmp_path):
    """The model's header is a fact: recorded (not the model), so `plan --from` sizes the pool
    from it after the file is gone, as the host's own plan did."""
    config, out = _model_config(tmp_path), tmp_path / "me.tar.gz"
    result = run("--config", config, "snapshot", "-o", str(out))
    assert result.exit_code == 0 and ", 1 model(s) (" in result.output, result.output
    here = json.loads(run("--config", config, "plan", "--profile", "cpu", "--json").output)
    (tmp_path / "models" / "m.gguf").unlink()
    there = run("--config", config, "plan", "--profile", "cpu", "--json", "--from", str(out))
    assert there.exit_code == 0, there.output
    assert json.loads(there.output)["hugepages"] == here["hugepages"]
    assert here["hugepages"]["models"][0]["weights_bytes"] > 0
    # Without the snapshot the model is gone: one line naming the service.
    gone = run("--config", config, "plan", "--profile", "cpu")
    assert_one_clear_line(gone, 1, "llama-cpu: model ")
    assert "does not exist" in gone.output


def test_a_model_the_snapshot_did_not_capture_is_named(tmp_path):
    out = tmp_path / "me.tar.gz"
    assert run("snapshot", "-o", str(out)).exit_code == 0  # no config: no model facts
    result = run("--config", _model_config(tmp_path), "plan", "--from", str(out), "--profile",
                 "cpu")  # fmt: skip
    assert_one_clear_line(result, 1, "llama-cpu: model ")
    assert "was not captured in this snapshot" in result.output
