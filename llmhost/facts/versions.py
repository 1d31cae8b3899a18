"""Version parsing and ordering for the security floors (llmhost/verify/floors.py).

Versions come from upstream tags (`1.17.8`, `1.4.0-rc.3`, `0.32.0rc1`, `v0.33.0`) and from
distribution packages that keep an old upstream number and backport fixes (`1.1.5+ds1-1+deb12u1`,
`20.10.24+dfsg1`, `1.6.20~ds1-1+deb12u3`). Ordering follows dpkg, so both kinds compare alike;
an upstream version's PEP 440 / SemVer markers are first rewritten so that dpkg orders them as
PEP 440 does: dev < alpha < beta < rc < release < post. A tag that is no version (`latest`, a
commit) is told apart by `version_problem`, so that it never passes a floor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cmp_to_key


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (with ~ before everything) and numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = (a[i] > b[j]) - (a[i] < b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


_DEBIAN_REVISION = re.compile(r"-(\d[A-Za-z0-9.+~]*)$")
_REPACK = re.compile(r"[+~](?:ds|dfsg)\d*")
# A PEP 440 / SemVer marker right after a number: `rc1`, `-rc.2`, `.dev5`, `a1`, `.post1`.
_MARKER = re.compile(
    r"(?<=\d)[-_.]?(?P<kind>alpha|beta|preview|pre|rc|c|a|b|dev|post|rev|r)[-_.]?(?P<n>\d*)"
    r"(?=$|[-_.+~])",
    re.IGNORECASE,
)
_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "rc": "rc"}
_PRE |= {"pre": "rc", "preview": "rc"}


@dataclass(frozen=True)
class PackageVersion:
    """`1:1.6.20~ds1-1+deb12u3` -> epoch 1, package "1.6.20~ds1", revision "1+deb12u3",
    upstream "1.6.20"; a plain `1.4.0-rc.3` is all upstream (its `-rc.3` is no revision)."""

    text: str
    epoch: int
    package: str
    revision: str | None
    upstream: str

    @property
    def is_distribution(self) -> bool:
        return self.revision is not None or self.package != self.upstream


def parse_version(text: str) -> PackageVersion:
    raw = text.strip()
    version = raw[1:] if raw[:1] in ("v", "V") and raw[1:2].isdigit() else raw
    epoch = 0
    if re.match(r"^\d+:", version):
        head, _, version = version.partition(":")
        epoch = int(head)
    revision = None
    match = _DEBIAN_REVISION.search(version)
    if match:
        revision, version = match.group(1), version[: match.start()]
    upstream = _REPACK.sub("", version)
    return PackageVersion(raw, epoch, version, revision, upstream)


def _marker(match: re.Match[str]) -> str:
    kind, number = match["kind"].lower(), match["n"] or "0"
    if kind == "dev":
        return f"~~dev{number}"  # before any pre-release of the same version
    if kind in _PRE:
        return f"~{_PRE[kind]}{number}"
    return f"+post{number}"  # after the release, before the next one (`1.0.1`)


def normalize_upstream(version: str) -> str:
    """`0.32.0rc1` -> `0.32.0~rc1`, `1.4.0-rc.2` -> `1.4.0~rc2`, `1.0.dev5` -> `1.0~~dev5`,
    `1.0.post1` -> `1.0+post1`: the dpkg spelling of PEP 440's order."""
    return _MARKER.sub(_marker, version)


def compare_versions(a: str, b: str) -> int:
    """-1, 0, 1 like dpkg --compare-versions; upstream pre-, dev and post releases in PEP 440
    order. A Debian version (with a revision) keeps dpkg's own reading of its upstream part."""
    va, vb = parse_version(a), parse_version(b)
    if va.epoch != vb.epoch:
        return -1 if va.epoch < vb.epoch else 1
    pa = va.package if va.revision is not None else normalize_upstream(va.package)
    pb = vb.package if vb.revision is not None else normalize_upstream(vb.package)
    result = _compare_part(pa, pb)
    if result:
        return result
    return _compare_part(va.revision or "0", vb.revision or "0")


version_key = cmp_to_key(compare_versions)

MOVING_TAGS = frozenset(
    {"latest", "nightly", "main", "master", "head", "dev", "edge", "stable", "testing", "trunk"}
)
_VERSION = re.compile(r"[vV]?(?:\d+:)?\d+\.\d+[0-9A-Za-z.+~_-]*")
_COMMIT = re.compile(r"[0-9a-f]{7,40}")


def tag_kind(text: object) -> str | None:
    """"empty", "a moving tag" (`latest`, `main`) or "a commit" when `text` names no release."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    value = text.strip().lower()
    if value in MOVING_TAGS:
        return "a moving tag"
    if _COMMIT.fullmatch(value) and not value.isdigit():
        return "a commit"
    return None


def tag_problem(text: object) -> str | None:
    """Why `text` names no release at all. Such a tag can be anything tomorrow, so no advisory's
    "fixed in" can be compared with it: it must be refused, never read as newer than every fix."""
    kind = tag_kind(text)
    if kind is None:
        return None
    shown = text.strip() if isinstance(text, str) else text
    return f"{shown!r} is {kind}, not a version"


def version_problem(text: object) -> str | None:
    """Why `text` is no version a floor can be checked against (None when it is one)."""
    problem = tag_problem(text)
    if problem is None and not _VERSION.fullmatch(str(text).strip()):
        return f"{str(text).strip()!r} is not a version (a release like 1.2.3 is needed)"
    return problem
