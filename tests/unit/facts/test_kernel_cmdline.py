"""The kernel command-line parser shared by llmhost's facts and the cpu_isolation module."""


import pytest

from llmhost.facts.kernel_cmdline import parse_cmdline
from tests.support import REPO


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("BOOT_IMAGE=/vmlinuz root=LABEL=root ro quiet",
     {"BOOT_IMAGE": "/vmlinuz", "root": "LABEL=root", "ro": "", "quiet": ""}),
    ("isolcpus=1 isolcpus=managed_irq,domain,2-3", {"isolcpus": "managed_irq,domain,2-3"}),
    ("nohz_full=1 -- isolcpus=9 single", {"nohz_full": "1"}),
    ("", {}),
])  # fmt: skip
def test_parse_cmdline(cmdline: str, expected: dict[str, str]) -> None:
    assert parse_cmdline(cmdline) == expected


def test_cpu_isolation_module_loads_this_very_file() -> None:
    """The role's module_utils entry is a link to llmhost's parser, not a copy that can drift."""
    link = REPO / "roles/cpu_isolation/module_utils/llmhost_kernel_cmdline.py"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "llmhost/facts/kernel_cmdline.py").resolve()
    module = (REPO / "roles/cpu_isolation/library/llmhost_grub_dropin.py").read_text()
    assert "from ansible.module_utils.llmhost_kernel_cmdline import parse_cmdline" in module
    assert "def parse_cmdline" not in module
