"""Where llmhost keeps this host's state: rendered deployments, saved results, local evidence."""

from __future__ import annotations

import os
from pathlib import Path

STATE_ENV = "LLMHOST_STATE_DIR"


def state_dir() -> Path:
    """$LLMHOST_STATE_DIR, /var/lib/llmhost as root, else ~/.local/state/llmhost."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV])
    if os.geteuid() == 0:
        return Path("/var/lib/llmhost")
    return Path.home() / ".local" / "state" / "llmhost"
