import pytest

from llmhost.facts.uarch import codename, microarchitecture, same_kind

AMD, INTEL = "AuthenticAMD", "GenuineIntel"


@pytest.mark.parametrize(
    ("vendor", "family", "model", "stepping", "name"),
    [
        (AMD, 23, 0x01, 1, "Zen"),
        (AMD, 23, 0x08, 2, "Zen+"),
        (AMD, 23, 0x31, 0, "Zen 2"),  # Rome
        (AMD, 23, 0x71, 0, "Zen 2"),  # Matisse
        (AMD, 25, 0x01, 1, "Zen 3"),  # Milan
        (AMD, 25, 0x21, 0, "Zen 3"),  # Vermeer
        (AMD, 25, 0x11, 1, "Zen 4"),  # Genoa (this CI machine)
        (AMD, 25, 0x61, 2, "Zen 4"),  # Raphael
        (AMD, 25, 0xA0, 1, "Zen 4"),  # Bergamo
        (AMD, 26, 0x44, 0, "Zen 5"),  # Granite Ridge: Ryzen 9 9950X
        (AMD, 26, 0x02, 1, "Zen 5"),  # Turin
        (INTEL, 6, 0x55, 4, "Skylake-SP"),
        (INTEL, 6, 0x55, 7, "Cascade Lake"),
        (INTEL, 6, 0x55, 11, "Cooper Lake"),
        (INTEL, 6, 0x6A, 6, "Ice Lake-SP"),
        (INTEL, 6, 0x8F, 8, "Sapphire Rapids"),
        (INTEL, 6, 0xCF, 2, "Emerald Rapids"),  # the H100 device machine
        (INTEL, 6, 0xAD, 1, "Granite Rapids"),
        (INTEL, 6, 0x97, 2, "Alder Lake"),
        (INTEL, 6, 0xB7, 1, "Raptor Lake"),
        (INTEL, 6, 0xBA, 2, "Raptor Lake"),
        (INTEL, 6, 0x01, 0, "unknown (family 6 model 0x1)"),
        ("HygonGenuine", 24, 0, 0, "unknown (family 24 model 0x0)"),
    ],
)
def test_microarchitecture(vendor, family, model, stepping, name):
    assert microarchitecture(vendor, family, model, stepping) == name


def test_codename():
    assert codename(AMD, 25, 0x11) == "Genoa"
    assert codename(AMD, 26, 0x44) == "Granite Ridge"
    assert codename(INTEL, 6, 0x8F) is None


SPR_FLAGS = ("avx512f", "avx512_vnni", "amx_tile", "amx_int8")


@pytest.mark.parametrize(
    ("vendor", "family", "model", "flags", "name"),
    [
        (INTEL, 6, 0xA7, SPR_FLAGS, "Sapphire/Emerald Rapids"),  # a VM's Rocket Lake model
        (INTEL, 6, 0xA7, ("avx512f",), "Rocket Lake"),  # what Rocket Lake has
        (INTEL, 6, 0xCF, SPR_FLAGS, "Emerald Rapids"),  # the model agrees with its flags
        (INTEL, 6, 0x8F, SPR_FLAGS, "Sapphire Rapids"),
        (INTEL, 6, 0xAD, SPR_FLAGS, "Granite Rapids"),  # a newer model with the same AMX
        (INTEL, 6, 0x8F, (*SPR_FLAGS, "amx_fp16"), "Granite Rapids"),
        (INTEL, 6, 0x01, SPR_FLAGS, "unknown (family 6 model 0x1)"),  # unknown stays unknown
        (AMD, 25, 0x01, ("avx512f",), "Zen 4"),  # a Milan model with AVX-512
        (AMD, 25, 0x11, ("avx512f", "avx512_vp2intersect"), "Zen 5"),
        (AMD, 26, 0x44, ("avx512f", "avx512_vp2intersect"), "Zen 5"),
        (AMD, 25, 0x01, ("avx2",), "Zen 3"),
    ],
)
def test_a_model_its_instruction_sets_contradict_is_named_by_them(
    vendor, family, model, flags, name
):
    assert microarchitecture(vendor, family, model, 1, flags) == name


def test_a_dated_name_is_the_same_kind_as_the_microarchitectures_it_stands_for():
    assert same_kind("Sapphire/Emerald Rapids", "Emerald Rapids")
    assert same_kind("Sapphire Rapids", "Sapphire/Emerald Rapids")
    assert same_kind("Zen 4", "Zen 4")
    assert not same_kind("Sapphire Rapids", "Emerald Rapids")
    assert not same_kind("Sapphire/Emerald Rapids", "Granite Rapids")
