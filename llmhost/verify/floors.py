"""Security floors (llmhost/data/floors.toml) and the verdicts that judge versions against them.

Versions are ordered by llmhost/facts/versions.py (dpkg order, PEP 440 pre-releases before their
release); llama.cpp is judged by its build number (`b10864`). A tag that is no version (`latest`,
`main`, a commit) is refused, never judged: it names no release an advisory could be fixed in.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path

from llmhost.errors import LlmhostError
from llmhost.facts import our_labels
from llmhost.facts.versions import (
    PackageVersion,
    compare_versions,
    parse_version,
    tag_problem,
    version_key,
    version_problem,
)

FLOORS_PATH = Path(__file__).parents[1] / "data" / "floors.toml"
ANY = "*"  # `judged_by` filter: every advisory, whichever component's version decides it
# Scopes that are conditions of a host (not optional parts of a build): a role installing the
# component cannot rule them out beforehand, so its floor includes them.
HOST_SCOPES = frozenset({"firewalld"})


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
    introduced: str | None = None  # first affected version; older ones never had the flaw
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

    def applicable(
        self, scopes: frozenset[str] = frozenset(), judged_by: str | None = ANY
    ) -> tuple[Advisory, ...]:
        """Advisories in force for these scopes; `judged_by` keeps only those another component's
        version decides (None: only the component's own)."""
        return tuple(
            a
            for a in self.advisories
            if (a.scope is None or a.scope in scopes)
            and (judged_by == ANY or a.judged_by == judged_by)
        )

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
        introduced=raw.get("introduced"),
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


# ---------------------------------------------------------------- judging versions


def affected(version: str, advisory: Advisory) -> bool:
    """False for a version older than the one that introduced the flaw (it never had it)."""
    if advisory.introduced is None:
        return True
    return compare_versions(parse_version(version).upstream, advisory.introduced) >= 0


def llama_build_number(version: str | None) -> int | None:
    """`b10864` -> 10864; anything else (a local tree, a commit) carries no build number."""
    match = re.fullmatch(r"b(\d+)", (version or "").strip())
    return int(match.group(1)) if match else None


def _line(version: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", parse_version(version).upstream)
    return tuple(int(n) for n in numbers[:2])


def fixed_upstream(version: str, fixed: tuple[str, ...], scheme: str = "semver") -> bool | None:
    """Whether an upstream version carries the fix; None when it cannot be told (no build number,
    or no version at all).

    A version on a release line with a listed fix must be at least that fix; on any other line it
    must be newer than every listed fix (an older line, or one between, never got the fix)."""
    if scheme == "build":
        build = llama_build_number(version)
        if build is None:
            return None
        return all(build >= llama_build_number(f) for f in fixed)  # type: ignore[operator]
    if version_problem(version):
        return None  # `latest` or a commit is never "newer than every fix"
    upstream = parse_version(version).upstream
    same_line = [f for f in fixed if _line(f) == _line(upstream)]
    if same_line:
        return compare_versions(upstream, same_line[0]) >= 0
    return compare_versions(upstream, max(fixed, key=version_key)) >= 0


def required_floor(advisories: tuple[Advisory, ...], scheme: str) -> tuple[str, ...]:
    """The lowest version passing every advisory, one per release line, oldest line first."""
    if scheme == "build":
        builds = [llama_build_number(f) for a in advisories for f in a.fixed]
        return (f"b{max(b for b in builds if b is not None)}",) if builds else ()
    newest_overall = max((f for a in advisories for f in a.fixed), key=version_key, default=None)
    if newest_overall is None:
        return ()
    by_line: dict[tuple[int, ...], str] = {}
    for advisory in advisories:
        for fix in advisory.fixed:
            line = _line(fix)
            if line not in by_line or compare_versions(fix, by_line[line]) > 0:
                by_line[line] = fix
    # A line whose fix is older than another advisory's oldest-line demand is not safe at all.
    safe = [
        v
        for v in by_line.values()
        if all(fixed_upstream(v, a.fixed) or not affected(v, a) for a in advisories)
    ]
    return tuple(sorted(safe, key=version_key))


# ---------------------------------------------------------------- verdicts


class State(StrEnum):
    OK = "ok"
    PATCHED = "patched by the distribution"
    VULNERABLE = "vulnerable"
    UNKNOWN = "unknown"
    REFUSED = "not a version"  # `latest`, `main`, a commit: nothing to compare with a floor


_SEVERITY = {State.OK: 0, State.PATCHED: 1, State.UNKNOWN: 2, State.VULNERABLE: 3, State.REFUSED: 4}
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
    scopes: frozenset[str] = frozenset()
    judged_by: str | None = ANY
    refused: str | None = None  # why the version is no version at all

    @property
    def state(self) -> State:
        if self.refused:
            return State.REFUSED
        worst = max((r.state for r in self.results), key=_SEVERITY.__getitem__, default=State.OK)
        return worst

    @property
    def floor(self) -> str:
        """The floor of the advisories this verdict judged (scoped, and by `judged_by`)."""
        judged = self.component.applicable(self.scopes, self.judged_by)
        return " / ".join(required_floor(judged, self.component.scheme))

    def having(self, state: State) -> tuple[AdvisoryVerdict, ...]:
        return tuple(r for r in self.results if r.state is state)

    def describe(self) -> str:
        """One sentence: "runc 1.1.5+ds1: vulnerable to CVE-... (why)"; advisories sharing a
        reason are named together."""
        if self.refused:
            return (
                f"{self.component.title}: {self.refused}, so it proves nothing against the "
                f"security floor {self.floor}"
            )
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
            return f"{head} >= floor {self.floor}"
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


def refusal(version: str, scheme: str = "semver") -> str | None:
    """Why `version` cannot be judged at all; a llama.cpp local tree without a build number is
    judged (unknown), but `latest`, `master` or a bare commit is refused for every scheme."""
    if scheme == "build":
        return None if llama_build_number(version) is not None else tag_problem(version)
    return version_problem(version)


def judge(
    component: Component,
    version: str,
    scopes: frozenset[str] = frozenset(),
    judged_by: str | None = ANY,
) -> Verdict:
    """Each applicable advisory: fixed, patched by the distribution, vulnerable, or unknown; a
    version that is no version is refused as a whole."""
    problem = refusal(version, component.scheme)
    if problem:
        return Verdict(component, version, (), scopes, judged_by, problem)
    parsed = parse_version(version)
    results = []
    for advisory in component.applicable(scopes, judged_by):
        fixed = fixed_upstream(version, advisory.fixed, component.scheme)
        if fixed or (component.scheme != "build" and not affected(version, advisory)):
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
    return Verdict(component, version, tuple(results), scopes, judged_by)


def check(
    name: str, version: str, scopes: frozenset[str] = frozenset(), judged_by: str | None = ANY
) -> Verdict:
    return judge(load_floors()[name], version, scopes, judged_by)


# ---------------------------------------------------------------- for `llmhost build`

BUILD_COMPONENT = {"llama-cpu": "llama-cpp", "llama-gpu": "llama-cpp", "vllm-gpu": "vllm"}
# The config key each build's version comes from, named when a version is refused.
BUILD_KEY = {
    "llama-cpu": "images.llama_ref",
    "llama-gpu": "images.llama_ref",
    "vllm-gpu": "images.vllm_version",
}


def engine_scopes(firewall_backend: str | None) -> frozenset[str]:
    """Host conditions the Docker engine reports: "iptables+firewalld" means firewalld runs."""
    return frozenset({"firewalld"}) if "firewalld" in (firewall_backend or "") else frozenset()


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
    about: a commit date is no proof that a fix is in. A tag that is no version (`latest`, `main`,
    a commit) is refused, --allow-below-floor or not."""
    component = load_floors()[BUILD_COMPONENT[service]]
    verdict = judge(component, version, scopes_of(cmake_flags))
    floor = verdict.floor
    if verdict.refused:
        raise LlmhostError(
            f"{BUILD_KEY[service]}: {verdict.refused}, so llmhost cannot check it against the "
            f"security floor {floor}: give a release like {component.pin or floor}",
            exit_code=2,
        )
    if verdict.state is State.VULNERABLE:
        names = ", ".join(r.advisory.name for r in verdict.having(State.VULNERABLE))
        if not allow_below_floor:
            raise LlmhostError(
                f"{component.title} {version} is below its security floor {floor} ({names}): "
                f"build {component.pin or floor} or newer, or pass --allow-below-floor to build it "
                "anyway (recorded in the image and reported by llmhost doctor as a failure)"
            )
        override = f"{component.title} {version} < floor {floor} ({names}); --allow-below-floor"
        return {our_labels.FLOOR_STATUS: "override", our_labels.FLOOR_OVERRIDE: override}, (
            f"WARNING: building {component.title} {version}, below its security floor {floor} "
            f"({names}), because --allow-below-floor was given"
        )
    if verdict.state is State.UNKNOWN:
        return {our_labels.FLOOR_STATUS: "unverified"}, (
            f"note: {component.title} {version!r} has no release number, so llmhost cannot prove "
            f"it is at or above the security floor {floor}; llmhost doctor will say so"
        )
    return {our_labels.FLOOR_STATUS: "ok"}, None


# ---------------------------------------------------------------- for roles and humans


def role_defaults(floors: Floors | None = None) -> dict[str, str | list[str]]:
    """Variables the Ansible roles' defaults read: `<component>_min_version(s)` and `_pin`.

    A role installs before it can see the host's firewall, so its floor counts the advisories
    scoped to a host condition (HOST_SCOPES: firewalld) as in force."""
    floors = floors or load_floors()
    out: dict[str, str | list[str]] = {"llmhost_floors_checked": floors.checked}
    for comp in floors.components.values():
        key = comp.name.replace("-", "_")
        floor = comp.floor_for(HOST_SCOPES)
        out[f"{key}_min_versions"] = list(floor)
        out[f"{key}_min_version"] = floor[0]
        if comp.pin:
            out[f"{key}_pin"] = comp.pin
    return out


def main(argv: list[str] | None = None) -> int:
    """`python3 -m llmhost.verify.floors [--ansible]`: the floors as JSON, for a role's
    lookup('pipe')."""
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
