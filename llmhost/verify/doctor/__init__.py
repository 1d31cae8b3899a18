"""`llmhost doctor`: run every registered check over the facts and the plan."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts
from llmhost.plan.config import Config
from llmhost.plan.evidence import Evidence, host_evidence
from llmhost.plan.planner import Plan, make_plan
from llmhost.verdict import Status
from llmhost.verify.doctor.registry import CHECKS
from llmhost.verify.doctor.result import Context, Result


@dataclass(frozen=True)
class Report:
    results: tuple[Result, ...]
    plan: Plan | None

    @property
    def exit_code(self) -> int:
        return 1 if any(r.status is Status.FAIL for r in self.results) else 0

    def counts(self) -> dict[str, int]:
        return {s.value: sum(r.status is s for r in self.results) for s in Status}


def run_doctor(
    facts: HostFacts, config: Config, profile: str, *, live: bool, evidence: Evidence | None = None
) -> Report:
    """Plan (a plan failure is itself a finding), then run every check. `evidence` defaults to
    the packaged measurements and this host's own (`llmhost tune`)."""
    plan, plan_error, plan_fix = None, None, None
    evidence = host_evidence() if evidence is None else evidence
    try:
        plan = make_plan(facts, config, profile, evidence=evidence)
    except LlmhostError as exc:
        if exc.exit_code == 2:
            raise
        plan_error, plan_fix = str(exc), exc.fix
    ctx = Context(facts, config, profile, plan, plan_error, plan_fix, live)
    results = []
    for check_id, title, fn in CHECKS:
        finding = fn(ctx)
        results.append(Result(check_id, title, finding.status, finding.detail, finding.remediation))
    return Report(tuple(results), plan)
