"""Parsing of the kernel command line, shared with the cpu_isolation Ansible module.

The module runs under the target's system python before llmhost is installed there, so it
loads this file as module_utils (roles/cpu_isolation/module_utils/llmhost_kernel_cmdline.py is
a link to it). Keep it standard-library only.
"""

from __future__ import annotations


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """Kernel parameters before any "--" (init's arguments); the last occurrence wins."""
    params: dict[str, str] = {}
    for token in cmdline.split():
        if token == "--":
            break
        key, _, value = token.partition("=")
        params[key] = value
    return params
