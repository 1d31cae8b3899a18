"""Every fix llmhost prints must work from an installed wheel: no path into the repository
(`python benchmarks/...`, `scripts/...`, `docs/...`), which a `pip install` does not carry."""

import ast
import re

import pytest

from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.config import Config, HugepagesConfig
from llmhost.plan.evidence import KNOBS, UNKNOWN_KNOB
from llmhost.verify.doctor import run_doctor
from llmhost.verify.doctor.registry import CHECKS
from tests.support import REPO, SNAPSHOTS

PACKAGE = REPO / "llmhost"
REPO_PATH = re.compile(
    r"(?<![\w./-])(?:benchmarks|scripts|docs|tests|roles|playbooks|inventories|templates)/"
    r"|\bpython3? +\S+\.py\b|\bbash +\S+\.sh\b"
)
CONFIGS = (
    Config(),
    Config(inference_cores=1),
    Config(inference_cores=64),  # too many: the plan itself fails with a fix
    Config(inference_cores=1, hugepages=HugepagesConfig(gib=0.1)),
)


def test_the_pattern_catches_what_it_is_for():
    for text in (
        "python benchmarks/cpu_knobs.py --model M",
        "see docs/security.md",
        "run scripts/nvml_dump.py",
        "python3 x.py",
    ):
        assert REPO_PATH.search(text), text
    for text in ("llmhost build --profile cpu", "sudo modprobe nvidia-uvm", "/etc/docker/x.json"):
        assert not REPO_PATH.search(text), text


def _non_docstring_strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_no_string_in_the_package_points_into_the_repository():
    """Static: every string llmhost can print (docstrings and comments may cite the source)."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in _non_docstring_strings(ast.parse(path.read_text()))
        if REPO_PATH.search(node.value)
    ]
    assert not found, "\n".join(found)


def test_every_check_module_and_knob_is_scanned():
    modules = {fn.__module__ for _, _, fn in CHECKS}
    assert all((PACKAGE.parent / (m.replace(".", "/") + ".py")).is_file() for m in modules), modules
    for knob in [*KNOBS.values(), UNKNOWN_KNOB]:
        assert not REPO_PATH.search(knob.measure) and not REPO_PATH.search(knob.off or "")


@pytest.mark.parametrize("snapshot", sorted(SNAPSHOTS.glob("*.tar.gz")), ids=lambda p: p.name)
def test_doctor_fixes_and_plan_notes_on_every_snapshot(snapshot):
    """Dynamic: what the registered checks and the planner actually say on each fixture host."""
    facts = gather(SnapshotSource(snapshot))
    texts = []
    for config in CONFIGS:
        for profile in ("cpu", "gpu", "all"):
            report = run_doctor(facts, config, profile, live=False)
            texts += [r.remediation for r in report.results if r.remediation]
            texts += [r.detail for r in report.results if r.id == "plan"]  # a plan's failure
            if report.plan is not None:
                texts += report.plan.notes
                texts += [r.measure for r in report.plan.recommendations]
    assert texts
    bad = [t for t in texts if REPO_PATH.search(t)]
    assert not bad, "\n".join(bad)
