"""llmhost's cache: downloads, self-test verdicts and model facts; memos, never host state."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$LLMHOST_CACHE, else ~/.cache/llmhost (an empty variable counts as unset)."""
    return Path(os.environ.get("LLMHOST_CACHE") or Path.home() / ".cache" / "llmhost")
