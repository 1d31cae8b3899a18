"""Known defects of llama.cpp source trees that llmhost corrects in the build context.

Each fix is data: the file, the exact text that marks the defect, its replacement, the CMake
switches under which the code is compiled at all, and why. A fix applies only where its text is
found (a tree that no longer has the defect is left alone) and only when its switches are ON; the
image records what was applied (label io.llmhost.llama.source_fixes). The user's tree on disk is
never modified: the fixed bytes go into the build context only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SourceFix:
    id: str
    path: str  # relative to the llama.cpp tree
    marker: str  # text present only in a defective file: the fix needs it to apply
    find: str  # replaced once (it must appear exactly once)
    replace: str
    needs: tuple[str, ...]  # CMake switches that must all be ON for the code to be compiled
    why: str
    upstream: str


# GCC < 14 declares _tile_loadconfig's operand as 8 bytes (`"m" (*(const void **) cfg)`), so the
# stores of rows/colsb into a stack-local config are dead to the optimizer and dropped: LDTILECFG
# then loads palette 1 with every tile 0 rows wide, and the first TILEZERO raises #UD (SIGILL).
# GCC 14 made it a builtin that reads all 64 bytes; clang always did.
AMX_TILE_CONFIG = SourceFix(
    id="amx-tile-config",
    path="ggml/src/ggml-cpu/amx/mmq.cpp",
    marker="alignas(64) tile_config_t tc = {};",
    find="_tile_loadconfig(&tc);",
    replace=(
        "/* llmhost amx-tile-config: an operand the size of the whole config, so GCC < 14 keeps"
        ' the stores into tc */ __asm__ __volatile__("ldtilecfg %0" : : "m"(tc));'
    ),
    needs=("GGML_AMX_INT8", "GGML_AVX512_VNNI"),
    why=(
        "GCC < 14's _tile_loadconfig reads 8 of the config's 64 bytes, so the tile shapes are "
        "optimised away and the first AMX instruction dies with SIGILL"
    ),
    upstream="https://github.com/ggml-org/llama.cpp/pull/26954",
)

FIXES: tuple[SourceFix, ...] = (AMX_TILE_CONFIG,)


def switches_on(cmake_flags: Iterable[str]) -> set[str]:
    """The -DNAME=ON switches of a CMake flag list."""
    out = set()
    for flag in cmake_flags:
        if flag.startswith("-D") and "=" in flag:
            name, _, value = flag[2:].partition("=")
            if value.upper() == "ON":
                out.add(name.split(":")[0])
    return out


def fixes_for(
    cmake_flags: Iterable[str], fixes: Iterable[SourceFix] = FIXES
) -> dict[str, SourceFix]:
    """Fixes whose code these flags compile, by path."""
    on = switches_on(cmake_flags)
    return {f.path: f for f in fixes if set(f.needs) <= on}


def apply_fix(fix: SourceFix, text: str) -> str | None:
    """The fixed text, or None when this file does not carry the defect."""
    if fix.marker not in text or text.count(fix.find) != 1:
        return None
    return text.replace(fix.find, fix.replace)


@dataclass(frozen=True)
class FixedFile:
    fix: SourceFix
    data: bytes  # the whole fixed file


def fix_tree(tree: Path, cmake_flags: Iterable[str]) -> dict[str, FixedFile]:
    """Fixed contents, by path in `tree`, of the known defects it has that these flags compile."""
    fixed = {}
    for rel, fix in fixes_for(cmake_flags).items():
        path = tree / rel
        if not path.is_file():
            continue
        text = apply_fix(fix, path.read_bytes().decode("utf-8", errors="surrogateescape"))
        if text is not None:
            fixed[rel] = FixedFile(fix, text.encode("utf-8", errors="surrogateescape"))
    return fixed
