"""CPU family/model -> microarchitecture name, from vendor documentation and Linux's tables,
checked against the instruction sets the CPU offers.

Sources: AMD's Processor Programming References (family 17h/19h/1Ah model ranges) and
Linux `arch/x86/include/asm/intel-family.h`; AMD model ranges follow `arch/x86/kernel/cpu/amd.c`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

AMD, INTEL = "AuthenticAMD", "GenuineIntel"

# (family, first model, last model, name); AMD families are decimal (0x17=23, 0x19=25, 0x1A=26).
# The first matching row wins, so narrow rows come before the ranges they sit in.
_AMD_RANGES: tuple[tuple[int, int, int, str], ...] = (
    (0x17, 0x08, 0x08, "Zen+"),
    (0x17, 0x18, 0x18, "Zen+"),
    (0x17, 0x00, 0x2F, "Zen"),
    (0x17, 0x30, 0xFF, "Zen 2"),
    (0x19, 0x00, 0x0F, "Zen 3"),
    (0x19, 0x10, 0x1F, "Zen 4"),
    (0x19, 0x20, 0x5F, "Zen 3"),
    (0x19, 0x60, 0xAF, "Zen 4"),
    (0x1A, 0x00, 0x4F, "Zen 5"),
    (0x1A, 0x50, 0x5F, "Zen 6"),
    (0x1A, 0x60, 0xFF, "Zen 5"),
)

# Intel family 6 models (intel-family.h). Skylake-SP's model 0x55 is split by stepping below.
_INTEL_MODELS: dict[int, str] = {
    0x4E: "Skylake",
    0x5E: "Skylake",
    0x8E: "Kaby Lake",
    0x9E: "Coffee Lake",
    0xA5: "Comet Lake",
    0xA6: "Comet Lake",
    0x66: "Cannon Lake",
    0x7D: "Ice Lake",
    0x7E: "Ice Lake",
    0x6A: "Ice Lake-SP",
    0x6C: "Ice Lake-SP",
    0x8C: "Tiger Lake",
    0x8D: "Tiger Lake",
    0xA7: "Rocket Lake",
    0x97: "Alder Lake",
    0x9A: "Alder Lake",
    0xBE: "Alder Lake-N",
    0xB7: "Raptor Lake",
    0xBA: "Raptor Lake",
    0xBF: "Raptor Lake",
    0xAA: "Meteor Lake",
    0xAC: "Meteor Lake",
    0xC5: "Arrow Lake",
    0xC6: "Arrow Lake",
    0xB5: "Arrow Lake",
    0xBD: "Lunar Lake",
    0xCC: "Panther Lake",
    0x8F: "Sapphire Rapids",
    0xCF: "Emerald Rapids",
    0xAD: "Granite Rapids",
    0xAE: "Granite Rapids",
    0xAF: "Sierra Forest",
    0xDD: "Clearwater Forest",
    0x3F: "Haswell",
    0x3C: "Haswell",
    0x4F: "Broadwell",
    0x56: "Broadwell",
}

# Server parts with an AMD codename; useful in doctor's text.
_AMD_CODENAMES: dict[tuple[int, int], str] = {
    (0x17, 0x31): "Rome",
    (0x19, 0x01): "Milan",
    (0x19, 0x11): "Genoa",
    (0x19, 0x21): "Vermeer",
    (0x19, 0x61): "Raphael",
    (0x19, 0xA0): "Bergamo",
    (0x1A, 0x02): "Turin",
    (0x1A, 0x11): "Turin Dense",
    (0x1A, 0x44): "Granite Ridge",
    (0x1A, 0x24): "Strix Point",
}


@dataclass(frozen=True)
class IsaEra:
    """Instruction sets that date a CPU: one with all of `flags` is one of `could_be` or newer.

    A virtual machine may report an older CPU model than its host's (a hypervisor's CPU model),
    but it cannot offer instructions the host lacks; so a reported model outside `kin` (the
    microarchitectures that have these flags) is named `name` instead.
    """

    vendor: str
    flags: tuple[str, ...]
    name: str
    could_be: frozenset[str]  # what a CPU named `name` is: for judging it by their evidence
    kin: frozenset[str]


_SPR = frozenset({"Sapphire Rapids", "Emerald Rapids"})
_ZEN5 = frozenset({"Zen 5", "Zen 6"})
ERAS: tuple[IsaEra, ...] = (  # newest first in each vendor's line
    IsaEra(INTEL, ("amx_fp16",), "Granite Rapids", frozenset({"Granite Rapids"}),
           frozenset({"Granite Rapids"})),
    IsaEra(INTEL, ("amx_tile",), "Sapphire/Emerald Rapids", _SPR, _SPR | {"Granite Rapids"}),
    IsaEra(AMD, ("avx512_vp2intersect",), "Zen 5", frozenset({"Zen 5"}), _ZEN5),
    IsaEra(AMD, ("avx512f",), "Zen 4", frozenset({"Zen 4"}), _ZEN5 | {"Zen 4"}),
)  # fmt: skip


def microarchitecture(
    vendor: str, family: int, model: int, stepping: int, flags: Iterable[str] | None = None
) -> str:
    """Name the microarchitecture, or "unknown (family F model M)". With the CPU's `flags`, a
    known model that its instruction sets contradict is named by them (see IsaEra)."""
    reported = _reported(vendor, family, model, stepping)
    have = set(flags or ())
    for era in ERAS:
        if era.vendor == vendor and have.issuperset(era.flags):
            known = not reported.startswith("unknown")
            return era.name if known and reported not in era.kin else reported
    return reported


def era(name: str) -> IsaEra | None:
    """The era a dated name stands for, or None for a reported model's name."""
    return next((e for e in ERAS if e.name == name), None)


def could_be(name: str) -> frozenset[str]:
    """The microarchitectures a CPU of this name is: itself, or those an era name stands for."""
    dated = era(name)
    return (dated.could_be if dated else frozenset()) | {name}


def same_kind(a: str, b: str) -> bool:
    """Two names for CPUs that may be the same microarchitecture (a dated name and its members)."""
    return bool(could_be(a) & could_be(b))


def _reported(vendor: str, family: int, model: int, stepping: int) -> str:
    if vendor == "AuthenticAMD":
        for fam, lo, hi, label in _AMD_RANGES:
            if fam == family and lo <= model <= hi:
                return label
    elif vendor == "GenuineIntel" and family == 6:
        if model == 0x55:
            if stepping >= 10:
                return "Cooper Lake"
            return "Cascade Lake" if stepping >= 5 else "Skylake-SP"
        if model in _INTEL_MODELS:
            return _INTEL_MODELS[model]
    return f"unknown (family {family} model {model:#x})"


def codename(vendor: str, family: int, model: int) -> str | None:
    """AMD codename where one is well known (e.g. Genoa), else None."""
    if vendor != "AuthenticAMD":
        return None
    return _AMD_CODENAMES.get((family, model))
