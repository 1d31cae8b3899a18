"""Doctor's security-floor and image-content checks, over the Zen 3 snapshot and over host trees
with the engine facts and image labels a real host reports."""

import time
from dataclasses import replace

import pytest

from llmhost.facts import gather
from llmhost.facts.containers import ContainerFacts, ImageInfo, parse_firewall_backend
from llmhost.facts.sources import LiveSource, SnapshotSource
from llmhost.plan.config import Config
from llmhost.verify.doctor import run_doctor
from tests.support import CPUINFO, H100, NO_DRIVER, RTX_5090, SNAPSHOTS, FakeNvml, write_host_tree

ZEN3 = SNAPSHOTS / "ryzen9-5900xt-noavx512.tar.gz"
ZEN5 = (CPUINFO / "ryzen9-9950x.txt").read_text()


def engine(**kw):
    base = {
        "engine_reachable": True,
        "engine_error": None,
        "engine_version": "28.5.2",
        "containerd_version": "1.7.29",
        "runc_version": "1.3.3",
        "compose_version": "2.39.1",
        "runtimes": ("nvidia", "runc"),
        "nvidia_ctk_version": "1.19.1",
    }
    return ContainerFacts(**{**base, **kw})


def doctor(tmp_path, containers, profile="cpu", gpus=(), cuda=13000, driver="580.95.05"):
    root = write_host_tree(tmp_path, ZEN5, cores=16, threads_per_core=2, cores_per_l3=8)
    nvml = (
        FakeNvml(gpus=list(gpus), cuda=cuda, driver=driver)
        if gpus
        else FakeNvml(init_error=NO_DRIVER)
    )
    facts = replace(
        gather(LiveSource(str(root), nvml_module=nvml), containers=False), containers=containers
    )
    report = run_doctor(facts, Config(), profile, live=True)
    return {r.id: r for r in report.results}, report


def test_zen3_snapshot_fails_the_avx512_image_and_debian_runc():
    facts = gather(SnapshotSource(ZEN3))
    report = run_doctor(facts, Config(), "cpu", live=False)
    checks = {r.id: r for r in report.results}
    isa = checks["images.cpu_isa"]
    assert isa.status == "fail" and "SIGILL" in isa.detail
    assert isa.remediation == "llmhost build --profile cpu"
    runc = checks["security.runc"]
    assert runc.status == "fail"
    assert "runc 1.1.5+ds1-1+deb12u1: vulnerable to CVE-2025-31133" in runc.detail
    assert "Debian 12 (bookworm) carries no fix" in runc.detail
    # GitCommit carries the Debian revision, so the backported fixes are visible.
    assert checks["security.containerd"].status == "ok"
    assert "patched by the distribution" in checks["security.containerd"].detail
    assert checks["security.images"].status == "ok"
    assert report.exit_code == 1


def test_current_host_components_pass(tmp_path):
    checks, _ = doctor(tmp_path, engine())
    for check_id in (
        "security.nvidia_toolkit",
        "security.runc",
        "security.docker_engine",
        "security.containerd",
    ):
        assert checks[check_id].status == "ok", checks[check_id].detail


@pytest.mark.parametrize(
    ("field", "value", "check_id", "status", "text"),
    [
        ("nvidia_ctk_version", "1.17.8", "security.nvidia_toolkit", "fail", "CVE-2026-24260"),
        ("nvidia_ctk_version", None, "security.nvidia_toolkit", "skip", "not installed"),
        ("runc_version", "1.3.2", "security.runc", "fail", "CVE-2025-52881"),
        ("runc_version", None, "security.runc", "ok", "runc version not reported"),
        (
            "containerd_version",
            "1.6.20~ds1-1+deb12u3",
            "security.containerd",
            "ok",
            "patched by the distribution",
        ),
        ("containerd_version", "2.0.6", "security.containerd", "fail", "CVE-2024-25621"),
        # libnvidia-container is patched on its own: an old one under a current nvidia-ctk fails.
        ("libnvidia_container_version", "1.17.8", "security.nvidia_toolkit", "fail",
         "libnvidia-container: "),
    ],
)  # fmt: skip
def test_component_floors(tmp_path, field, value, check_id, status, text):
    checks, _ = doctor(tmp_path, engine(**{field: value}))
    assert checks[check_id].status == status
    assert text in checks[check_id].detail


@pytest.mark.parametrize(
    ("fields", "status", "text"),
    [
        ({"engine_version": "28.5.2"}, "ok", "Docker Engine 28.5.2 >= floor 28.0.0"),
        ({"engine_version": "27.5.1"}, "fail", "moby/moby#49325"),
        ({"engine_version": "28.3.2"}, "ok", ""),  # no firewalld: CVE-2025-54388 not in force
        (
            {"engine_version": "28.3.2", "firewall_backend": "iptables+firewalld"},
            "fail",
            "firewalld running; Docker Engine 28.3.2: vulnerable to CVE-2025-54388",
        ),
        ({"engine_version": "28.3.3", "firewall_backend": "iptables+firewalld"}, "ok", ""),
        ({"engine_version": "20.10.24+dfsg1"}, "warn", "no record of a backport"),
        ({"engine_version": "latest"}, "fail", "'latest' is a moving tag, not a version"),
        ({"engine_version": None}, "warn", "did not report its version"),
    ],
)
def test_docker_engine_floor(tmp_path, fields, status, text):
    checks, _ = doctor(tmp_path, engine(**fields))
    found = checks["security.docker_engine"]
    assert found.status == status, found.detail
    assert text in found.detail
    assert "CVE-2025-52881" not in found.detail  # runc's escapes are security.runc's
    if status == "fail":
        assert "docker-ce >= 28.5.2" in (found.remediation or "")


@pytest.mark.parametrize(
    ("value", "driver"),
    [
        ({"Driver": "iptables+firewalld", "Info": [["ReloadedAt", "2025-01-01T00:00:00Z"]]},
         "iptables+firewalld"),
        ({"Driver": "nftables"}, "nftables"),
        ("iptables+firewalld", "iptables+firewalld"),  # 28.1 pre-releases: a bare string
        (None, None),  # engines before 28.1 do not report it
    ],
)  # fmt: skip
def test_firewall_backend_from_docker_info(value, driver):
    assert parse_firewall_backend(value) == driver


def test_engine_judges_its_runc_only_when_runc_is_not_reported(tmp_path):
    checks, _ = doctor(tmp_path, engine(engine_version="28.3.3", runc_version=None))
    assert checks["security.runc"].status == "fail"
    assert "runc version not reported; Docker Engine 28.3.3: vulnerable to CVE-2025-31133" in (
        checks["security.runc"].detail
    )
    assert "moby" not in checks["security.runc"].detail
    assert checks["security.docker_engine"].status == "ok"


def cpu_image(**labels):
    return ImageInfo(("llmhost/llama-cpu:latest",), {"io.llmhost.profile": "cpu", **labels}, 0)


@pytest.mark.parametrize(
    ("labels", "status", "text"),
    [
        ({"io.llmhost.llama.version": "b10864"}, "ok", "llama.cpp b10864 >= floor b9061"),
        ({"io.llmhost.llama.version": "b8000"}, "fail", "CVE-2026-27940"),
        ({"io.llmhost.llama.version": "local-0c1e57098"}, "warn", "no build number"),
        (
            {
                "io.llmhost.llama.version": "b8000",
                "io.llmhost.floor_override": (
                    "llama.cpp b8000 < floor b9061 (...); --allow-below-floor"
                ),
            },
            "fail",
            "built below its security floor",
        ),
        (
            {"io.llmhost.llama.version": "b10864", "io.llmhost.llama.cmake_flags": "-DGGML_RPC=ON"},
            "fail",
            "CVE-2026-118375",
        ),
        ({}, "warn", "no version label"),
        ({"io.llmhost.llama.version": "master"}, "fail", "'master' is a moving tag"),
    ],
)
def test_image_floors(tmp_path, labels, status, text):
    checks, _ = doctor(tmp_path, engine(images=(cpu_image(**labels),)))
    assert checks["security.images"].status == status
    assert text in checks["security.images"].detail


def gpu_images(cuda_labels, vllm_labels=None):
    images = [
        ImageInfo(
            ("llmhost/llama-cuda:latest",),
            {
                "io.llmhost.profile": "cuda",
                "io.llmhost.llama.version": "b10864",
                "io.llmhost.cuda.version": "13.0.1",
                "io.llmhost.cuda.architectures": "90",
                **cuda_labels,
            },
            0,
        )
    ]
    if vllm_labels is not None:
        images.append(
            ImageInfo(
                ("llmhost/vllm:latest",),
                {"io.llmhost.profile": "vllm", "io.llmhost.vllm.version": "0.33.0", **vllm_labels},
                0,
            )
        )
    return tuple(images)


CHECKED = {
    "io.llmhost.check.cuda_sass": "90",
    "io.llmhost.check.cuda_ptx": "90",
    "io.llmhost.check.cuda_require": "13.0",
    "io.llmhost.check.cuda_compat": "580.82.07",
    "io.llmhost.check.cuda_compat_on_path": "false",
}
TORCH = {
    "io.llmhost.check.torch_arch": "sm_80,sm_90,sm_100,sm_120,compute_120",
    "io.llmhost.check.cuda_require": "12.9",
}


@pytest.mark.parametrize(
    ("gpu", "cuda", "cuda_labels", "vllm_labels", "status", "text"),
    [
        (H100, 13000, CHECKED, TORCH, "ok", "has sm_90 machine code"),
        (
            H100,
            13000,
            {**CHECKED, "io.llmhost.check.cuda_sass": "none"},
            None,
            "warn",
            "only PTX sm_90",
        ),
        (H100, 12080, CHECKED, None, "fail", "unsatisfied condition: cuda>=13.0"),
        (H100, 13000, {}, None, "warn", "machine code not verified"),
        (
            H100,
            13000,
            CHECKED,
            {"io.llmhost.check.torch_arch": "sm_80,sm_86,compute_86"},
            "warn",
            "(torch) has no sm_90 machine code, only PTX",
        ),
        (RTX_5090, 13000, CHECKED, None, "warn", "no sm_120 machine code, only PTX sm_90"),
        (
            RTX_5090,
            13000,
            {**CHECKED, "io.llmhost.check.cuda_ptx": "none"},
            None,
            "fail",
            "no kernel image",
        ),
    ],
)
def test_gpu_images(tmp_path, gpu, cuda, cuda_labels, vllm_labels, status, text):
    containers = engine(images=gpu_images(cuda_labels, vllm_labels))
    checks, _ = doctor(tmp_path, containers, profile="gpu", gpus=[gpu], cuda=cuda)
    result = checks["images.gpu_code"]
    assert result.status == status, result.detail
    assert text in result.detail


def test_forward_compat_on_a_consumer_gpu_is_explained(tmp_path):
    labels = {
        **CHECKED,
        "io.llmhost.check.cuda_sass": "120a",
        "io.llmhost.check.cuda_ptx": "none",
        "io.llmhost.cuda.architectures": "120",
    }
    checks, _ = doctor(
        tmp_path,
        engine(images=gpu_images(labels)),
        profile="gpu",
        gpus=[RTX_5090],
        driver="575.57.08",
    )
    result = checks["images.gpu_code"]
    assert result.status == "fail" and "error 804" in result.detail


def test_the_new_checks_are_cheap():
    facts = gather(SnapshotSource(ZEN3))
    run_doctor(facts, Config(), "cpu", live=False)  # warm the floors cache
    start = time.perf_counter()
    run_doctor(facts, Config(), "cpu", live=False)
    assert time.perf_counter() - start < 0.1


def test_gpu_device_requests_need_libnvidia_container(tmp_path):
    """The one GPU path (device requests) runs through libnvidia-container: doctor fails when
    `nvidia-container-cli info` does, and says which library answered when it works."""
    broken = engine(nvidia_container_cli_error="nvml error: driver not loaded")
    checks, _ = doctor(tmp_path, broken, profile="gpu")
    found = checks["docker.nvidia_runtime"]
    assert found.status == "fail" and "nvidia-container-cli info` failed" in found.detail
    assert found.remediation == "ansible-playbook site.yml --tags nvidia_container_toolkit"
    checks, _ = doctor(tmp_path / "ok", engine(libnvidia_container_version="1.18.1"), profile="gpu")
    assert "libnvidia-container 1.18.1 sees the GPUs" in checks["docker.nvidia_runtime"].detail


@pytest.mark.parametrize(
    ("text", "version"),
    [("cli-version: 1.18.1\nlib-version: 1.18.0\nbuild date: 2026-10-01\n", "1.18.0"),
     ("version: 1.17.8\n", "1.17.8"), ("garbage", None)],
)  # fmt: skip
def test_libnvidia_container_version(text, version):
    from llmhost.facts.containers import parse_libnvidia_container_version

    assert parse_libnvidia_container_version(text) == version


def test_probe_containers_use_the_compose_gpu_path():
    from docker.types import DeviceRequest

    from llmhost.verify.image_checks import gpu_device_request

    one = gpu_device_request(DeviceRequest, (1,))
    assert one["Driver"] == "nvidia" and one["DeviceIDs"] == ["1"]
    assert one["Capabilities"] == [["gpu"]]
    assert gpu_device_request(DeviceRequest, ())["Count"] == -1
