"""The package's layout is a rule, not a habit: a module's folder says what it may import, and no
two modules import each other at load time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import REPO

PACKAGE = REPO / "llmhost"
# Stage -> the stages its modules may import (their own included). "base" is the top-level
# modules (errors, untrusted, cpulist, progress, cache, state) that every stage uses.
MAY_IMPORT: dict[str, set[str]] = {
    "base": {"base"},
    "facts": {"base", "facts"},
    "devtools": {"base", "facts", "devtools"},
    "plan": {"base", "facts", "plan"},
    "verify": {"base", "facts", "plan", "devtools", "verify"},
    "actions": {"base", "facts", "plan", "verify", "actions"},
    "cli": {"base", "facts", "plan", "verify", "actions", "devtools", "cli"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "base"


def _imports(path: Path, *, load_time_only: bool) -> list[tuple[int, str]]:
    """(line, llmhost module) of each import; at load time only: not inside a function or an
    `if TYPE_CHECKING:` block."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    if load_time_only:
        for node in ast.walk(tree):
            lazy = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
                isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            )
            if lazy:
                skip.update(id(n) for n in ast.walk(node) if n is not node)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmhost"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, n if n in MODULES else node.module) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("llmhost")]
    return [(line, m) for line, m in found if m in MODULES]


def test_every_module_belongs_to_a_stage():
    assert {_stage(m) for m in MODULES} <= set(MAY_IMPORT)
    assert {"facts", "plan", "actions", "verify", "cli"} <= {_stage(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_stages(module: str):
    stage = _stage(module)
    wrong = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} ({_stage(target)})"
        for line, target in _imports(MODULES[module], load_time_only=False)
        if _stage(target) not in MAY_IMPORT[stage]
    ]
    assert not wrong, f"{stage} may import only {sorted(MAY_IMPORT[stage])}: {wrong}"


@pytest.mark.parametrize("load_time_only", [True, False], ids=["at load time", "at all"])
def test_no_import_cycle(load_time_only: bool):
    """None at load time (Python could not start), and none at all: not through an import in a
    function or one for type checking either (a protocol breaks the loop instead)."""
    graph = {
        m: {t for _, t in _imports(p, load_time_only=load_time_only) if t != m}
        for m, p in MODULES.items()
    }
    # A package's __init__ importing its own submodules is how packages load, not a cycle.
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


SCRIPTS = sorted(p for d in ("benchmarks", "scripts") for p in (PACKAGE.parent / d).rglob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_scripts_import_names_that_exist(script: Path):
    """The lab scripts are not run by the suite; a moved or renamed name must not break them."""
    import importlib

    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmhost"):
            module = importlib.import_module(node.module)  # type: ignore[arg-type]
            for alias in node.names:
                if not hasattr(module, alias.name) and f"{node.module}.{alias.name}" not in MODULES:
                    missing.append(f"{node.module}.{alias.name} (line {node.lineno})")
    assert not missing, missing
