"""Shapes for raw values that may come from another machine (a snapshot): hostnames, echoing."""

from __future__ import annotations

import re

from llmhost.errors import LlmhostError

HOSTNAME_FILE = "/proc/sys/kernel/hostname"
# Linux's HOST_NAME_MAX is 64; labels are letters, digits, - and _ (systemd's rule), never
# starting with - or ., so a hostname is always a safe file name and template value.
HOSTNAME = re.compile(r"(?=.{1,64}\Z)[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_-]*)*")


def shown(text: str, limit: int = 80) -> str:
    """`text` safe to echo in one line: control characters replaced, length capped."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


def is_hostname(text: str) -> bool:
    return HOSTNAME.fullmatch(text) is not None


def check_hostname(text: str, origin: str) -> str:
    """`text` when it is a plain hostname; refused in one line naming `origin` otherwise."""
    if not is_hostname(text):
        raise LlmhostError(
            f"{origin} holds {shown(text)!r}: not a hostname "
            "(1-64 letters, digits, - and _ in dot-separated labels)"
        )
    return text
