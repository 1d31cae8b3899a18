"""Bad input, table-driven: every bad config key, CLI option and crafted snapshot is refused with
the right exit code in one line that names it, echoes no secret, and changes nothing on disk.

Exit codes as the code uses them: 2 for a bad llmhost.yaml or a usage error (click's, and the
commands' own), 1 for bad input data (a snapshot, a file given to an option).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmhost.cli.main import cli
from llmhost.facts import engine_api
from tests.support import H100_SNAPSHOT, ZEN4_SNAPSHOT

MANIFEST = "llmhost-snapshot.json"
ONLINE = "sys/devices/system/cpu/online"
SHARED = "sys/devices/system/cpu/cpu0/cache/index3/shared_cpu_list"
PLAN = ("plan", "--profile", "cpu", "--from", "{zen4}")
# Click frames a usage error with these two lines; the diagnosis is the one line after them.


@dataclass(frozen=True)
class Snap:
    """A snapshot crafted from a fixture: files replaced (None drops one), manifest keys
    merged, `extra` members appended."""

    files: dict[str, bytes | None] = field(default_factory=dict)
    manifest: dict[str, object] = field(default_factory=dict)
    extra: tuple[tarfile.TarInfo, ...] = ()
    base: Path = ZEN4_SNAPSHOT


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    code: int
    names: str  # the key, option or file the one line must name
    config: str = ""  # llmhost.yaml text
    config_bytes: bytes | None = None  # instead of `config`: raw bytes
    snap: Snap | None = None  # written to {snap}
    inputs: dict[str, bytes] = field(default_factory=dict)  # written under {in}
    secret: str | None = None  # never in the output


def cfg(id: str, yaml: str, names: str, *, args: tuple[str, ...] = PLAN, **kw: Any) -> Case:
    return Case(id, args, 2, names, config=yaml, **kw)


def svc(id: str, service: str, knob: str, value: str) -> Case:
    yaml = f"services:\n  {service}:\n    {knob}: {value}\n"
    return cfg(id, yaml, f"services.{service}.{knob}")


def opt(id: str, *args: str, names: str, code: int = 2, **kw: Any) -> Case:
    return Case(id, args, code, names, **kw)


def snap(
    id: str, names: str, *, args: tuple[str, ...] = ("plan", "--from", "{snap}"), **kw: Any
) -> Case:
    return Case(id, args, 1, names, snap=Snap(**kw))


def member(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, link: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


WEAK_KEY = "hunter2-hunter2"
COMMA_KEY = "Zq8vL2mN4pR6sT0uW3xY5aB7cD9eF1gH,iJ"
SPACE_KEY = "Zq8vL2mN4pR6sT0uW3 xY5aB7cD9eF1gHiJkL"
QUOTE_KEY = "Zq8vL2mN4pR6sT0uW3'xY5aB7cD9eF1gHiJkL"
UNICODE_KEY = "Zq8vL2mN4pR6sT0uW3éxY5aB7cD9eF1gHiJkL"
H100_XML = "commands/nvidia-smi-xml"


def _h100_xml(cuda: str) -> bytes:
    with tarfile.open(H100_SNAPSHOT) as tar:
        text = tar.extractfile(H100_XML).read().decode()  # type: ignore[union-attr]
    old = "<cuda_version>13.0</cuda_version>"
    assert old in text
    return text.replace(old, f"<cuda_version>{cuda}</cuda_version>").encode()


# One row (or two) per case: a table reads better than the formatter's layout.
# fmt: off
CASES = [
    # -- llmhost.yaml: cores, hugepages ---------------------------------------------------------
    cfg("cores-zero", "inference_cores: 0\n", "inference_cores"),
    cfg("cores-word", "inference_cores: four\n", "inference_cores"),
    cfg("cores-float", "inference_cores: 2.5\n", "inference_cores"),
    cfg("cores-bool", "inference_cores: true\n", "inference_cores"),
    cfg("cores-huge", "inference_cores: 99999999999999999999999999\n", "inference_cores"),
    cfg("hp-enabled-yes", "hugepages:\n  enabled: yes\n", "hugepages.enabled"),
    cfg("hp-boot-time-1", "hugepages:\n  boot_time: 1\n", "hugepages.boot_time"),
    cfg("hp-headroom-negative", "hugepages:\n  headroom_pct: -1\n", "hugepages.headroom_pct"),
    cfg("hp-headroom-inf", "hugepages:\n  headroom_pct: .inf\n", "hugepages.headroom_pct"),
    cfg("hp-gib-nan", "hugepages:\n  gib: .nan\n", "hugepages.gib"),
    cfg("hp-gib-huge", "hugepages:\n  gib: 5000\n", "hugepages.gib"),
    cfg("hp-unknown-key", "hugepages:\n  pool: 2\n", "'hugepages.pool'"),
    cfg("hp-not-mapping", "hugepages: [1]\n", "hugepages must be a mapping"),
    # -- services: ports and knobs ----------------------------------------------------------------
    svc("port-zero", "llama-cpu", "port", "0"),
    svc("port-negative", "llama-cpu", "port", "-80"),
    svc("port-above-65535", "llama-cpu", "port", "65536"),
    svc("port-string", "llama-cpu", "port", "'8001'"),
    cfg("port-twice", "services:\n  llama-gpu:\n    port: 8001\n", "services ports must differ"),
    cfg("service-unknown", "services:\n  ollama:\n    port: 9000\n", "'services.ollama'"),
    cfg("service-not-mapping", "services:\n  llama-cpu: on\n", "services.llama-cpu must be"),
    svc("ctx-size-small", "llama-cpu", "ctx_size", "64"),
    svc("cache-type", "llama-cpu", "cache_type", "q5_1"),
    svc("vllm-knob-on-llama", "llama-cpu", "kv_cache_dtype", "fp8"),
    svc("gpu-knob-on-cpu", "llama-cpu", "gpu_layers", "10"),
    svc("parallel-zero", "llama-cpu", "parallel", "0"),
    svc("kv-tokens-tiny", "llama-cpu", "kv_tokens", "1"),
    svc("flash-attn-on", "llama-gpu", "flash_attn", "on"),
    svc("cuda-graphs-yes", "llama-gpu", "cuda_graphs", "'yes'"),
    svc("gpu-mem-util-high", "vllm-gpu", "gpu_memory_utilization", "0.99"),
    svc("tensor-parallel-3", "vllm-gpu", "tensor_parallel_size", "3"),
    svc("api-servers-zero", "vllm-gpu", "api_servers", "0"),
    svc("api-servers-on-llama", "llama-gpu", "api_servers", "2"),
    svc("memory-limit-tiny", "llama-cpu", "memory_limit_gib", "0.1"),
    svc("memory-limit-string", "llama-cpu", "memory_limit_gib", "8G"),
    cfg("knob-unknown", "services:\n  llama-cpu:\n    colour: red\n",
        "'services.llama-cpu.colour'"),
    cfg(
        "target-unknown",
        "services:\n  llama-cpu:\n    targets:\n      speed: 1\n",
        "'services.llama-cpu.targets.speed'",
    ),
    cfg(
        "target-negative",
        "services:\n  llama-cpu:\n    targets:\n      ttft_p90_ms: -5\n",
        "services.llama-cpu.targets.ttft_p90_ms",
    ),
    # -- serving presets, GPUs, model names -------------------------------------------------------
    svc("serving-unknown", "llama-cpu", "serving", "fast"),
    svc("serving-number", "llama-gpu", "serving", "1"),
    cfg("gpus-twice", "services:\n  vllm-gpu:\n    gpus: [0, 0]\n", "services.vllm-gpu.gpus"),
    svc("gpus-empty", "vllm-gpu", "gpus", "[]"),
    cfg("gpus-negative", "services:\n  llama-gpu:\n    gpus: [-1]\n", "services.llama-gpu.gpus[0]"),
    svc("gpus-string", "vllm-gpu", "gpus", "'0,1'"),
    svc("gpus-on-cpu", "llama-cpu", "gpus", "[0]"),
    svc("model-dotdot", "llama-cpu", "model", "../../etc/shadow"),
    svc("model-dollar", "llama-cpu", "model", "'$HOME/m.gguf'"),
    svc("model-absolute", "llama-cpu", "model", "/srv/m.gguf"),
    svc("model-newline", "llama-cpu", "model", '"a\\nb.gguf"'),
    svc("model-hidden", "vllm-gpu", "model", ".cache"),
    # -- models_dir, images, project --------------------------------------------------------------
    cfg("models-dir-relative", "models_dir: models\n", "models_dir"),
    cfg("models-dir-root", "models_dir: /\n", "models_dir must not be /"),
    cfg("models-dir-root-dotdot", "models_dir: /srv/..\n", "models_dir must not be /"),
    cfg("models-dir-dollar", "models_dir: /srv/$USER\n", "models_dir"),
    cfg("models-dir-space", "models_dir: /srv/my models\n", "models_dir"),
    cfg("base-image-upper", "images:\n  base_image: Debian:Bookworm\n", "images.base_image"),
    cfg("base-image-newline", 'images:\n  base_image: "debian\\nRUN id"\n', "images.base_image"),
    cfg("base-image-null", "images:\n  base_image: null\n", "images.base_image"),
    cfg("llama-ref-latest", "images:\n  llama_ref: latest\n", "images.llama_ref"),
    cfg("llama-ref-shell", "images:\n  llama_ref: b1;rm -rf /\n", "images.llama_ref"),
    cfg("llama-ref-number", "images:\n  llama_ref: 10864\n", "images.llama_ref"),
    cfg("cuda-version-major", "images:\n  cuda_version: '12'\n", "images.cuda_version"),
    cfg(
        "cuda-version-unbuilt",
        "images:\n  cuda_version: 99.0.0\n",
        "images.cuda_version",
        args=("plan", "--profile", "gpu", "--from", "{h100}"),
    ),
    cfg("vllm-version-nightly", "images:\n  vllm_version: nightly\n", "images.vllm_version"),
    cfg("images-unknown", "images:\n  registry: x\n", "'images.registry'"),
    cfg("project-space", "project: My Project\n", "project"),
    cfg("project-dash", "project: -x\n", "project"),
    cfg("project-empty", "project: ''\n", "project"),
    cfg("project-long", f"project: {'a' * 64}\n", "project"),
    # -- bind_address, api_key --------------------------------------------------------------------
    cfg("bind-hostname", "bind_address: localhost\n", "bind_address"),
    cfg("bind-bad-ip", "bind_address: 999.1.1.1\n", "bind_address"),
    cfg("bind-public-no-key", "bind_address: 0.0.0.0\n", "api_key is required"),
    cfg("key-weak", f"api_key: {WEAK_KEY}\n", "api_key is too short", secret=WEAK_KEY),
    cfg(
        "key-weak-public",
        f"bind_address: '::'\napi_key: {WEAK_KEY}\n",
        "api_key",
        secret=WEAK_KEY,
    ),
    cfg("key-comma", f"api_key: '{COMMA_KEY}'\n", "api_key", secret=COMMA_KEY),
    cfg("key-space", f"api_key: '{SPACE_KEY}'\n", "api_key", secret=SPACE_KEY),
    cfg("key-quote", f'api_key: "{QUOTE_KEY}"\n', "api_key", secret=QUOTE_KEY),
    cfg("key-unicode", f"api_key: {UNICODE_KEY}\n", "api_key", secret=UNICODE_KEY),
    cfg("key-empty", "api_key: ''\n", "api_key is too short"),
    cfg("key-number", "api_key: 918273645546372819\n", "api_key", secret="918273645546372819"),
    # -- bench, top level, the file itself --------------------------------------------------------
    cfg("bench-config-concurrency-zero", "bench:\n  concurrency: 0\n", "bench.concurrency"),
    cfg("bench-requests-word", "bench:\n  requests: many\n", "bench.requests"),
    cfg("bench-warmup-negative", "bench:\n  warmup: -1\n", "bench.warmup"),
    cfg("bench-unknown", "bench:\n  rounds: 3\n", "'bench.rounds'"),
    cfg("profile-tpu", "profile: tpu\n", "profile"),
    cfg("top-unknown", "colour: red\n", "'colour'"),
    cfg("top-list", "[1, 2]\n", "llmhost.yaml must be a mapping"),
    cfg("yaml-broken", "services: [\n", "llmhost.yaml is not valid YAML"),
    cfg("yaml-python-tag", "!!python/object/apply:os.system ['id']\n", "llmhost.yaml"),
    cfg("yaml-two-documents", "profile: cpu\n---\nprofile: gpu\n", "llmhost.yaml"),
    cfg("yaml-nested-deep", "a: " + "[" * 5000 + "]" * 5000 + "\n", "llmhost.yaml"),
    Case("yaml-not-utf8", PLAN, 2, "llmhost.yaml", config_bytes=b"profile: \xff\xfe\n"),
    # -- a bad config stops every command before it reads the host or calls Docker ----------------
    cfg("doctor-bad-config", "hugepages:\n  enabled: on\n", "hugepages.enabled",
        args=("doctor", "--from", "{zen4}")),
    cfg("build-bad-config", "images:\n  llama_ref: main\n", "images.llama_ref",
        args=("build", "--from", "{zen4}")),
    cfg("deploy-dry-run-bad-config", "project: ../x\n", "project", args=("deploy", "--dry-run")),
    cfg("deploy-bad-config", "services:\n  llama-cpu:\n    port: 0\n", "services.llama-cpu.port",
        args=("deploy", "--no-bench")),
    cfg("bench-url-bad-config", "bench:\n  max_tokens: 0\n", "bench.max_tokens",
        args=("bench", "--url", "http://127.0.0.1:9/v1")),
    cfg("bench-service-weak-key", f"api_key: {WEAK_KEY}\n", "api_key",
        args=("bench", "--service", "llama-cpu"), secret=WEAK_KEY),
    # -- CLI options ------------------------------------------------------------------------------
    opt("plan-profile-tpu", "plan", "--profile", "tpu", names="--profile"),
    opt("doctor-profile-tpu", "doctor", "--profile", "tpu", names="--profile"),
    opt("build-profile-tpu", "build", "--profile", "tpu", names="--profile"),
    opt("deploy-profile-tpu", "deploy", "--profile", "tpu", names="--profile"),
    opt("build-llama-ref-shell", "build", "--llama-ref", "x;y", names="--llama-ref"),
    opt("build-llama-ref-latest", "build", "--llama-ref", "latest", names="--llama-ref"),
    opt("build-base-image-newline", "build", "--base-image", "debian\nRUN id",
        names="--base-image"),
    opt("build-jobs-zero", "build", "--jobs", "0", names="--jobs"),
    opt("build-jobs-huge", "build", "--jobs", "9999", names="--jobs"),
    opt("build-llama-source-missing", "build", "--llama-source", "{tmp}/nowhere",
        names="--llama-source"),
    opt("build-source-and-ref", "build", "--llama-source", "{in}", "--llama-ref", "b10864",
        names="--llama-source or --llama-ref"),
    opt("deploy-timeout-short", "deploy", "--timeout", "5", names="--timeout"),
    opt("deploy-timeout-word", "deploy", "--timeout", "soon", names="--timeout"),
    opt("tune-knob-unknown", "tune", "--knob", "cpu.turbo", names="--knob"),
    opt("tune-rounds-zero", "tune", "--rounds", "0", names="--rounds"),
    opt("tune-too-few-samples", "tune", "--model", "/etc/hostname", "--rounds", "1", "--reps", "1",
        names="--rounds 1 x --reps 1"),
    opt("tune-compare-build-unknown", "tune", "--compare-build", "fast=/bin/sh",
        names="--compare-build"),
    opt("tune-compare-build-missing", "tune", "--compare-build", "official={tmp}/nowhere",
        names="--compare-build official"),
    opt("tune-builds-only-alone", "tune", "--builds-only", names="--builds-only"),
    opt("tune-builds-only-and-knob", "tune", "--builds-only", "--knob", "cpu.pinning",
        "--compare-build", "official=/bin/sh", names="--builds-only"),
    opt("tune-out-unwritable", "tune", "--model", "/etc/hostname", "--out", "/proc/llmhost-tune",
        names="--out /proc/llmhost-tune"),
    opt("tune-bench-and-image", "tune", "--llama-bench", "/bin/sh", "--image", "x",
        names="--llama-bench or --image"),
    opt("bench-concurrency-zero", "bench", "--concurrency", "0", names="--concurrency"),
    opt("bench-requests-zero", "bench", "--url", "http://x", "--requests", "0", names="--requests"),
    opt("bench-max-tokens-huge", "bench", "--max-tokens", "70000", names="--max-tokens"),
    opt("bench-mode-stream", "bench", "--mode", "stream", names="--mode"),
    opt("bench-service-unknown", "bench", "--service", "ollama", names="--service"),
    opt("bench-no-target", "bench", names="--service"),
    opt("bench-service-and-url", "bench", "--service", "llama-cpu", "--url", "http://x",
        names="--service"),
    opt("bench-send-key-service", "bench", "--service", "llama-cpu", "--send-key",
        names="--send-key"),
    opt("bench-compare-missing", "bench", "--url", "http://x", "--compare", "{tmp}/old.json",
        names="--compare"),
    opt("bench-plot-nothing", "bench", "--plot", names="--plot"),
    opt("bench-report-without-plot", "bench", "{in}/r.json", names="--plot",
        inputs={"r.json": b"{}"}),
    opt("bench-plot-not-json", "bench", "--plot", "{in}/r.json", names="r.json",
        inputs={"r.json": b"\x00garbage"}),
    opt("bench-plot-not-report", "bench", "--plot", "{in}/r.json", names="r.json",
        inputs={"r.json": b"[1, 2]"}),
    opt("snapshot-no-output", "snapshot", names="--output"),
    opt("snapshot-output-dir", "snapshot", "-o", "{in}", names="--output"),
    opt("plan-unknown-option", "plan", "--frm", "x", names="--frm"),
    opt("unknown-command", "tune-everything", names="tune-everything"),
    opt("from-directory", "plan", "--from", "{in}", names="--from"),
    opt("from-missing", "plan", "--from", "{tmp}/gone.tar.gz", names="gone.tar.gz", code=1),
    opt("from-text", "doctor", "--from", "{in}/s.tar.gz", names="s.tar.gz", code=1,
        inputs={"s.tar.gz": b"just text\n"}),
    opt("from-empty", "plan", "--from", "{in}/s.tar.gz", names="s.tar.gz", code=1,
        inputs={"s.tar.gz": b""}),
    opt("from-truncated-gzip", "build", "--from", "{in}/s.tar.gz", names="s.tar.gz", code=1,
        inputs={"s.tar.gz": ZEN4_SNAPSHOT.read_bytes()[:200]}),
    opt("from-json-flag", "plan", "--json", "--from", "{in}/s.tar.gz", names="s.tar.gz", code=1,
        inputs={"s.tar.gz": b"\x1f\x8b\x08garbage"}),
    # -- crafted snapshots ------------------------------------------------------------------------
    snap("online-huge-plan", f"/{ONLINE} holds '0-4294967295'", files={ONLINE: b"0-4294967295\n"}),
    snap("online-huge-doctor", f"/{ONLINE} holds", files={ONLINE: b"0-4294967295\n"},
         args=("doctor", "--from", "{snap}")),
    snap("online-huge-build", f"/{ONLINE} holds", files={ONLINE: b"0-4294967295\n"},
         args=("build", "--from", "{snap}")),
    snap("isolated-huge", "/sys/devices/system/cpu/isolated holds",
         files={"sys/devices/system/cpu/isolated": b"0-4294967295\n"}),
    snap("cache-list-huge", f"/{SHARED} holds", files={SHARED: b"0-1,4294967295\n"}),
    snap("online-not-a-list", f"/{ONLINE} holds", files={ONLINE: b"0-x\n"}),
    snap("member-symlink", "is a symbolic link",
         extra=(member("proc/m", tarfile.SYMTYPE, link="/etc/shadow"),)),
    snap("member-hardlink", "is a hard link",
         extra=(member("proc/m", tarfile.LNKTYPE, link="proc/cpuinfo"),)),
    snap("member-device", "is a device or FIFO", extra=(member("dev/sda", tarfile.CHRTYPE),)),
    snap("member-absolute", "absolute or empty name", extra=(member("/etc/cron.d/x"),)),
    snap("member-dotdot", "climbs out with '..'", extra=(member("proc/../../x"),)),
    snap("member-escape-codes", "control characters", extra=(member("proc/a\x1b[2Jb"),)),
    snap("member-huge", "above the 16 MiB", extra=(member("proc/huge", size=10 * 1024**3),)),
    snap("manifest-unknown-key", "has unknown key(s) evil", manifest={"evil": 1}),
    snap("manifest-hostname-dotdot", "hostname '../x' is not a hostname",
         manifest={"hostname": "../x"}),
    snap("manifest-format-2", "is format 2", manifest={"format": 2}),
    snap("manifest-unknown-command", "commands has unknown key 'rm-rf'",
         manifest={"commands": {"rm-rf": {"error": None}}}),
    snap("manifest-redacted", "redacted lists 'password'", manifest={"redacted": ["password"]}),
    snap("manifest-corrupt", "has a corrupt manifest", files={MANIFEST: b"{"}),
    snap("manifest-missing", f"has no {MANIFEST}", files={MANIFEST: None}),
    snap("hostname-dotdot", "/proc/sys/kernel/hostname holds",
         files={"proc/sys/kernel/hostname": b"../x\n"}, args=("plan", "--from", "{snap}")),
    snap("cpuinfo-no-flags", "/proc/cpuinfo", files={"proc/cpuinfo": b"processor : 0\n"}),
    snap("cpuinfo-missing", "/proc/cpuinfo", files={"proc/cpuinfo": None}),
    snap("docker-info-list", "docker-info", files={"commands/docker-info": b"[1, 2]"}),
    snap("docker-images-tags-int", "docker-images output",
         files={"commands/docker-images": b'[{"RepoTags": 5}]'}),
    snap("docker-containers-object", "docker-containers",
         files={"commands/docker-containers": b'{"a": 1}'}),
    snap("nvidia-smi-cuda-word", "CUDA version is unknown ('abc')", base=H100_SNAPSHOT,
         files={H100_XML: _h100_xml("abc")},
         args=("plan", "--profile", "gpu", "--from", "{snap}")),
]
# fmt: on


def _craft(path: Path, recipe: Snap) -> Path:
    with tarfile.open(recipe.base) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    manifest = {**json.loads(files[MANIFEST]), **recipe.manifest}
    files[MANIFEST] = json.dumps(manifest).encode()
    files.update(recipe.files)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            if data is not None:
                tar.addfile(member(name, size=len(data)), io.BytesIO(data))
        for info in recipe.extra:
            tar.addfile(info)
    return path


def _tree(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its bytes (or its kind), to compare before/after."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + str(path.readlink())
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


class _ReachedTheHost(BaseException):
    """Raised by anything that would talk to Docker, run a program or open a URL (a
    BaseException, so the CLI cannot turn it into a line)."""


def _refuse(*args: object, **kwargs: object) -> None:
    raise _ReachedTheHost(args)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Every directory a command could write to, under tmp_path; Docker, programs and the
    network out of reach."""
    import docker

    dirs = {name: tmp_path / name for name in ("config", "state", "cache", "home", "work", "in")}
    for path in dirs.values():
        path.mkdir()
    monkeypatch.setenv("LLMHOST_CONFIG", str(dirs["config"] / "llmhost.yaml"))
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(dirs["state"]))
    monkeypatch.setenv("LLMHOST_CACHE", str(dirs["cache"]))
    monkeypatch.setenv("HOME", str(dirs["home"]))
    for xdg in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(xdg, str(dirs["home"] / xdg.lower()))
    monkeypatch.setenv("MPLCONFIGDIR", str(dirs["cache"] / "matplotlib"))
    monkeypatch.chdir(dirs["work"])
    monkeypatch.setattr(docker, "APIClient", _refuse)
    monkeypatch.setattr(engine_api, "get_json", _refuse)
    monkeypatch.setattr(docker, "from_env", _refuse)
    monkeypatch.setattr(subprocess, "run", _refuse)
    monkeypatch.setattr(subprocess, "Popen", _refuse)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    return tmp_path


def _args(case: Case, tmp: Path) -> list[str]:
    where = {
        "{zen4}": str(ZEN4_SNAPSHOT),
        "{h100}": str(H100_SNAPSHOT),
        "{snap}": str(tmp / "in" / "crafted.tar.gz"),
        "{in}": str(tmp / "in"),
        "{tmp}": str(tmp),
    }
    out = []
    for arg in case.args:
        for key, value in where.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def _diagnosis(output: str, code: int) -> list[str]:
    """The output's lines (usage errors are one line too, not click's three)."""
    return [line for line in output.strip().splitlines() if line.strip()]


def test_case_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(CASES) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(case: Case, host: Path) -> None:
    config = host / "config" / "llmhost.yaml"
    config.write_bytes(case.config_bytes if case.config_bytes is not None else case.config.encode())
    for name, data in case.inputs.items():
        (host / "in" / name).write_bytes(data)
    if case.snap:
        _craft(host / "in" / "crafted.tar.gz", case.snap)
    before = _tree(host)

    result = CliRunner().invoke(cli, _args(case, host), catch_exceptions=False)

    output = result.output
    assert result.exit_code == case.code, output
    assert "Traceback" not in output and "internal error" not in output, output
    lines = _diagnosis(output, case.code)
    assert len(lines) == 1, output
    assert case.names in lines[0], lines[0]
    assert "\x1b" not in output
    if case.secret:
        assert case.secret not in output and case.secret[:8] not in output, output
    assert _tree(host) == before
