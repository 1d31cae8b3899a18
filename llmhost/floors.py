"""Security floors (llmhost/data/floors.toml) and the version comparisons that judge against them.

Versions come from upstream tags (`1.17.8`, `1.4.0-rc.3`, `v0.33.0`, llama.cpp `b10864`) and from
distribution packages that keep an old upstream number and backport fixes (`1.1.5+ds1-1+deb12u1`,
`20.10.24+dfsg1`, `1.6.20~ds1-1+deb12u3`). Ordering follows dpkg, so both kinds compare alike.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, cmp_to_key
from pathlib import Path

from llmhost.errors import LlmhostError

FLOORS_PATH = Path(__file__).parent / "data" / "floors.toml"


# ---------------------------------------------------------------- the data file


@dataclass(frozen=True)
class DistroFix:
    """What one distribution release shipped for an advisory under an older version number."""

    package: str  # the version as the engine reports it, e.g. "1.1.5+ds1"
    release: str
    fixed_in: str  # first package revision with the fix; "" = none as of newest_checked
    newest_checked: str
    source: str


@dataclass(frozen=True)
class Advisory:
    ids: tuple[str, ...]
    fixed: tuple[str, ...]
    summary: str
    source: str
    scope: str | None = None
    inferred: bool = False
    judged_by: str | None = None
    distro: tuple[DistroFix, ...] = ()

    @property
    def name(self) -> str:
        """The CVE ids (the GHSA aliases only when there is no CVE): "CVE-2025-31133/52565"."""
        cves = [i for i in self.ids if i.startswith("CVE-")] or list(self.ids[:1])
        return ", ".join(cves)


@dataclass(frozen=True)
class Component:
    name: str
    title: str
    scheme: str  # "semver" | "build"
    floor: tuple[str, ...]
    reads: str
    fix: str
    pin: str | None
    advisories: tuple[Advisory, ...]

    def applicable(self, scopes: frozenset[str] = frozenset()) -> tuple[Advisory, ...]:
        return tuple(a for a in self.advisories if a.scope is None or a.scope in scopes)

    def floor_for(self, scopes: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Per release line, the highest fix the applicable advisories demand."""
        return required_floor(self.applicable(scopes), self.scheme)


@dataclass(frozen=True)
class Floors:
    checked: str
    components: dict[str, Component]

    def __getitem__(self, name: str) -> Component:
        return self.components[name]


def _advisory(raw: dict) -> Advisory:
    return Advisory(
        ids=tuple(raw["ids"]),
        fixed=tuple(raw["fixed"]),
        summary=raw["summary"],
        source=raw["source"],
        scope=raw.get("scope"),
        inferred=bool(raw.get("inferred", False)),
        judged_by=raw.get("judged_by"),
        distro=tuple(DistroFix(**d) for d in raw.get("distro", ())),
    )


@cache
def load_floors(path: Path = FLOORS_PATH) -> Floors:
    """Parse floors.toml once per process (doctor reads it on every run; it is tiny)."""
    data = tomllib.loads(path.read_text())
    components = {
        name: Component(
            name=name,
            title=raw["title"],
            scheme=raw["scheme"],
            floor=tuple(raw["floor"]),
            reads=raw["reads"],
            fix=raw["fix"],
            pin=raw.get("pin"),
            advisories=tuple(_advisory(a) for a in raw["advisories"]),
        )
        for name, raw in data["components"].items()
    }
    return Floors(checked=data["checked"], components=components)


# ---------------------------------------------------------------- comparing versions


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
_PRERELEASE = re.compile(r"-(?=(?:rc|alpha|beta|pre|dev)\.?\d*)", re.IGNORECASE)


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


def _normalize_upstream(version: str) -> str:
    """Upstream pre-releases sort before their release, as `~` does for dpkg."""
    return _PRERELEASE.sub("~", version)


def compare_versions(a: str, b: str) -> int:
    """-1, 0, 1 like dpkg --compare-versions, with upstream `-rc.N` read as `~rc.N`."""
    va, vb = parse_version(a), parse_version(b)
    if va.epoch != vb.epoch:
        return -1 if va.epoch < vb.epoch else 1
    pa = va.package if va.revision is not None else _normalize_upstream(va.package)
    pb = vb.package if vb.revision is not None else _normalize_upstream(vb.package)
    result = _compare_part(pa, pb)
    if result:
        return result
    return _compare_part(va.revision or "0", vb.revision or "0")


def llama_build_number(version: str | None) -> int | None:
    """`b10864` -> 10864; anything else (a local tree, a commit) carries no build number."""
    match = re.fullmatch(r"b(\d+)", (version or "").strip())
    return int(match.group(1)) if match else None


def _line(version: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", parse_version(version).upstream)
    return tuple(int(n) for n in numbers[:2])


def fixed_upstream(version: str, fixed: tuple[str, ...], scheme: str = "semver") -> bool | None:
    """Whether an upstream version carries the fix; None when it cannot be told (no build number).

    A version on a release line with a listed fix must be at least that fix; on any other line it
    must be newer than every listed fix (an older line, or one between, never got the fix)."""
    if scheme == "build":
        build = llama_build_number(version)
        if build is None:
            return None
        return all(build >= llama_build_number(f) for f in fixed)  # type: ignore[operator]
    upstream = parse_version(version).upstream
    same_line = [f for f in fixed if _line(f) == _line(upstream)]
    if same_line:
        return compare_versions(upstream, same_line[0]) >= 0
    return compare_versions(upstream, max(fixed, key=_KEY)) >= 0


_KEY = cmp_to_key(compare_versions)


def required_floor(advisories: tuple[Advisory, ...], scheme: str) -> tuple[str, ...]:
    """The lowest version passing every advisory, one per release line, oldest line first."""
    if scheme == "build":
        builds = [llama_build_number(f) for a in advisories for f in a.fixed]
        return (f"b{max(b for b in builds if b is not None)}",) if builds else ()
    newest_overall = max((f for a in advisories for f in a.fixed), key=_KEY, default=None)
    if newest_overall is None:
        return ()
    by_line: dict[tuple[int, ...], str] = {}
    for advisory in advisories:
        for fix in advisory.fixed:
            line = _line(fix)
            if line not in by_line or compare_versions(fix, by_line[line]) > 0:
                by_line[line] = fix
    # A line whose fix is older than another advisory's oldest-line demand is not safe at all.
    safe = [v for v in by_line.values() if all(fixed_upstream(v, a.fixed) for a in advisories)]
    return tuple(sorted(safe, key=_KEY))


# ---------------------------------------------------------------- verdicts


class State(StrEnum):
    OK = "ok"
    PATCHED = "patched by the distribution"
    VULNERABLE = "vulnerable"
    UNKNOWN = "unknown"


_SEVERITY = {State.OK: 0, State.PATCHED: 1, State.UNKNOWN: 2, State.VULNERABLE: 3}
_PHRASE = {
    State.VULNERABLE: "vulnerable to",
    State.UNKNOWN: "cannot be judged for",
    State.PATCHED: "patched by the distribution for",
}


@dataclass(frozen=True)
class AdvisoryVerdict:
    advisory: Advisory
    state: State
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    component: Component
    version: str
    results: tuple[AdvisoryVerdict, ...] = field(default_factory=tuple)

    @property
    def state(self) -> State:
        worst = max((r.state for r in self.results), key=_SEVERITY.__getitem__, default=State.OK)
        return worst

    def having(self, state: State) -> tuple[AdvisoryVerdict, ...]:
        return tuple(r for r in self.results if r.state is state)

    def describe(self) -> str:
        """One sentence: "runc 1.1.5+ds1: vulnerable to CVE-... (why)"; advisories sharing a
        reason are named together."""
        head = f"{self.component.title} {self.version}"
        parts = []
        for state in (State.VULNERABLE, State.UNKNOWN, State.PATCHED):
            groups: dict[str, list[str]] = {}
            for r in self.having(state):
                why = r.note or "fixed in " + " / ".join(r.advisory.fixed)
                groups.setdefault(why, []).append(r.advisory.name)
            if groups:
                named = "; ".join(f"{', '.join(names)} ({why})" for why, names in groups.items())
                parts.append(f"{_PHRASE[state]} {named}")
        if not parts:
            return f"{head} >= floor {' / '.join(self.component.floor)}"
        return f"{head}: " + "; ".join(parts)


def _distro_verdict(version: PackageVersion, advisory: Advisory) -> AdvisoryVerdict:
    entry = next((d for d in advisory.distro if d.package == version.package), None)
    full = f"{version.package}-{version.revision}" if version.revision else None
    if entry is None:
        return AdvisoryVerdict(
            advisory,
            State.UNKNOWN,
            f"distribution build of upstream {version.upstream}, which predates the fix; llmhost "
            "has no record of a backport: check the package changelog",
        )
    if entry.fixed_in:
        if full is None:
            return AdvisoryVerdict(
                advisory,
                State.UNKNOWN,
                f"{entry.release} fixed it in {entry.fixed_in}, and the engine does not report "
                "the package revision installed (dpkg-query -W shows it)",
            )
        if compare_versions(full, entry.fixed_in) >= 0:
            return AdvisoryVerdict(advisory, State.PATCHED, f"{entry.release} {entry.fixed_in}")
        return AdvisoryVerdict(
            advisory, State.VULNERABLE, f"{entry.release} fixed it in {entry.fixed_in}"
        )
    if full is not None and compare_versions(full, entry.newest_checked) > 0:
        return AdvisoryVerdict(
            advisory,
            State.UNKNOWN,
            f"newer than {entry.newest_checked}, the last {entry.release} revision llmhost checked",
        )
    return AdvisoryVerdict(
        advisory,
        State.VULNERABLE,
        f"{entry.release} carries no fix up to {entry.newest_checked}; upstream fixed it in "
        + " / ".join(advisory.fixed),
    )


def judge(component: Component, version: str, scopes: frozenset[str] = frozenset()) -> Verdict:
    """Each applicable advisory: fixed, patched by the distribution, vulnerable, or unknown."""
    parsed = parse_version(version)
    results = []
    for advisory in component.applicable(scopes):
        fixed = fixed_upstream(version, advisory.fixed, component.scheme)
        if fixed:
            results.append(AdvisoryVerdict(advisory, State.OK))
        elif fixed is None:
            results.append(
                AdvisoryVerdict(
                    advisory,
                    State.UNKNOWN,
                    f"no build number in {version!r}, so no proof it is at or above the floor "
                    + " / ".join(component.floor_for(scopes)),
                )
            )
        elif parsed.is_distribution:
            results.append(_distro_verdict(parsed, advisory))
        else:
            results.append(AdvisoryVerdict(advisory, State.VULNERABLE))
    return Verdict(component, version, tuple(results))


def check(name: str, version: str, scopes: frozenset[str] = frozenset()) -> Verdict:
    return judge(load_floors()[name], version, scopes)


# ---------------------------------------------------------------- for `llmhost build`

LABEL_FLOOR_STATUS = "io.llmhost.floor_status"  # ok | unverified | override
LABEL_FLOOR_OVERRIDE = "io.llmhost.floor_override"
BUILD_COMPONENT = {"llama-cpu": "llama-cpp", "llama-gpu": "llama-cpp", "vllm-gpu": "vllm"}


def scopes_of(cmake_flags: str) -> frozenset[str]:
    """Optional llama.cpp parts a build turns on: -DGGML_RPC=ON builds rpc-server."""
    return frozenset({"rpc-server"}) if "-DGGML_RPC=ON" in cmake_flags.split() else frozenset()


def build_gate(
    service: str, version: str, *, allow_below_floor: bool, cmake_flags: str = ""
) -> tuple[dict[str, str], str | None]:
    """Labels recording how a build stands against its floor, and a warning to print.

    Below the floor the build is refused unless `allow_below_floor`, which is recorded in the
    image (io.llmhost.floor_override) so doctor reports it as a failure. A version that cannot be
    compared (a local tree without a build number) is built, labelled "unverified" and warned
    about: a commit date is no proof that a fix is in."""
    component = load_floors()[BUILD_COMPONENT[service]]
    verdict = judge(component, version, scopes_of(cmake_flags))
    floor = " / ".join(component.floor_for(scopes_of(cmake_flags)))
    if verdict.state is State.VULNERABLE:
        names = ", ".join(r.advisory.name for r in verdict.having(State.VULNERABLE))
        if not allow_below_floor:
            raise LlmhostError(
                f"{component.title} {version} is below its security floor {floor} ({names}): "
                f"build {component.pin or floor} or newer, or pass --allow-below-floor to build it "
                "anyway (recorded in the image and reported by llmhost doctor as a failure)"
            )
        override = f"{component.title} {version} < floor {floor} ({names}); --allow-below-floor"
        return {LABEL_FLOOR_STATUS: "override", LABEL_FLOOR_OVERRIDE: override}, (
            f"WARNING: building {component.title} {version}, below its security floor {floor} "
            f"({names}), because --allow-below-floor was given"
        )
    if verdict.state is State.UNKNOWN:
        return {LABEL_FLOOR_STATUS: "unverified"}, (
            f"note: {component.title} {version!r} has no release number, so llmhost cannot prove "
            f"it is at or above the security floor {floor}; llmhost doctor will say so"
        )
    return {LABEL_FLOOR_STATUS: "ok"}, None


# ---------------------------------------------------------------- for roles and humans


def role_defaults(floors: Floors | None = None) -> dict[str, str | list[str]]:
    """Variables the Ansible roles' defaults read: `<component>_min_version(s)` and `_pin`."""
    floors = floors or load_floors()
    out: dict[str, str | list[str]] = {"llmhost_floors_checked": floors.checked}
    for comp in floors.components.values():
        key = comp.name.replace("-", "_")
        out[f"{key}_min_versions"] = list(comp.floor)
        out[f"{key}_min_version"] = comp.floor[0]
        if comp.pin:
            out[f"{key}_pin"] = comp.pin
    return out


def main(argv: list[str] | None = None) -> int:
    """`python3 -m llmhost.floors [--ansible]`: the floors as JSON, for a role's lookup('pipe')."""
    args = sys.argv[1:] if argv is None else argv
    if "--ansible" in args:
        print(json.dumps(role_defaults(), indent=1, sort_keys=True))
        return 0
    floors = load_floors()
    print(
        json.dumps(
            {
                "checked": floors.checked,
                "components": {
                    c.name: {
                        "floor": list(c.floor),
                        "pin": c.pin,
                        "advisories": [list(a.ids) for a in c.advisories],
                    }
                    for c in floors.components.values()
                },
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
