"""Model facts kept between runs under ~/.cache/llmhost/model-facts, so every `llmhost plan` or
`doctor` does not walk a large vocabulary again. An entry names the file's identity (path, size,
mtime, ctime, inode): any rewrite, rename over or touch misses it. Every failure is a miss."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmhost.cache import cache_dir

REVISION = 1  # bump when what is stored for the same file changes
MAX_ENTRIES = 64  # older entries are removed when a new one is written
MAX_ENTRY_BYTES = 1 << 16

Facts = dict[str, int | str]


def facts_dir() -> Path:
    return cache_dir() / "model-facts"


def _identity(path: Path) -> list[Any]:
    st = path.stat()
    return [REVISION, str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _entry(identity: list[Any]) -> Path:
    """One entry per inode: a file rewritten in place replaces its own entry."""
    return facts_dir() / f"{identity[-1]:x}-{identity[-2]:x}.json"


def load(path: Path, fields: frozenset[str]) -> Facts | None:
    """The facts stored for this very file, if every one of `fields` is there as int or str."""
    try:
        identity = _identity(path)
        with _entry(identity).open("rb") as fh:
            data = json.loads(fh.read(MAX_ENTRY_BYTES))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("identity") != identity:
        return None
    facts = data.get("facts")
    if not isinstance(facts, dict) or set(facts) != fields:
        return None
    if not all(isinstance(v, int | str) and not isinstance(v, bool) for v in facts.values()):
        return None
    return facts


def store(path: Path, facts: Facts) -> None:
    """Write atomically; a cache that cannot be written is skipped silently."""
    try:
        identity = _identity(path)
        entry = _entry(identity)
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"identity": identity, "facts": facts}))
        os.replace(tmp, entry)
        entries = sorted(entry.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        pass
