"""The provisioning layer's shape: ansible-lint's production profile, every role's files and
argument specs agreeing with its defaults, and the security floors agreeing with llmhost's."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from tests.ansible.support import REPO, ROLE_NAMES, ROLES, role_file

pytestmark = pytest.mark.ansible

ROLE_FILES = ("defaults/main.yml", "meta/argument_specs.yml", "meta/main.yml", "tasks/main.yml",
              "tasks/validate.yml", "handlers/main.yml", "README.md")  # fmt: skip


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_role_has_every_part(role: str) -> None:
    missing = [rel for rel in ROLE_FILES if not (ROLES / role / rel).is_file()]
    assert not missing, f"{role} lacks {missing}"


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_argument_specs_match_defaults(role: str) -> None:
    """Every default is specified and documented, every option has a default, names carry the
    role's prefix, and the spec's documented default is the real one (templated ones excepted)."""
    defaults = role_file(role, "defaults/main.yml") or {}
    options = role_file(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), (
        f"{role}: defaults without spec {sorted(set(defaults) - set(options))}, "
        f"spec without default {sorted(set(options) - set(defaults))}"
    )
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), f"{name} is not prefixed with {role}_"
        assert spec.get("description"), f"{name} has no description"
        assert spec.get("type"), f"{name} has no type"
        value = defaults[name]
        if not (isinstance(value, str) and "{{" in value) and "default" in spec:
            documented = spec["default"]
            if isinstance(documented, str) and "DISTRIBUTION" in documented:
                continue
            assert documented == value, (
                f"{name}: spec says default {documented!r}, defaults/main.yml has {value!r}"
            )


def test_validate_tasks_are_one_file() -> None:
    """Every role validates its inputs with one shared file (imported, so it reads the role's
    own meta/argument_specs.yml); the role's own further checks stay in validate-extra.yml."""
    shared = ROLES / "_shared" / "validate-inputs.yml"
    assert "role_path ~ '/meta/argument_specs.yml'" in shared.read_text()
    for role in ROLE_NAMES:
        (task,) = yaml.safe_load((ROLES / role / "tasks/validate.yml").read_text())
        target = ROLES / role / "tasks" / task["ansible.builtin.import_tasks"]
        assert target.resolve() == shared.resolve(), role


def test_site_validates_every_role_first() -> None:
    plays = yaml.safe_load((REPO / "playbooks/validate.yml").read_text())
    validated = [t["ansible.builtin.import_role"]["name"] for t in plays[0]["tasks"]]
    assert validated == list(ROLE_NAMES)
    site = yaml.safe_load((REPO / "site.yml").read_text())
    assert site[0]["ansible.builtin.import_playbook"] == "playbooks/validate.yml"


def test_toolkit_floor_is_llmhost_floor() -> None:
    """The role's security floor is the one `llmhost doctor` checks (llmhost/data/floors.toml)."""
    from llmhost.verify.floors import role_defaults

    floors = role_defaults()
    toolkit = role_file("nvidia_container_toolkit", "defaults/main.yml")
    docker = role_file("docker", "defaults/main.yml")
    assert (
        toolkit["nvidia_container_toolkit_min_version"]
        == floors["nvidia_container_toolkit_min_version"]
    )
    assert docker["docker_engine_min_version"] == floors["docker_engine_min_version"]
    # CVE-2025-23266 was fixed in 1.17.8 and CVE-2026-24260 in 1.19.1: never below those.
    from llmhost.verify.floors import compare_versions

    assert compare_versions(toolkit["nvidia_container_toolkit_min_version"], "1.19.1") >= 0


def test_syntax_check() -> None:
    cmd = [sys.executable, "-m", "ansible.cli.playbook", "--syntax-check", "site.yml"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ansible_lint_production_profile() -> None:
    if shutil.which("ansible-lint") is None:
        pytest.fail("ansible-lint is not installed: pip install -e '.[test]'")
    proc = subprocess.run([sys.executable, "-m", "ansiblelint", "--nocolor"], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Profile 'production' was required, and it passed" in out, out[-3000:]


def _tasks(items: list | None) -> list[dict]:
    """Every task of a task list, blocks (and their rescue/always) flattened."""
    out: list[dict] = []
    for task in items or []:
        out.append(task)
        for key in ("block", "rescue", "always"):
            out += _tasks(task.get(key))
    return out


@pytest.mark.parametrize("role", ROLE_NAMES)
def test_outputs_are_declared(role: str) -> None:
    """Facts and registers a role sets under its prefix are listed as outputs, so the
    unknown-variable check (validate.yml) never mistakes them for a misspelt input."""
    declared = set(role_file(role, "vars/main.yml").get(f"__{role}_outputs", []))
    set_here: set[str] = set()
    for tasks_file in (ROLES / role / "tasks").glob("*.yml"):
        for task in _tasks(yaml.safe_load(tasks_file.read_text())):
            if "register" in task:
                set_here.add(task["register"])
            set_here |= set(task.get("ansible.builtin.set_fact") or {})
    ours = {n for n in set_here if n.startswith(f"{role}_")}
    assert ours == declared, (
        f"set but undeclared {sorted(ours - declared)}, "
        f"declared but never set {sorted(declared - ours)}"
    )


def test_lab_inventory_passes_validation() -> None:
    """The example lab's variables satisfy every role's checks (validation play only, each
    "host" reached locally: nothing is changed)."""
    from tests.ansible.support import ansible_playbook

    run = ansible_playbook("playbooks/validate.yml", "-i", "inventories/lab",
                           "-e", "ansible_connection=local", "-e", "ansible_user=root",
                           "-e", f"ansible_python_interpreter={sys.executable}",
                           extra_vars={"ansible_become": False})  # fmt: skip
    assert run.rc == 0, run.tail()
    assert run.output.count("failed=0") == 4 and "changed=0" in run.recap_line
