"""What a snapshot tarball may hold: it can come from anyone, so it is read as untrusted input.

Regular files only, relative names without `..`, each file and the whole archive bounded in
size before anything is decompressed past the limit, and a manifest of a known shape.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import tarfile
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from llmhost.errors import LlmhostError
from llmhost.untrusted import is_hostname, shown

SNAPSHOT_FORMAT = 1
MANIFEST = "llmhost-snapshot.json"
# A 8192-CPU host's /proc/cpuinfo is ~12 MiB; a whole snapshot of one stays well under the total.
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_TOTAL_BYTES = 128 * 1024 * 1024  # the uncompressed tar stream, headers included

# Manifest keys and the JSON type each must have; what `redacted` may list.
REQUIRED_KEYS: dict[str, type] = {"format": int, "created": str, "listings": dict, "commands": dict}
OPTIONAL_KEYS: dict[str, type] = {
    "hostname": str,
    "llmhost_version": str,
    "machine": str,
    "models": dict,  # configured model path -> {"kind", "facts", "error"} (llmhost.facts.models)
    "note": str,
    "redacted": list,
}
REDACTABLE = ("hostname",)
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}
_MIB = 1024 * 1024


class _TooLarge(Exception):
    """Raised by `_Bounded` once the uncompressed stream passes MAX_TOTAL_BYTES."""


class _Bounded:
    """A read-only stream that refuses to hand out more than `limit` bytes in total."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner, self.limit, self.used = inner, limit, 0

    def read(self, size: int | None = -1) -> bytes:
        room = self.limit - self.used + 1
        data = self.inner.read(room if size is None or size < 0 else min(size, room))
        self.used += len(data)
        if self.used > self.limit:
            raise _TooLarge
        return data


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def read_snapshot(
    path: Path, known_commands: Collection[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The checked manifest and the files (member name -> text) of the snapshot at `path`."""
    try:
        with path.open("rb") as raw:
            stream = _Bounded(_decompressed(raw), MAX_TOTAL_BYTES)
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                files = _members(path, tar)
    except _TooLarge:
        raise LlmhostError(
            f"snapshot {path} unpacks to more than {MAX_TOTAL_BYTES // _MIB} MiB: "
            "refused (a snapshot is a few MiB at most)"
        ) from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise LlmhostError(
            f"snapshot {path} is not a readable tar.gz ({shown(str(exc))})"
        ) from None
    if MANIFEST not in files:
        raise LlmhostError(f"snapshot {path} has no {MANIFEST}: not an llmhost snapshot")
    try:
        manifest = json.loads(files.pop(MANIFEST))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or absurd nesting and numbers
        raise LlmhostError(f"snapshot {path} has a corrupt manifest ({shown(str(exc))})") from None
    check_manifest(manifest, f"snapshot {path}", known_commands)
    return manifest, files


def _members(path: Path, tar: tarfile.TarFile) -> dict[str, str]:
    files: dict[str, str] = {}
    for member in tar:
        where = f"snapshot {path}: member {shown(member.name)!r}"
        _check_name(member.name, where)
        if member.isdir():
            continue
        if not member.isfile():
            raise LlmhostError(f"{where} is {_kind(member)}: a snapshot holds regular files only")
        if member.size > MAX_MEMBER_BYTES:
            raise LlmhostError(
                f"{where} is {member.size // _MIB} MiB, above the "
                f"{MAX_MEMBER_BYTES // _MIB} MiB one snapshot file may hold"
            )
        data = tar.extractfile(member)
        files[member.name] = data.read().decode(errors="replace") if data else ""
    return files


def _check_name(name: str, where: str) -> None:
    if not name or name.startswith("/"):
        raise LlmhostError(f"{where} has an absolute or empty name: refused")
    if ".." in name.split("/"):
        raise LlmhostError(f"{where} climbs out with '..': refused")
    if not name.isprintable():
        raise LlmhostError(f"{where} has control characters in its name: refused")


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {shown(member.linkname)!r})"
    if member.islnk():
        return f"a hard link (to {shown(member.linkname)!r})"
    if member.isdev():
        return "a device or FIFO"
    return "not a regular file"


def check_manifest(data: Any, origin: str, known_commands: Collection[str]) -> None:
    """Refuse, in one line naming the key, a manifest that is not the shape this llmhost writes."""
    where = f"{origin}: manifest {MANIFEST}"
    if not isinstance(data, dict):
        raise LlmhostError(f"{where} is not a JSON object")
    missing = sorted(set(REQUIRED_KEYS) - set(data))
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if missing or unknown:
        parts = [f"lacks {', '.join(missing)}"] if missing else []
        parts += [f"has unknown key(s) {', '.join(shown(k) for k in unknown)}"] if unknown else []
        raise LlmhostError(f"{where} {'; '.join(parts)}")
    for key, value in data.items():
        wanted = {**REQUIRED_KEYS, **OPTIONAL_KEYS}[key]
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise LlmhostError(
                f"{where}: {key} must be {_TYPE_NAMES[wanted]} (got {type(value).__name__})"
            )
    if data["format"] != SNAPSHOT_FORMAT:
        raise LlmhostError(
            f"{where} is format {data['format']}; this llmhost reads format {SNAPSHOT_FORMAT} "
            "(record it again with this llmhost's `llmhost snapshot`)"
        )
    _check_listings(data["listings"], where)
    _check_commands(data["commands"], where, known_commands)
    _check_models(data.get("models", {}), where)
    if "hostname" in data and not is_hostname(data["hostname"]):
        raise LlmhostError(f"{where}: hostname {shown(data['hostname'])!r} is not a hostname")
    for item in data.get("redacted", []):
        if item not in REDACTABLE:
            raise LlmhostError(
                f"{where}: redacted lists {shown(str(item))!r}, not one of {REDACTABLE}"
            )


def _check_listings(listings: dict[str, Any], where: str) -> None:
    for path, names in listings.items():
        if names is None:
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise LlmhostError(
                f"{where}: listings[{shown(path)!r}] must be a list of names or null"
            )


def _check_commands(commands: dict[str, Any], where: str, known: Collection[str]) -> None:
    for key, meta in commands.items():
        if key not in known:
            raise LlmhostError(f"{where}: commands has unknown key {shown(key)!r}")
        error = meta.get("error") if isinstance(meta, dict) else ...
        if (
            not isinstance(meta, dict)
            or set(meta) != {"error"}
            or not isinstance(error, str | None)
        ):
            raise LlmhostError(f'{where}: commands[{key!r}] must be {{"error": string or null}}')


def _check_models(models: dict[str, Any], where: str) -> None:
    """The shape only; each model's fields are checked where they become facts."""
    for path, entry in models.items():
        if not path.startswith("/") or len(path) > 4096 or not path.isprintable():
            raise LlmhostError(f"{where}: models has a key that is not an absolute path")
        if (
            not isinstance(entry, dict)
            or set(entry) != {"kind", "facts", "error"}
            or not isinstance(entry["kind"], str)
            or not isinstance(entry["facts"], dict | None)
            or not isinstance(entry["error"], str | None)
            or (entry["facts"] is None) == (entry["error"] is None)
        ):
            raise LlmhostError(
                f'{where}: models[{shown(path)!r}] must be {{"kind": string, "facts": object or '
                'null, "error": string or null}, one of facts and error set'
            )
