"""site.yml for real against this machine (root; in CI the disposable VM): check mode first and
nothing changes, bad variables refused before any change, a real run with the cpu profile,
a second run with changed=0, drift previewed by --check --diff, the GRUB drop-in contract,
and dockerd started without systemd.

The tests run in file order and share the host. Everything they change is put back when the
module ends (files, the hugepage pool, the hugetlbfs mount, daemon.json, the compose project);
/opt/llmhost (the installed llmhost) stays, as a cache. They run only as root with
LLMHOST_ANSIBLE=1 (CI exports it): a plain `pytest`, even with LLMHOST_E2E=1, never
reprovisions a developer's machine. One session at a time (a lock in /run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ansible.support import (
    Run,
    ansible_playbook,
    host_state,
    logged_playbook,
    role_file,
    state_diff,
    task_seconds,
)
from tests.e2e import infra

pytestmark = [pytest.mark.ansible, pytest.mark.docker, pytest.mark.e2e]

PROJECT = "llmhost-ansible-ci"
PORT = 18201
LABEL = "io.llmhost.ci=provisioned"
USER_KEY = ("max-concurrent-uploads", 3)  # a user's own daemon.json setting that must survive
GRUB_DROPIN = Path("/etc/default/grub.d/99-llmhost.cfg")
SYSCTL_DROPIN = Path("/etc/sysctl.d/60-llmhost-hugepages.conf")
AFFINITY_DROPIN = Path("/etc/systemd/system.conf.d/60-llmhost-cpuaffinity.conf")
DAEMON_JSON = Path("/etc/docker/daemon.json")
VENV_CLI = "/opt/llmhost/venv/bin/llmhost"
TEST_KERNEL = Path("/boot/vmlinuz-0.0.0-llmhost-test")
# What the module puts back afterwards (files and whole directories).
RESTORED = ("/etc/llmhost", str(SYSCTL_DROPIN), "/etc/default/grub", str(GRUB_DROPIN),
            "/boot/grub", str(TEST_KERNEL), "/etc/systemd/system.conf.d", str(DAEMON_JSON),
            "/etc/fstab", "/var/run/reboot-required", "/var/run/reboot-required.pkgs",
            "/usr/local/bin/llmhost", f"/var/lib/llmhost/{PROJECT}")  # fmt: skip
RUNS: dict[str, Run] = {}
RUNS_STATE: dict[str, dict[str, str]] = {}
FRESH: list[bool] = []  # whether llmhost was not installed when the first check-mode run began


def _enabled() -> None:
    if os.environ.get("LLMHOST_ANSIBLE") != "1":
        pytest.skip("provisions this machine for real: set LLMHOST_ANSIBLE=1 (CI does)")
    if os.geteuid() != 0:
        pytest.fail("the provisioning tests need root (they write /etc and the hugepage pool)")


# ---------------------------------------------------------------- saving and restoring the host


def _snapshot(paths: tuple[str, ...]) -> dict[str, tuple[str, bytes | str] | None]:
    saved: dict[str, tuple[str, bytes | str] | None] = {}
    for root in paths:
        base = Path(root)
        if not base.exists() and not base.is_symlink():
            saved[root] = None
            continue
        tree = base.is_dir() and not base.is_symlink()
        items = [base, *sorted(base.rglob("*"))] if tree else [base]
        for item in items:
            if item.is_symlink():
                saved[str(item)] = ("link", os.readlink(item))
            elif item.is_dir():
                saved[str(item)] = ("dir", "")
            else:
                saved[str(item)] = ("file", item.read_bytes())
    return saved


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _restore(saved: dict[str, tuple[str, bytes | str] | None], paths: tuple[str, ...]) -> None:
    for root in paths:
        base = Path(root)
        if saved.get(root) is None:
            _remove(base)
            continue
        tree = base.is_dir() and not base.is_symlink()
        present = [base, *sorted(base.rglob("*"))] if tree else []
        for item in reversed(present):
            if str(item) not in saved:
                _remove(item)
        for path, entry in saved.items():
            if not (path == root or path.startswith(root.rstrip("/") + "/")) or entry is None:
                continue
            kind, data = entry
            target = Path(path)
            if kind == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif kind == "link":
                _remove(target)
                target.symlink_to(data)
            elif not target.is_file() or target.read_bytes() != data:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)  # type: ignore[arg-type]


def _hugetlbfs_mounts() -> int:
    return sum(" /dev/hugepages hugetlbfs " in line
               for line in Path("/proc/mounts").read_text().splitlines())  # fmt: skip


def _reload_dockerd() -> None:
    pid = Path("/var/run/docker.pid")
    if pid.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid.read_text().strip()), signal.SIGHUP)


@pytest.fixture(scope="module")
def saved_host() -> Iterator[None]:
    _enabled()
    lock = open("/run/llmhost-ansible-tests.lock", "w")  # noqa: SIM115 (held until teardown)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pytest.fail("another session is running the provisioning tests on this machine")
    saved = _snapshot(RESTORED)
    pages = Path("/proc/sys/vm/nr_hugepages").read_text().strip()
    mounts = _hugetlbfs_mounts()
    yield
    subprocess.run(["docker", "compose", "-p", PROJECT, "down", "--remove-orphans"],
                   capture_output=True, check=False)  # fmt: skip
    daemon_before = DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None
    _restore(saved, RESTORED)
    if (DAEMON_JSON.read_bytes() if DAEMON_JSON.exists() else None) != daemon_before:
        _reload_dockerd()
    while _hugetlbfs_mounts() > mounts:
        subprocess.run(["umount", "/dev/hugepages"], check=True)
    Path("/proc/sys/vm/nr_hugepages").write_text(pages + "\n")
    lock.close()


# ---------------------------------------------------------------- inputs


def _ensure_grub() -> None:
    """GRUB's tools and defaults, and a kernel image for grub-mkconfig to write an entry for: the
    VM boots without GRUB, but the drop-in, update-grub and the generated entry are real."""
    if shutil.which("update-grub") is None:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "grub2-common"], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    defaults = Path("/etc/default/grub")
    if not defaults.exists():
        shutil.copy("/usr/share/grub/default/grub", defaults)
    Path("/boot/grub").mkdir(parents=True, exist_ok=True)
    if not any(Path("/boot").glob("vmlinuz-*")):
        TEST_KERNEL.write_bytes(b"not a kernel: grub-mkconfig only needs a file to list\n")


@dataclass(frozen=True)
class Inputs:
    vars_file: Path
    vars: dict
    bench_dir: Path


@pytest.fixture(scope="module")
def ci(saved_host: None, tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """Docker, a local base image, the llama.cpp tree, a tiny model, GRUB, a user's daemon.json."""
    try:
        infra.ensure_dockerd()
        base = infra.ensure_base_image()
        source = infra.ensure_llama_source()
        model = infra.ensure_tiny_gguf()
        _ensure_grub()
    except Exception as exc:  # any missing prerequisite is reported the same way
        pytest.fail(f"provisioning test infrastructure: {exc}")
    work = tmp_path_factory.mktemp("provision")
    models = work / "models"
    models.mkdir()
    shutil.copy(model, models / "tiny.gguf")
    user = json.loads(DAEMON_JSON.read_text()) if DAEMON_JSON.exists() else {}
    user[USER_KEY[0]] = USER_KEY[1]
    DAEMON_JSON.parent.mkdir(parents=True, exist_ok=True)
    DAEMON_JSON.write_text(json.dumps(user, indent=4) + "\n")
    variables = {
        "llmhost_facts_config": {
            "profile": "cpu", "inference_cores": 1, "project": PROJECT, "models_dir": str(models),
            "services": {"llama-cpu": {"port": PORT, "model": "tiny.gguf", "ctx_size": 1024,
                                       "targets": {"ttft_p90_ms": 10000, "output_tok_s_min": 1,
                                                   "failed_max": 0}}},
            "images": {"base_image": base},
            "bench": {"requests": 4, "max_tokens": 16, "warmup": 1},
        },
        "llmhost_images_llama_source": str(source),
        "llmhost_images_base_image": base,
        "docker_daemon_options": {"labels": [LABEL]},
        # Debian 12's docker.io (20.10) is below the engine floor; Docker's repository is not
        # reachable from CI, so the run keeps the distribution's, as a user must say explicitly.
        "docker_package_source": "distro",
        "docker_accept_below_floor": True,
        "llmhost_validation_out_dir": str(work / "bench"),
        # Debian 12's docker.io ships runc 1.1.5 with no fix for CVE-2025-31133/52565/52881;
        # doctor rightly fails it and nothing but docker_package_source: docker fixes it.
        "llmhost_validation_ignore_checks": ["security.runc"],
    }  # fmt: skip
    vars_file = work / "vars.json"
    vars_file.write_text(json.dumps(variables, indent=2))
    return Inputs(vars_file, variables, work / "bench")


def site(ci: Inputs, *args: str, extra: dict | None = None, name: str | None = None) -> Run:
    """site.yml with the CI inputs; a `name`d run is timed per task into site-report.json
    beside the inputs (where CI time goes)."""
    if name is None:
        return ansible_playbook("site.yml", *args, vars_file=ci.vars_file, extra_vars=extra)
    log = ci.vars_file.parent / f"site-{name}.log"
    run = logged_playbook("site.yml", *args, log=log, vars_file=ci.vars_file, extra_vars=extra)
    report = ci.vars_file.parent / "site-report.json"
    runs = json.loads(report.read_text()) if report.exists() else {}
    runs[name] = {"seconds": round(run.seconds, 1), "slowest_tasks": task_seconds(log)[:12]}
    report.write_text(json.dumps(runs, indent=2) + "\n")
    return run


def llmhost(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMHOST_")}
    return subprocess.run([VENV_CLI, *args], capture_output=True, text=True, env=env,
                          check=False)  # fmt: skip


def plan() -> dict:
    proc = llmhost("plan", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---------------------------------------------------------------- check mode first


def test_check_mode_first_changes_nothing(ci: Inputs) -> None:
    before = RUNS_STATE["before_check"] = host_state(PROJECT)
    FRESH.append(not Path(VENV_CLI).parents[2].exists())
    run = RUNS["check"] = site(ci, "--check", "--diff")
    after = host_state(PROJECT)
    assert run.rc == 0 and run.recap["failed"] == 0, run.tail()
    assert state_diff(before, after) == []
    # It says what it would do: install llmhost, or (installed) diffs of the files it owns.
    assert run.recap["changed"] > 0
    previews = ("would install llmhost", "+++ after: /etc/llmhost/llmhost.yaml")
    assert any(text in run.output for text in previews)


def test_check_mode_without_llmhost_installed(ci: Inputs) -> None:
    """The classic pitfall: check mode failing because what a real run installs is not there."""
    if FRESH == [True]:  # a fresh host (CI): the first check-mode run was exactly this case
        run, home = RUNS["check"], Path(VENV_CLI).parents[2]
        assert state_diff(RUNS_STATE["before_check"], host_state(PROJECT)) == []
    else:  # llmhost is installed here already: point the roles at a home that does not exist
        home = Path("/opt/llmhost-not-installed-ci")
        before = host_state(PROJECT)
        run = site(ci, "--check", "--diff", extra={"llmhost_facts_home": str(home)})
        assert state_diff(before, host_state(PROJECT)) == []
    assert run.rc == 0 and run.recap["failed"] == 0, run.tail()
    assert "llmhost is not installed on localhost yet" in run.output
    assert "would install llmhost" in run.output
    assert not home.exists()


# ---------------------------------------------------------------- bad variables

BAD_VARIABLES = [
    ({"hugepages_runtime": "yes"}, "hugepages_runtime must be true or false"),
    ({"cpu_isolation_reboot_ok": 1}, "cpu_isolation_reboot_ok must be true or false"),
    ({"cpu_isolation_reboot_timeout": "900"}, "cpu_isolation_reboot_timeout must be an integer"),
    ({"cpu_isolation_reboot_timeout": 5}, "cpu_isolation_reboot_timeout must be 60 seconds"),
    ({"hugepages_runtme": True}, "unknown variable(s) hugepages_runtme"),
    ({"docker_daemon_options": ["labels"]}, "docker_daemon_options"),
    ({"docker_service_manager": "upstart"}, "value of docker_service_manager must be one of"),
    ({"nvidia_container_toolkit_min_version": "latest"}, "must be a version like 1.19.1"),
    ({"llmhost_facts_profile": "tpu"}, "value of llmhost_facts_profile must be one of"),
    ({"llmhost_facts_config": {"inference_cores": "two"}}, "inference_cores must be an integer"),
    (
        {"llmhost_facts_config": {"hugepages": {"enabled": "yes"}}},
        "hugepages.enabled must be true or false",
    ),
    ({"llmhost_images_jobs": 0}, "llmhost_images_jobs must be 1 or more"),
    ({"llmhost_services_timeout": 5}, "llmhost_services_timeout must be from 10 to 7200"),
    ({"llmhost_validation_services": "llama-cpu"}, "llmhost_validation_services must be a list"),
]


BAD_IDS = [f"{next(iter(b))}={json.dumps(next(iter(b.values())))}" for b, _ in BAD_VARIABLES]


@pytest.fixture(scope="module")
def bad_runs(ci: Inputs) -> dict[str, tuple[Run, list[str]]]:
    """Every bad-variable run, four at a time (each is mostly ansible-playbook starting up),
    with the host's fingerprint taken before the first and after the last: any run that got
    past validation would have changed it."""
    before = host_state(PROJECT)
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = dict(zip(BAD_IDS, pool.map(lambda case: site(ci, extra=case[0]), BAD_VARIABLES),
                        strict=True))  # fmt: skip
    changes = state_diff(before, host_state(PROJECT))
    return {case: (run, changes) for case, run in runs.items()}


@pytest.mark.parametrize(("bad", "message"), BAD_VARIABLES, ids=BAD_IDS)
def test_bad_variable_is_refused_before_any_change(
    bad_runs: dict[str, tuple[Run, list[str]]],
    bad: dict,
    message: str,
    request: pytest.FixtureRequest,
) -> None:
    """Run before the real run, while the host still has changes pending: had validation let
    the run go on, the fingerprint would differ."""
    run, changes = bad_runs[request.node.callspec.id]
    assert run.rc != 0 and message in run.output, run.tail()
    assert "PLAY [Tune the host" not in run.output  # stopped in the validation play
    assert run.recap["changed"] == 0 and run.recap["failed"] == 1
    assert changes == []


# ---------------------------------------------------------------- the real runs


def test_real_run_provisions_the_host(ci: Inputs) -> None:
    run = RUNS["first"] = site(ci, "--diff", name="first")
    print(f"\nfirst real run ({run.seconds:.0f} s): {run.recap_line}")
    assert run.rc == 0 and run.recap["failed"] == 0, run.tail(120)
    p = plan()
    pages, cpus = p["hugepages"]["pages"], p["cores"]["inference_cpus"]
    cpulist = ",".join(map(str, cpus))  # one CPU here; llmhost formats ranges as 1-3
    files = json.loads(llmhost("plan", "--host-files").stdout)

    # Hugepages: granted now, visible in /proc/meminfo, and at boot through the sysctl drop-in.
    assert pages > 0
    meminfo = Path("/proc/meminfo").read_text()
    assert int(re.search(r"HugePages_Total:\s+(\d+)", meminfo).group(1)) == pages
    assert SYSCTL_DROPIN.read_text() == files[str(SYSCTL_DROPIN)]
    assert f"vm.nr_hugepages = {pages}" in SYSCTL_DROPIN.read_text()
    assert _hugetlbfs_mounts() >= 1
    fstab = [x.split() for x in Path("/etc/fstab").read_text().splitlines() if "hugetlbfs" in x]
    assert all("nofail" in fields[3].split(",") for fields in fstab), fstab  # never stops a boot

    # CPU isolation: the drop-in holds the planned cores, update-grub put them in grub.cfg.
    dropin = GRUB_DROPIN.read_text()
    assert dropin.startswith(files[str(GRUB_DROPIN)])
    assert (
        f'LLMHOST_CMDLINE="isolcpus=managed_irq,domain,{cpulist} nohz_full={cpulist} '
        f"rcu_nocbs={cpulist}" in dropin
    )
    # Normal entries; recovery mode ("single") keeps GRUB_CMDLINE_LINUX only, by GRUB's design.
    entries = Path("/boot/grub/grub.cfg").read_text().splitlines()
    linux = [
        x
        for x in entries
        if x.strip().startswith("linux") and "vmlinuz" in x and " single" not in x
    ]
    assert linux and all(f"isolcpus=managed_irq,domain,{cpulist}" in x for x in linux)
    assert "reboot required for isolcpus" in run.output
    assert Path("/var/run/reboot-required").exists()
    assert AFFINITY_DROPIN.read_text() == files[str(AFFINITY_DROPIN)]

    # daemon.json merged: the user's key kept, ours added, dockerd reloaded (not restarted).
    daemon = json.loads(DAEMON_JSON.read_text())
    assert daemon[USER_KEY[0]] == USER_KEY[1] and LABEL in daemon["labels"]
    labels = subprocess.run(["docker", "info", "--format", "{{json .Labels}}"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert LABEL in labels

    # Services deployed and healthy, validated by the bench and by doctor.
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=10) as response:
        assert response.status == 200
    assert "llama-cpu: 4 requests" in run.output and "gates passed" in run.output
    assert list(ci.bench_dir.glob("llama-cpu-*.json"))

    # llmhost doctor, run as a user would (no --config: /etc/llmhost/llmhost.yaml).
    doctor = json.loads(llmhost("doctor", "--json").stdout)
    checks = {c["id"]: c for c in doctor["checks"]}
    assert checks["kernel.cpu_isolation"]["status"] == "warn"
    assert "pending reboot" in checks["kernel.cpu_isolation"]["detail"]
    for ok in ("memory.hugepages", "docker.engine", "docker.compose", "images.flags",
               "services.health"):  # fmt: skip
        assert checks[ok]["status"] == "ok", checks[ok]


def test_second_run_changes_nothing(ci: Inputs) -> None:
    run = RUNS["second"] = site(ci, name="second")
    print(f"\nsecond real run ({run.seconds:.0f} s): {run.recap_line}")
    assert run.rc == 0 and run.recap["failed"] == 0, run.tail(120)
    assert run.recap["changed"] == 0, f"changed: {run.changed_tasks()}"
    assert "gates passed" in run.output  # validated again


def test_check_mode_previews_drift_then_a_run_repairs_it(ci: Inputs) -> None:
    pages = plan()["hugepages"]["pages"]
    SYSCTL_DROPIN.unlink()
    AFFINITY_DROPIN.write_text("[Manager]\nCPUAffinity=0-1\n")
    Path("/proc/sys/vm/nr_hugepages").write_text(f"{pages + 5}\n")
    before = host_state(PROJECT)
    check = site(ci, "--check", "--diff", "--tags", "hugepages,cpu_isolation")
    assert check.rc == 0 and state_diff(before, host_state(PROJECT)) == [], check.tail()
    assert f"+++ after: {SYSCTL_DROPIN}" in check.output
    assert f"+++ after: {AFFINITY_DROPIN}" in check.output
    assert f"nr_hugepages (2048 kB) = {pages + 5}" in check.output
    assert f"nr_hugepages (2048 kB) = {pages}" in check.output
    assert check.recap["changed"] >= 3

    fix = site(ci, "--tags", "hugepages,cpu_isolation")
    assert fix.rc == 0 and fix.recap["changed"] >= 3, fix.tail()
    assert SYSCTL_DROPIN.exists() and "CPUAffinity=0-1" not in AFFINITY_DROPIN.read_text()
    assert Path("/proc/sys/vm/nr_hugepages").read_text().strip() == str(pages)
    again = site(ci, "--tags", "hugepages,cpu_isolation")
    assert again.rc == 0 and again.recap["changed"] == 0, again.changed_tasks()


def test_hand_edited_grub_dropin_is_reported_not_clobbered(ci: Inputs) -> None:
    planned = GRUB_DROPIN.read_text()
    edited = planned.replace('LLMHOST_CMDLINE="', 'LLMHOST_CMDLINE="mitigations=off ')
    GRUB_DROPIN.write_text(edited)
    run = site(ci, "--tags", "cpu_isolation")
    assert run.rc == 0 and run.recap["changed"] == 0, run.tail()
    assert "was edited by hand" in run.output and "cpu_isolation_force: true" in run.output
    assert GRUB_DROPIN.read_text() == edited

    forced = site(ci, "--tags", "cpu_isolation", extra={"cpu_isolation_force": True})
    assert forced.rc == 0 and forced.recap["changed"] >= 1, forced.tail()
    assert GRUB_DROPIN.read_text() == planned


def test_grub_less_host_is_reported_not_broken(ci: Inputs) -> None:
    before = host_state(PROJECT)
    run = site(ci, "--tags", "cpu_isolation",
               extra={"cpu_isolation_grub_defaults": "/nonexistent/default/grub"})  # fmt: skip
    assert run.rc == 0 and run.recap["changed"] == 0, run.tail()
    assert "no GRUB on this host (/nonexistent/default/grub is missing)" in run.output
    assert state_diff(before, host_state(PROJECT)) == []


def test_engine_below_the_floor_is_refused_unless_accepted(ci: Inputs) -> None:
    before = host_state(PROJECT)
    run = site(ci, "--tags", "docker", extra={"docker_accept_below_floor": False})
    from llmhost.facts.versions import compare_versions

    installed = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout
    version = re.search(r"version ([0-9]+(?:\.[0-9]+)*)", installed).group(1)
    floor = role_file("docker", "defaults/main.yml")["docker_engine_min_version"]
    if compare_versions(version, floor) < 0:
        assert run.rc != 0 and "is below llmhost's security floor" in run.output, run.tail()
        assert "docker_package_source: docker" in run.output
        assert "docker_accept_below_floor: true" in run.output
    else:  # an engine at or above the floor passes
        assert run.rc == 0, run.tail()
    assert state_diff(before, host_state(PROJECT)) == []  # refused before touching anything


def test_default_source_is_dockers_repository_below_the_floor(ci: Inputs) -> None:
    """By default (auto) an engine below the floor is replaced from Docker's repository: here,
    with the repository's key unreachable, the run says so and stops at fetching it."""
    before = host_state(PROJECT)
    run = site(ci, "--tags", "docker", extra={
        "docker_package_source": "auto", "docker_accept_below_floor": False,
        "docker_upstream_gpg_key_url": "http://127.0.0.1:9/gpg",
    })  # fmt: skip
    policy = subprocess.run(["apt-cache", "policy", "docker.io"], capture_output=True, text=True)
    offered = re.search(r"Candidate: (?:\d+:)?([0-9]+(?:\.[0-9]+)*)", policy.stdout)
    floor = role_file("docker", "defaults/main.yml")["docker_engine_min_version"]
    from llmhost.facts.versions import compare_versions

    if offered and compare_versions(offered.group(1), floor) >= 0:
        pytest.skip(f"the distribution offers docker.io {offered.group(1)}, at the floor")
    assert run.rc != 0, run.tail()
    assert "the engine comes from Docker's repository" in run.output
    assert "Fetch Docker's repository signing key" in run.output
    assert "127.0.0.1:9" in run.output
    assert state_diff(before, host_state(PROJECT)) == []


def test_docker_role_starts_dockerd_without_systemd(ci: Inputs) -> None:
    """Where systemd is not PID 1 (this VM), the role starts dockerd itself."""
    if Path("/proc/1/comm").read_text().strip() == "systemd":
        pytest.skip("systemd is PID 1 here: the role uses the docker unit")
    pid = int(Path("/var/run/docker.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not infra.docker_available()
    run = site(ci, "--tags", "docker")
    assert run.rc == 0, run.tail()
    assert "docker : Start dockerd in the background" in run.changed_tasks()
    assert infra.docker_available()
    again = site(ci, "--tags", "docker")
    assert again.rc == 0 and again.recap["changed"] == 0, again.changed_tasks()


def test_install_falls_back_to_the_virtualenvs_own_pip(ci: Inputs, tmp_path: Path) -> None:
    """A target whose Python has no pip that can install into the virtualenv (here none at
    all): the install fails over to ensurepip and the virtualenv's own pip, and llmhost runs."""
    nopip = tmp_path / "nopip"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(nopip)], check=True)
    home, link = tmp_path / "home", tmp_path / "bin" / "llmhost"
    link.parent.mkdir()
    extra = {"llmhost_facts_home": str(home), "llmhost_facts_python": str(nopip / "bin" / "python"),
             "llmhost_facts_cli_link": str(link)}  # fmt: skip
    run = site(ci, "--tags", "llmhost_facts", extra=extra)
    assert run.rc == 0 and run.recap["failed"] == 0, run.tail()
    assert run.recap["rescued"] == 1, run.recap_line
    assert "Give the virtualenv its own pip (the system's could not install into it)" in run.output
    assert (home / "venv" / "bin" / "pip3").exists()
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and "llmhost" in version.stdout, version.stderr
