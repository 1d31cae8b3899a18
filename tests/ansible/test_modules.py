"""The roles' Python modules, each run by a real ansible-playbook against scratch files: the
daemon.json merge, the GRUB drop-in and its reboot contract, the hugepage pool against a kernel
double, the governor, and llmhost_cli's changed reporting. No root needed."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from llmhost.plan.planner import HUGEPAGE_KB
from tests.ansible.support import REPO, ROLES, ansible_playbook, run_module

pytestmark = pytest.mark.ansible

DOCKER_LIB = ROLES / "docker" / "library"
GRUB_LIB = ROLES / "cpu_isolation" / "library"
HUGEPAGES_LIB = ROLES / "hugepages" / "library"
FACTS_LIB = ROLES / "llmhost_facts" / "library"
PLAYBOOKS = Path(__file__).parent / "playbooks"


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ---------------------------------------------------------------- daemon.json


USER_CONFIG = {"log-level": "warn", "data-root": "/srv/docker",
               "runtimes": {"crun": {"path": "/usr/bin/crun"}}}  # fmt: skip
NVIDIA = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}


def test_daemon_json_merge_keeps_user_keys(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(USER_CONFIG, indent=4))
    result = run_module("llmhost_daemon_json", {"path": str(path), "merge": NVIDIA}, tmp_path,
                        library=DOCKER_LIB)  # fmt: skip
    assert result["changed"] and result["changed_keys"] == ["runtimes"]
    assert result["restart_needed"] is False  # runtimes are reloaded on SIGHUP
    data = json.loads(path.read_text())
    assert data["log-level"] == "warn" and data["data-root"] == "/srv/docker"
    assert data["runtimes"] == {"crun": {"path": "/usr/bin/crun"}, **NVIDIA["runtimes"]}

    before = path.stat().st_mtime_ns
    again = run_module("llmhost_daemon_json", {"path": str(path), "merge": NVIDIA}, tmp_path,
                       library=DOCKER_LIB)  # fmt: skip
    assert again["changed"] is False and path.stat().st_mtime_ns == before


def test_daemon_json_restart_only_for_keys_reload_cannot_apply(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(USER_CONFIG))
    result = run_module("llmhost_daemon_json",
                        {"path": str(path), "merge": {"log-driver": "journald",
                                                      "labels": ["a=b"]}},
                        tmp_path, library=DOCKER_LIB)  # fmt: skip
    assert result["changed_keys"] == ["labels", "log-driver"] and result["restart_needed"]
    removed = run_module("llmhost_daemon_json", {"path": str(path), "merge": {"log-driver": None}},
                         tmp_path, library=DOCKER_LIB)  # fmt: skip
    assert removed["changed"] and "log-driver" not in json.loads(path.read_text())
    assert json.loads(path.read_text())["labels"] == ["a=b"]


def test_daemon_json_check_mode_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "daemon.json"
    checked = run_module("llmhost_daemon_json", {"path": str(path), "merge": NVIDIA}, tmp_path,
                         library=DOCKER_LIB, check=True, diff=True)  # fmt: skip
    assert checked["changed"] and '"nvidia"' in checked["diff"]["after"]
    assert not path.exists()
    run_module("llmhost_daemon_json", {"path": str(path), "merge": NVIDIA}, tmp_path,
               library=DOCKER_LIB)  # fmt: skip
    assert json.loads(path.read_text()) == NVIDIA
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_daemon_json_is_validated_and_backed_up_before_it_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps(USER_CONFIG))
    seen = tmp_path / "validated.json"
    accept = _script(tmp_path / "accept", f'cp "$2" "{seen}"\n')
    refuse = _script(tmp_path / "refuse", "echo 'unable to configure the daemon' >&2\nexit 1\n")
    args = {"path": str(path), "merge": NVIDIA, "validate_command": [str(refuse), "-f"]}
    refused = run_module("llmhost_daemon_json", args, tmp_path, library=DOCKER_LIB)
    assert refused.get("failed") and "unable to configure the daemon" in refused["msg"]
    assert json.loads(path.read_text()) == USER_CONFIG  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".daemon")) == []
    args["validate_command"] = [str(accept), "-f"]
    done = run_module("llmhost_daemon_json", args, tmp_path, library=DOCKER_LIB)
    assert done["changed"] and done["validated"] is True
    assert json.loads(seen.read_text()) == json.loads(path.read_text())  # checked what was written
    assert json.loads(Path(done["backup_file"]).read_text()) == USER_CONFIG


def test_daemon_json_invalid_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"log-level": "warn",}\n')
    result = run_module("llmhost_daemon_json", {"path": str(path), "merge": NVIDIA}, tmp_path,
                        library=DOCKER_LIB)  # fmt: skip
    assert result.get("failed") and "not valid JSON" in result["msg"]
    assert "left untouched" in result["msg"]
    assert path.read_text() == '{"log-level": "warn",}\n'


def test_nvidia_role_merges_runtime_and_reloads_only_on_change(tmp_path: Path) -> None:
    """The role's own task file: the user's keys survive, Docker is reloaded only when the
    file changed (the handler stands in for the docker role's)."""
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"log-level": "warn", "default-address-pools":
                                [{"base": "10.99.0.0/16", "size": 24}]}))  # fmt: skip
    args = ("-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}")
    first = ansible_playbook(PLAYBOOKS / "nvidia-runtime.yml", *args,
                             extra_vars={"docker_daemon_json_path": str(path)})  # fmt: skip
    assert first.rc == 0, first.tail()
    assert "HANDLER-RAN: Reload docker" in first.output
    data = json.loads(path.read_text())
    assert data["log-level"] == "warn" and data["default-address-pools"][0]["size"] == 24
    assert data["runtimes"]["nvidia"] == {"path": "nvidia-container-runtime", "args": []}
    assert "default-runtime" not in data

    second = ansible_playbook(PLAYBOOKS / "nvidia-runtime.yml", *args,
                              extra_vars={"docker_daemon_json_path": str(path)})  # fmt: skip
    assert second.rc == 0 and second.recap["changed"] == 0, second.tail()
    assert "HANDLER-RAN" not in second.output

    as_default = {
        "docker_daemon_json_path": str(path),
        "nvidia_container_toolkit_default_runtime": True,
    }
    default = ansible_playbook(PLAYBOOKS / "nvidia-runtime.yml", *args, extra_vars=as_default)
    assert default.rc == 0 and json.loads(path.read_text())["default-runtime"] == "nvidia"


# ---------------------------------------------------------------- GRUB drop-in

PLANNED = {"isolcpus": "managed_irq,domain,2-7", "nohz_full": "2-7", "rcu_nocbs": "2-7",
           "irqaffinity": "0-1"}  # fmt: skip
CONTENT = (
    '# Managed by llmhost\nLLMHOST_CMDLINE="isolcpus=managed_irq,domain,2-7 nohz_full=2-7 '
    'rcu_nocbs=2-7 irqaffinity=0-1"\n'
    'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} ${LLMHOST_CMDLINE}"\n'
)


@pytest.fixture
def grub(tmp_path: Path) -> dict:
    """A GRUB host in a directory: defaults file, running kernel's cmdline, and an update-grub
    stand-in that records each run and writes grub.cfg."""
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "grub").write_text('GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
    (tmp_path / "cmdline").write_text("BOOT_IMAGE=/vmlinuz-6.1 root=/dev/vda ro quiet\n")
    log = tmp_path / "mkconfig.log"
    mk = _script(
        tmp_path / "update-grub", f'echo run >> "{log}"\necho cfg > "{tmp_path}/grub.cfg"\n'
    )
    args = {"path": str(tmp_path / "default" / "grub.d" / "99-llmhost.cfg"), "content": CONTENT,
            "params": PLANNED, "grub_defaults": str(tmp_path / "default" / "grub"),
            "grub_cfg": str(tmp_path / "grub.cfg"), "mkconfig_command": str(mk),
            "cmdline": str(tmp_path / "cmdline")}  # fmt: skip
    return {"args": args, "log": log, "tmp": tmp_path, "dropin": Path(args["path"])}


def _runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_grub_dropin_written_once_and_reboot_required(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    first = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    assert first["changed"] and first["actions"] == [
        f"write {args['path']}",
        f"run {args['mkconfig_command']}",
    ]
    assert first["reboot_required"] and first["pending_params"] == PLANNED
    text = grub["dropin"].read_text()
    assert text.startswith(CONTENT) and text.splitlines()[-1].startswith("# llmhost-sha256: ")
    assert _runs(grub["log"]) == 1

    second = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    assert second["changed"] is False and second["actions"] == []
    assert second["reboot_required"] and _runs(grub["log"]) == 1  # no update-grub again

    booted = tmp / "cmdline"
    booted.write_text(
        "BOOT_IMAGE=/vmlinuz ro quiet " + " ".join(f"{k}={v}" for k, v in PLANNED.items()) + "\n"
    )
    live = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    assert live["changed"] is False and live["reboot_required"] is False


def test_grub_check_mode_writes_and_runs_nothing(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    checked = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB, check=True, diff=True)
    assert checked["changed"] and len(checked["actions"]) == 2
    assert "LLMHOST_CMDLINE" in checked["diff"]["after"]
    assert not grub["dropin"].exists() and _runs(grub["log"]) == 0


def test_grub_hand_edited_dropin_is_reported_not_clobbered(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    edited = grub["dropin"].read_text().replace("nohz_full=2-7", "nohz_full=2-7 mitigations=off")
    grub["dropin"].write_text(edited)
    new_plan = dict(
        args,
        content=CONTENT.replace("2-7", "3-7"),
        params={k: v.replace("2-7", "3-7") for k, v in PLANNED.items()},
    )
    kept = run_module("llmhost_grub_dropin", new_plan, tmp, library=GRUB_LIB)
    assert kept["changed"] is False and kept["hand_edited"]
    assert kept["dropin_state"] == "hand_edited"
    assert "was edited by hand" in kept["_output"]
    assert grub["dropin"].read_text() == edited and _runs(grub["log"]) == 1

    forced = run_module("llmhost_grub_dropin", dict(new_plan, force=True), tmp, library=GRUB_LIB)
    assert forced["changed"] and "3-7" in grub["dropin"].read_text()
    assert Path(forced["backup_file"]).read_text() == edited  # the hand edit is kept
    assert not forced["backup_file"].endswith(".cfg")  # so update-grub does not read it
    assert "mitigations" not in grub["dropin"].read_text() and _runs(grub["log"]) == 2


def test_grub_outdated_llmhost_dropin_is_replaced(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    new = dict(
        args,
        content=CONTENT.replace("2-7", "4-7"),
        params={k: v.replace("2-7", "4-7") for k, v in PLANNED.items()},
    )
    result = run_module("llmhost_grub_dropin", new, tmp, library=GRUB_LIB)
    assert result["changed"] and result["dropin_state"] == "outdated" and _runs(grub["log"]) == 2


def test_grub_regenerates_after_a_failed_update_grub(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    failing = _script(tmp / "broken-update-grub", "echo 'grub-probe: error: disk not found' >&2\n"
                                                  "exit 1\n")  # fmt: skip
    result = run_module("llmhost_grub_dropin", dict(args, mkconfig_command=str(failing)), tmp,
                        library=GRUB_LIB)  # fmt: skip
    assert result.get("failed") and "grub-probe: error: disk not found" in result["msg"]
    assert grub["dropin"].exists()  # written, but grub.cfg is now older than it
    healed = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    assert healed["changed"] and healed["actions"] == [f"run {args['mkconfig_command']}"]


def test_grub_less_host_is_reported_not_changed(grub: dict) -> None:
    tmp, args = grub["tmp"], grub["args"]
    (tmp / "default" / "grub").unlink()
    result = run_module("llmhost_grub_dropin", args, tmp, library=GRUB_LIB)
    assert result["_rc"] == 0 and result["changed"] is False
    assert result["grub_present"] is False and result["reboot_required"] is False
    assert "no GRUB on this host" in result["msg"]
    assert "isolcpus=managed_irq,domain,2-7" in result["msg"]
    assert not grub["dropin"].exists() and _runs(grub["log"]) == 0


# ---------------------------------------------------------------- hugepages


def _kernel_double(root: Path, *, grants: bool) -> Path:
    """/sys and /proc files the module touches; a pool file bound to /dev/null grants nothing."""
    pool = root / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    pool.parent.mkdir(parents=True)
    if grants:
        pool.write_text("0\n")
    else:
        pool.symlink_to("/dev/null")
    vm = root / "proc/sys/vm"
    vm.mkdir(parents=True)
    (vm / "drop_caches").write_text("")
    (vm / "compact_memory").write_text("")
    (root / "proc/meminfo").write_text("MemTotal: 1000 kB\nHugePages_Total:       0\n")
    return pool


def test_hugepages_pool_set_and_read_back(tmp_path: Path) -> None:
    pool = _kernel_double(tmp_path / "root", grants=True)
    args = {"pages": 41, "page_kb": HUGEPAGE_KB, "root": str(tmp_path / "root")}
    checked = run_module("llmhost_hugepages", args, tmp_path, library=HUGEPAGES_LIB, check=True)
    assert checked["changed"] and pool.read_text() == "0\n"
    first = run_module("llmhost_hugepages", args, tmp_path, library=HUGEPAGES_LIB)
    assert first["changed"]
    assert (first["before"], first["granted"], first["shortfall"]) == (0, 41, 0)
    assert pool.read_text().strip() == "41"
    second = run_module("llmhost_hugepages", args, tmp_path, library=HUGEPAGES_LIB)
    assert second["changed"] is False and second["actions"] == []


def test_hugepages_shortfall_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _kernel_double(root, grants=False)
    args = {"pages": 41, "page_kb": HUGEPAGE_KB, "root": str(root)}
    result = run_module("llmhost_hugepages", args, tmp_path, library=HUGEPAGES_LIB)
    assert (result["requested"], result["granted"], result["shortfall"]) == (41, 0, 41)
    assert any("compacted" in a for a in result["actions"])
    assert (root / "proc/sys/vm/compact_memory").read_text().strip() == "1"


@pytest.mark.parametrize("fail_on_shortfall", [True, False])
def test_hugepages_role_says_so_when_the_kernel_grants_fewer(
    tmp_path: Path, fail_on_shortfall: bool
) -> None:
    root = tmp_path / "root"
    _kernel_double(root, grants=False)
    run = ansible_playbook(PLAYBOOKS / "hugepages-reserve.yml", "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           extra_vars={"__hugepages_root": str(root), "hugepages_planned_pages": 41,
                                       "hugepages_fail_on_shortfall": fail_on_shortfall},
                           env={"ANSIBLE_LIBRARY": str(HUGEPAGES_LIB)})  # fmt: skip
    message = "the kernel granted 0 of the 41 planned 2048 KiB hugepages"
    if fail_on_shortfall:
        assert run.rc != 0 and message in run.output, run.tail()
        assert "boot_time: true" in run.output
    else:
        assert run.rc == 0, run.tail()
        assert "WARNING: only 0 of 41 planned hugepages were granted" in run.output


def test_hugepages_missing_pool_fails_clearly(tmp_path: Path) -> None:
    args = {"pages": 4, "page_kb": 1048576, "root": str(tmp_path)}
    result = run_module("llmhost_hugepages", args, tmp_path, library=HUGEPAGES_LIB)
    assert result.get("failed") and "has no 1048576 KiB hugepage pool" in result["msg"]


# ---------------------------------------------------------------- governor


def test_governor_set_where_cpufreq_offers_it(tmp_path: Path) -> None:
    base = tmp_path / "sys/devices/system/cpu"
    for cpu, (current, offered) in {0: ("powersave", "performance powersave"),
                                    2: ("schedutil", "schedutil")}.items():  # fmt: skip
        freq = base / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text(current + "\n")
        (freq / "scaling_available_governors").write_text(offered + "\n")
    (base / "cpu1").mkdir()  # no cpufreq for this one
    args = {"governor": "performance", "root": str(tmp_path)}
    result = run_module("llmhost_cpu_governor", args, tmp_path, library=GRUB_LIB)
    assert result["changed"] and result["changed_cpus"] == [0] and result["unavailable"] == [2]
    assert (base / "cpu0/cpufreq/scaling_governor").read_text().strip() == "performance"
    assert run_module("llmhost_cpu_governor", args, tmp_path, library=GRUB_LIB)["changed"] is False


def test_governor_host_without_cpufreq(tmp_path: Path) -> None:
    (tmp_path / "sys/devices/system/cpu/cpu0").mkdir(parents=True)
    result = run_module("llmhost_cpu_governor", {"root": str(tmp_path)}, tmp_path, library=GRUB_LIB)
    assert result["changed"] is False and result["cpufreq"] is False
    assert "no cpufreq" in result["msg"]


# ---------------------------------------------------------------- llmhost_cli


# ---------------------------------------------------------------- llmhost_file


def test_llmhost_file_writes_once_with_parents_mode_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "sysctl.d" / "60-llmhost.conf"
    args = {"path": str(path), "content": "vm.nr_hugepages = 32\n", "mode": "0640",
            "backup": True}  # fmt: skip
    checked = run_module("llmhost_file", args, tmp_path, library=FACTS_LIB, check=True, diff=True)
    assert checked["changed"] and checked["diff"]["after"] == args["content"]
    assert not path.parent.exists()  # check mode writes nothing, not even the directory

    written = run_module("llmhost_file", args, tmp_path, library=FACTS_LIB)
    assert written["changed"] and path.read_text() == args["content"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    before = path.stat().st_mtime_ns
    again = run_module("llmhost_file", args, tmp_path, library=FACTS_LIB)
    assert again["changed"] is False and path.stat().st_mtime_ns == before

    path.write_text("vm.nr_hugepages = 99  # by hand\n")
    path.chmod(0o600)
    replaced = run_module("llmhost_file", args, tmp_path, library=FACTS_LIB, diff=True)
    assert replaced["changed"] and path.read_text() == args["content"]
    assert "by hand" in replaced["diff"]["before"]
    assert Path(replaced["backup_file"]).read_text() == "vm.nr_hugepages = 99  # by hand\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".llmhost-")] == []

    path.chmod(0o644)  # only the mode differs: changed, content untouched
    moded = run_module("llmhost_file", args, tmp_path, library=FACTS_LIB)
    assert moded["changed"] and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_llmhost_file_refuses_a_directory_and_a_relative_path(tmp_path: Path) -> None:
    as_dir = run_module("llmhost_file", {"path": str(tmp_path), "content": "x"}, tmp_path,
                        library=FACTS_LIB)  # fmt: skip
    assert as_dir.get("failed") and "is a directory" in as_dir["msg"]
    relative = run_module("llmhost_file", {"path": "etc/x.conf", "content": "x"}, tmp_path,
                          library=FACTS_LIB)  # fmt: skip
    assert relative.get("failed") and "absolute" in relative["msg"]


def test_llmhost_cli_changed_follows_the_probe(tmp_path: Path) -> None:
    cli = _script(tmp_path / "llmhost", f'echo "$@" >> "{tmp_path}/calls"\necho built\n')
    base = {"cli": str(cli), "config": "/etc/llmhost/llmhost.yaml", "argv": ["build"]}
    ran = run_module("llmhost_cli", base, tmp_path, library=FACTS_LIB)
    assert ran["changed"] and ran["stdout_lines"] == ["built"]
    # The probe sees the same (absent) image before and after: nothing changed, truthfully.
    probed = run_module("llmhost_cli", dict(base, probe="images", images=["llmhost/absent:none"]),
                        tmp_path, library=FACTS_LIB)  # fmt: skip
    assert probed["changed"] is False and probed["before"] == probed["after"]
    skipped = run_module("llmhost_cli", dict(base, run=False), tmp_path, library=FACTS_LIB)
    checked = run_module("llmhost_cli", base, tmp_path, library=FACTS_LIB, check=True)
    assert skipped["changed"] is False and checked["changed"] is True
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls == ["--config /etc/llmhost/llmhost.yaml build"] * 2


def test_llmhost_cli_failure_is_one_line(tmp_path: Path) -> None:
    cli = _script(tmp_path / "llmhost", "echo progress\necho 'llmhost: image build failed: x' >&2\n"
                                        "exit 1\n")  # fmt: skip
    result = run_module("llmhost_cli", {"cli": str(cli), "config": "c", "argv": ["build"]},
                        tmp_path, library=FACTS_LIB)  # fmt: skip
    assert result.get("failed") and result["rc"] == 1
    assert result["msg"].endswith("llmhost: image build failed: x")


def test_source_bundle_is_a_deterministic_wheel_that_installs(tmp_path: Path) -> None:
    src = tmp_path / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("llmhost", "templates"):
        shutil.copytree(REPO / name, src / name, ignore=ignore, symlinks=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    (src / "llmhost" / "_linked").symlink_to("../templates")  # like llmhost/_templates
    sources = {p: p.read_bytes() for p in src.rglob("*") if p.is_file() and not p.is_symlink()}
    args = {"src": str(src), "dest": str(tmp_path / "bundles")}
    first = run_module("llmhost_source_bundle", args, tmp_path, library=FACTS_LIB)
    assert {p: p.read_bytes() for p in sources} == sources  # the checkout is only read
    bundle = Path(first["bundle"])
    version = f"{first['version']}+{first['fingerprint'][:12]}"
    assert first["wheel"] == f"llmhost-{version}-py3-none-any.whl"
    with tarfile.open(bundle) as tar:
        assert tar.getnames() == [first["wheel"]]  # no wheelhouse asked for
        wheel = tmp_path / first["wheel"]
        wheel.write_bytes(tar.extractfile(first["wheel"]).read())  # type: ignore[union-attr]
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"llmhost-{version}.dist-info/METADATA").decode()
    # The linked folder is packed as its files; the metadata is pyproject's.
    assert "llmhost/_linked/host/grub-llmhost.cfg.j2" in names
    assert "llmhost/_templates/compose.yaml.j2" in names and "llmhost/cli/main.py" in names
    assert not any("__pycache__" in n or n.startswith("templates/") for n in names)
    assert f"Version: {version}" in metadata and "Requires-Dist: jinja2>=3.1" in metadata
    # pip installs it as it is, and the installed copy renders a template and has its script.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--disable-pip-version-check", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    probe = subprocess.run(
        [sys.executable, "-c", "import llmhost.actions.templates as t; "
         "print(t.TEMPLATE_DIRS[0], len(t.render('compose.yaml.j2', services=[], project='p')))"],
        env={**os.environ, "PYTHONPATH": str(target)}, cwd=tmp_path, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert probe.stdout.startswith(str(target / "llmhost" / "_templates")), probe.stderr
    assert (target / "bin" / "llmhost").exists()
    data = bundle.read_bytes()
    bundle.unlink()
    os.utime(src / "pyproject.toml", (1, 1))  # another mtime, same content: same bytes
    (src / "llmhost" / "__pycache__").mkdir(exist_ok=True)
    (src / "llmhost" / "__pycache__" / "x.pyc").write_bytes(b"noise")
    second = run_module("llmhost_source_bundle", args, tmp_path, library=FACTS_LIB)
    assert second["fingerprint"] == first["fingerprint"] and bundle.read_bytes() == data
    assert first["version"] and first["files"] > 20
    planner = src / "llmhost" / "plan" / "planner.py"
    planner.write_text(planner.read_text() + "\n")
    third = run_module("llmhost_source_bundle", args, tmp_path, library=FACTS_LIB)
    assert third["fingerprint"] != first["fingerprint"] and third["wheel"] != first["wheel"]


def test_source_bundle_carries_the_wheelhouse_but_not_a_stale_llmhost(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    (house / "PyYAML-6.0-py3-none-any.whl").write_bytes(b"a wheel")
    (house / "llmhost-0.0.1-py3-none-any.whl").write_bytes(b"an old llmhost")
    args = {"src": str(REPO), "dest": str(tmp_path / "b"), "wheelhouse": str(house)}
    result = run_module("llmhost_source_bundle", args, tmp_path, library=FACTS_LIB)
    with tarfile.open(result["bundle"]) as tar:
        assert tar.getnames() == [result["wheel"], "wheelhouse/PyYAML-6.0-py3-none-any.whl"]


def test_config_is_checked_by_llmhost_on_the_controller(tmp_path: Path) -> None:
    bad = run_module("llmhost_config_check", {"src": str(REPO), "config": {"inference_cores": "2"}},
                     tmp_path, library=FACTS_LIB)  # fmt: skip
    assert bad.get("failed") and "inference_cores must be an integer" in bad["msg"]
    unknown = run_module("llmhost_config_check", {"src": str(REPO), "config": {"cores": 2}},
                         tmp_path, library=FACTS_LIB)  # fmt: skip
    assert unknown.get("failed") and "unknown key 'cores'" in unknown["msg"]
    good = run_module("llmhost_config_check", {"src": str(REPO), "config": {"profile": "cpu"}},
                      tmp_path, library=FACTS_LIB)  # fmt: skip
    assert good["_rc"] == 0 and good["profile"] == "cpu"
