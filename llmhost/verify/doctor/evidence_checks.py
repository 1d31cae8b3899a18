"""Check the tuning knobs the plan applies against what was measured on this kind of host."""

from __future__ import annotations

from llmhost.plan.evidence import Recommendation, Verdict, measure_commands
from llmhost.verify.doctor.result import Context, Finding, ok, skip, warn


def _names(recs: list[Recommendation]) -> str:
    return ", ".join(f"{r.title} ({r.service})" for r in recs)


def _fix(recs: list[Recommendation], turn_off: bool = True) -> str:
    """`measure this host: CMD[; or turn it off: SETTING]`, each command and setting once."""
    measure = measure_commands(recs)
    off = ", ".join(dict.fromkeys(r.turn_off for r in recs if r.turn_off and turn_off))
    return f"measure this host: {measure}" + (f"; or turn it off: {off}" if off else "")


def tuning_evidence(ctx: Context) -> Finding:
    """ok: every applied knob measured positive here; warn: one measured nil or negative here;
    skip: none measured on this kind of host."""
    if ctx.plan is None:
        return skip("no plan")
    applied = [r for r in ctx.plan.recommendations if r.applied]
    if not applied:
        return skip("no measured tuning knob is applied by this plan")
    worse = [r for r in applied if r.verdict in (Verdict.NIL, Verdict.NEGATIVE)]
    good = [r for r in applied if r.verdict is Verdict.POSITIVE]
    unmeasured = [r for r in applied if r.verdict is Verdict.NOT_MEASURED]
    kinds = ", ".join(sorted({r.host_kind for r in applied}))
    if worse:
        detail = "; ".join(f"{r.title}: {r.basis}" for r in worse)
        return warn(f"applied but not measured positive on {kinds}: {detail}", _fix(worse))
    if not good:
        fix = _fix(unmeasured, turn_off=False)
        return skip(f"nothing applied was measured on {kinds} ({_names(unmeasured)}); {fix}")
    detail = f"measured positive on {kinds}: {_names(good)}"
    if unmeasured:
        detail += f"; not measured here: {_names(unmeasured)}"
    return ok(detail)
