"""CPU family/model -> microarchitecture name, from vendor documentation and Linux's tables.

Sources: AMD's Processor Programming References (family 17h/19h/1Ah model ranges) and
Linux `arch/x86/include/asm/intel-family.h`; AMD model ranges follow `arch/x86/kernel/cpu/amd.c`.
"""

from __future__ import annotations

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


def microarchitecture(vendor: str, family: int, model: int, stepping: int) -> str:
    """Name the microarchitecture, or "unknown (family F model M)"."""
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
