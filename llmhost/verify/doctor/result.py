"""What one doctor check found, and the context every check reads."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from llmhost.facts import HostFacts
from llmhost.plan.config import Config
from llmhost.plan.planner import Plan
from llmhost.verdict import Status


@dataclass(frozen=True)
class Result:
    id: str
    title: str
    status: Status
    detail: str
    remediation: str | None = None


@dataclass(frozen=True)
class Context:
    facts: HostFacts
    config: Config
    profile: str
    plan: Plan | None
    plan_error: str | None
    plan_fix: str | None
    live: bool

    @property
    def wants_gpu(self) -> bool:
        return self.profile in ("gpu", "all")


@dataclass(frozen=True)
class Finding:
    """A check's verdict before the registry stamps its id and title on it."""

    status: Status
    detail: str
    remediation: str | None = None


CheckFn = Callable[[Context], Finding]


def ok(detail: str) -> Finding:
    return Finding(Status.OK, detail)


def warn(detail: str, fix: str | None = None) -> Finding:
    return Finding(Status.WARN, detail, fix)


def fail(detail: str, fix: str | None = None) -> Finding:
    return Finding(Status.FAIL, detail, fix)


def skip(detail: str) -> Finding:
    return Finding(Status.SKIP, detail)


def needs_engine(check: CheckFn) -> CheckFn:
    """Skip a check that reads the Docker engine when it is unreachable (docker.engine says why)."""

    @functools.wraps(check)
    def guarded(ctx: Context) -> Finding:
        if not ctx.facts.containers.engine_reachable:
            return skip("Docker engine not reachable")
        return check(ctx)

    return guarded
