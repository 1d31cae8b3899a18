"""Doctor checks over host trees laid out like Linux: isolation, pending reboot, hugepages,
images."""

from dataclasses import replace

import pytest

from llmhost.facts import gather
from llmhost.facts.containers import ContainerFacts, ContainerInfo, ImageInfo
from llmhost.facts.kernel import GRUB_DROPIN
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config, HugepagesConfig
from llmhost.verify.doctor import run_doctor
from tests.support import CPUINFO, NO_DRIVER, FakeNvml, write_host_tree

ZEN5 = (CPUINFO / "ryzen9-9950x.txt").read_text()
TOPO = {"cores": 16, "threads_per_core": 2, "cores_per_l3": 8}
PLANNED = "1-4,8-15,17-20,24-31"
DROPIN = (
    f'LLMHOST_CMDLINE="isolcpus=managed_irq,domain,{PLANNED} nohz_full={PLANNED} '
    f'rcu_nocbs={PLANNED} irqaffinity=0,5-7,16,21-23"\n'
    'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT $LLMHOST_CMDLINE"\n'
)


def doctor(tmp_path, config=None, containers=None, **tree):
    root = write_host_tree(tmp_path, ZEN5, **TOPO, **tree)
    facts = gather(
        LiveSource(str(root), nvml_module=FakeNvml(init_error=NO_DRIVER)), containers=False
    )
    if containers is not None:
        facts = replace(facts, containers=containers)
    report = run_doctor(facts, config or Config(), "cpu", live=True)
    return {r.id: r for r in report.results}, report


def test_isolation_active(tmp_path):
    cmdline = f"ro isolcpus=managed_irq,domain,{PLANNED} nohz_full={PLANNED}"
    checks, _ = doctor(
        tmp_path,
        cmdline=cmdline,
        isolated=PLANNED,
        files={"/sys/devices/system/cpu/nohz_full": PLANNED, GRUB_DROPIN: DROPIN},
    )
    assert checks["kernel.cpu_isolation"].status == "ok"


def test_pending_reboot(tmp_path):
    checks, _ = doctor(tmp_path, files={GRUB_DROPIN: DROPIN})
    iso = checks["kernel.cpu_isolation"]
    assert iso.status == "warn" and iso.detail.startswith("pending reboot")
    assert iso.remediation == "reboot"


def test_hand_edited_dropin(tmp_path):
    checks, _ = doctor(tmp_path, files={GRUB_DROPIN: DROPIN.replace("nohz_full=", "nohz_full=2,")})
    assert "differs from the plan" in checks["kernel.cpu_isolation"].detail


def test_wrong_cpus_isolated(tmp_path):
    checks, report = doctor(tmp_path, isolated="2-5")
    assert checks["kernel.cpu_isolation"].status == "fail"
    assert report.exit_code == 1


@pytest.mark.parametrize(
    ("gib", "pool", "status", "text"),
    [
        (1, (512, 512), "ok", "512 reserved"),
        (1, (100, 100), "fail", "100 of 512 planned"),
        (None, (64, 64), "warn", "withheld"),
        (None, (0, 0), "ok", "none needed"),
    ],
)
def test_hugepages(tmp_path, gib, pool, status, text):
    config = Config(hugepages=HugepagesConfig(gib=gib))
    checks, _ = doctor(tmp_path, config=config, hugepages_2m=pool)
    assert checks["memory.hugepages"].status == status
    assert text in checks["memory.hugepages"].detail


def _engine(images=(), containers=()):
    return ContainerFacts(
        engine_reachable=True,
        engine_error=None,
        engine_version="28.5.2",
        compose_version="2.39.1",
        runtimes=("runc",),
        images=images,
        containers=containers,
    )


def test_images_built_with_other_flags(tmp_path):
    stale = ImageInfo(
        ("llmhost/llama-cpu:latest",),
        {"io.llmhost.llama.cmake_flags": "-DGGML_NATIVE=OFF -DGGML_AVX2=ON"},
        0,
    )
    checks, _ = doctor(tmp_path, containers=_engine(images=(stale,)))
    assert checks["images.flags"].status == "fail"
    assert checks["images.flags"].remediation == "llmhost build --profile cpu"


def test_images_match_and_services(tmp_path):
    checks, report = doctor(tmp_path, containers=_engine())
    assert checks["images.flags"].status == "warn"  # not built yet
    flags = " ".join(report.plan.build.llama_cpu_cmake_flags)
    good = ImageInfo(("llmhost/llama-cpu:latest",), {"io.llmhost.llama.cmake_flags": flags}, 0)
    box = ContainerInfo(
        "llmhost-llama-cpu-1",
        "llama-cpu",
        "llmhost",
        "llmhost/llama-cpu:latest",
        "running",
        "unhealthy",
        {},
    )
    checks, _ = doctor(tmp_path, containers=_engine(images=(good,), containers=(box,)))
    assert checks["images.flags"].status == "ok"
    assert checks["services.health"].status == "fail"
    assert checks["services.health"].remediation == "llmhost logs llama-cpu"
    healthy = replace(box, health="healthy")
    checks, _ = doctor(tmp_path, containers=_engine(images=(good,), containers=(healthy,)))
    assert checks["services.health"].status == "ok"


def test_rendered_grub_dropin_is_what_doctor_reads(tmp_path):
    """The drop-in `llmhost plan --host-files` renders parses back to the planned parameters."""
    from llmhost.actions.host_files import host_files
    from llmhost.facts.kernel import parse_grub_dropin

    _, report = doctor(tmp_path)
    files = host_files(report.plan)
    assert parse_grub_dropin(files[GRUB_DROPIN]) == report.plan.kernel_params
    checks, _ = doctor(tmp_path / "b", files={GRUB_DROPIN: files[GRUB_DROPIN]})
    assert checks["kernel.cpu_isolation"].detail.startswith("pending reboot")
    assert "vm.nr_hugepages = 0" in files["/etc/sysctl.d/60-llmhost-hugepages.conf"]
    affinity = files["/etc/systemd/system.conf.d/60-llmhost-cpuaffinity.conf"]
    assert "CPUAffinity=0 5 6 7 16 21 22 23" in affinity


def test_daemon_down_fails_once_and_skips_what_reads_the_engine(tmp_path):
    down = replace(
        _engine(),
        engine_reachable=False,
        engine_error="Cannot connect to the Docker daemon at unix:///var/run/docker.sock",
    )
    checks, _ = doctor(tmp_path, containers=down)
    assert checks["docker.engine"].status == "fail"
    assert "Cannot connect" in checks["docker.engine"].detail
    for check in ("images.flags", "services.health", "security.runc", "security.docker_engine",
                  "security.containerd", "security.images"):  # fmt: skip
        assert (checks[check].status, checks[check].detail) == (
            "skip",
            "Docker engine not reachable",
        ), check
    up, _ = doctor(tmp_path, containers=_engine())
    assert up["security.runc"].status != "skip"


@pytest.mark.parametrize(
    ("cmdline", "dropin", "status", "text"),
    [
        ("ro quiet", None, "ok", "no hugepages reserved"),
        ("ro hugepagesz=2M hugepages=4096", None, "ok", "(the running kernel's command line: 8.0"),
        # 100 GiB of 1 GiB pages on this host's 128 GiB: over 75 %, the boot takes it first.
        ("ro hugepagesz=1G hugepages=100", None, "fail", "reserves 100.0 GiB of hugepages at boot"),
        ("ro quiet", 'LLMHOST_CMDLINE="hugepagesz=2M hugepages=60000"\n', "fail", "the next boot"),
    ],
)
def test_boot_time_pool_against_ram(tmp_path, cmdline, dropin, status, text):
    files = {GRUB_DROPIN: dropin} if dropin else {}
    checks, _ = doctor(tmp_path, cmdline=cmdline, files=files)
    found = checks["memory.boot_hugepages"]
    assert found.status == status and text in found.detail, found
    if status == "fail":
        assert found.remediation.startswith("ansible-playbook site.yml --tags cpu_isolation")
