"""The x86 instruction sets llama.cpp's CPU kernels use: one table, from which the CPU facts, the
plan's CMake switches, the image checks and the self-test's leave-out all read.

A row names a feature as llmhost labels it (the lower-case GGML switch: `avx512_vnni`), the
/proc/cpuinfo flags it needs, its CMake switch, the feature it builds on (its kernels need that
one: AMX's need AVX-512 VNNI), and the group a plan can leave out after its kernels crashed.
"""

from __future__ import annotations

from dataclasses import dataclass

# GGML_AVX512 compiles F+CD+VL+DQ+BW together; its extensions need all of them.
AVX512_BASE = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")


@dataclass(frozen=True)
class IsaFeature:
    name: str  # as llmhost labels it: the GGML switch, lower case, without GGML_
    cpuinfo: tuple[str, ...]  # /proc/cpuinfo flags it needs
    builds_on: str | None = None  # the feature whose kernels it extends
    leave_out: str | None = None  # the group a plan leaves out when its kernels crash

    @property
    def switch(self) -> str:
        return f"GGML_{self.name.upper()}"


FEATURES: tuple[IsaFeature, ...] = (
    IsaFeature("avx", ("avx",)),
    IsaFeature("avx2", ("avx2",)),
    IsaFeature("fma", ("fma",)),
    IsaFeature("f16c", ("f16c",)),
    IsaFeature("bmi2", ("bmi2",)),
    IsaFeature("avx_vnni", ("avx_vnni",), leave_out="avx_vnni"),
    IsaFeature("avx512", AVX512_BASE, leave_out="avx512"),
    IsaFeature("avx512_vbmi", ("avx512_vbmi",), "avx512", "avx512_vbmi"),
    IsaFeature("avx512_vnni", ("avx512_vnni",), "avx512", "avx512_vnni"),
    IsaFeature("avx512_bf16", ("avx512_bf16",), "avx512", "avx512_bf16"),
    IsaFeature("amx_tile", ("amx_tile",), "avx512_vnni", "amx"),
    IsaFeature("amx_int8", ("amx_int8",), "avx512_vnni", "amx"),
    IsaFeature("amx_bf16", ("amx_bf16",), "avx512_vnni", "amx"),
)
BY_NAME = {f.name: f for f in FEATURES}
# Flags the facts record: the table's, and the SSE levels every x86-64 llama.cpp build assumes.
CPUINFO_FLAGS: tuple[str, ...] = (
    "sse3",
    "ssse3",
    *dict.fromkeys(flag for f in FEATURES for flag in f.cpuinfo),
)
# Feature name -> the cpuinfo flags it needs, for image labels (SSE levels included).
REQUIRES: dict[str, tuple[str, ...]] = {
    "sse3": ("sse3",),
    "ssse3": ("ssse3",),
    **{f.name: f.cpuinfo for f in FEATURES},
}


def _builds_on(feature: IsaFeature, base: str) -> bool:
    while feature.builds_on is not None:
        if feature.builds_on == base:
            return True
        feature = BY_NAME[feature.builds_on]
    return False


def switches_off(group: str) -> tuple[str, ...]:
    """The CMake switches leaving `group` out turns off: its features and every feature that
    builds on one of them (leaving AVX-512 out leaves its extensions and AMX out too)."""
    members = {f.name for f in FEATURES if f.leave_out == group}
    return tuple(
        f.switch
        for f in FEATURES
        if f.name in members or any(_builds_on(f, m) for m in members)
    )


# What a plan can leave out (the self-test's verdicts, a refused image's label) -> its switches.
LEAVE_OUT_GROUPS: dict[str, tuple[str, ...]] = {
    g: switches_off(g) for g in dict.fromkeys(f.leave_out for f in FEATURES if f.leave_out)
}


def enabled(flags: frozenset[str] | set[str], leave_out: tuple[str, ...] = ()) -> list[str]:
    """The features a CPU with these cpuinfo `flags` gets, in table order, less `leave_out`'s
    groups: each needs its flags and the feature it builds on."""
    off = {s for group in leave_out for s in LEAVE_OUT_GROUPS.get(group, ())}
    on: list[str] = []
    for f in FEATURES:
        if all(flag in flags for flag in f.cpuinfo) and f.switch not in off and (
            f.builds_on is None or f.builds_on in on
        ):
            on.append(f.name)
    return on
