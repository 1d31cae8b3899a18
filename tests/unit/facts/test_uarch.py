import pytest

from llmhost.facts.uarch import codename, microarchitecture

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
