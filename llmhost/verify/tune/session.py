"""One `llmhost tune` session: which setups the chosen knobs need and this host can run, rounds
of them interleaved (the order rotating each round), and a Record per knob from the samples."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from llmhost.errors import LlmhostError
from llmhost.facts import HostFacts
from llmhost.facts.sources import Source
from llmhost.plan.evidence import MIN_SAMPLES, TUNE_SOURCE, Hardware, Record
from llmhost.plan.planner import HUGEPAGE_KB, HUGEPAGE_SLACK_PAGES, Plan
from llmhost.plan.services import LlamaKnobs
from llmhost.progress import Progress
from llmhost.verify.tune.judge import compare
from llmhost.verify.tune.knobs import (
    POOL,
    SETUP,
    SMT,
    TUNED,
    Setup,
    build_comparison,
    build_setup,
)
from llmhost.verify.tune.measure import Bench, BenchRun, SetupRefused, lowest_free_pages

SERVICE = "llama-cpu"


@dataclass(frozen=True)
class TuneRequest:
    model: Path
    knobs: tuple[str, ...] = tuple(TUNED)
    rounds: int = 3
    reps: int = 2  # llama-bench -r per round
    prompt: int = 512
    gen: int = 128

    def __post_init__(self) -> None:
        unknown = [k for k in self.knobs if k not in TUNED]
        if unknown:
            raise LlmhostError(
                f"unknown knob(s) {', '.join(unknown)}: llmhost tune measures {', '.join(TUNED)}",
                exit_code=2,
            )
        if self.rounds * self.reps < MIN_SAMPLES:
            raise LlmhostError(
                f"--rounds {self.rounds} x --reps {self.reps} gives fewer than {MIN_SAMPLES} "
                "samples a setup: no verdict could be reached",
                exit_code=2,
            )


@dataclass(frozen=True)
class TuneResult:
    hardware: Hardware
    workload: str  # the model as llama-bench names it
    model: str
    rounds: int
    reps: int
    setups: dict[str, dict[str, object]]  # name -> {"args": [...], "env": {...}}
    runs: dict[str, dict[str, list[float]]]  # setup -> llama-bench test -> tokens/s samples
    skipped: dict[str, str]  # knob -> why it was not measured
    records: tuple[Record, ...]
    seconds: float
    measured_at: str


def base_knobs(plan: Plan) -> LlamaKnobs:
    """The plan's llama-cpu knobs, pinned to its compute CPUs: every setup changes these."""
    svc = plan.service(SERVICE)
    if svc is None or not isinstance(svc.knobs, LlamaKnobs):
        raise LlmhostError(f"the plan has no {SERVICE} service to tune (use --profile cpu)")
    cpus = plan.cores.compute_cpus
    return replace(svc.knobs, cpu_mask=cpus, threads=len(cpus))


def unmet(setup: Setup, plan: Plan, facts: HostFacts, model: Path) -> str | None:
    """Why this host cannot run `setup`, or None."""
    if setup.needs == POOL:
        pages = math.ceil(model.stat().st_size / (HUGEPAGE_KB * 1024)) + HUGEPAGE_SLACK_PAGES
        pool = facts.memory.pool(HUGEPAGE_KB)
        free = pool.available if pool else 0
        if free < pages:
            return (
                f"needs {pages} free 2 MiB pages for the model, {free} free: "
                f"sysctl -w vm.nr_hugepages={(pool.total if pool else 0) + pages - free}"
            )
    if setup.needs == SMT and len(plan.cores.inference_cpus) <= len(plan.cores.compute_cpus):
        return "the inference cores have no SMT siblings on this host"
    return None


def _samples(rows: list[dict]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in rows:
        test = f"pp{row['n_prompt']}" if row.get("n_prompt") else f"tg{row['n_gen']}"
        out.setdefault(test, []).extend(float(s) for s in row["samples_ts"])
    return out


def run_tune(
    request: TuneRequest,
    plan: Plan,
    facts: HostFacts,
    bench: Bench,
    progress: Progress,
    source: Source | None = None,
    builds: Mapping[str, Bench] | None = None,
) -> TuneResult:
    """Measure the requested knobs: every setup they need, `rounds` times, interleaved. `bench`
    is the plan's build; `builds` other builds (OTHER_BUILDS names), each compared with it."""
    start = time.monotonic()
    base = base_knobs(plan)
    builds = dict(builds or {})
    comparisons = [TUNED[k] for k in request.knobs] + [build_comparison(b) for b in builds]
    known = {**SETUP, **{build_setup(b).name: build_setup(b) for b in builds}}
    benches = {build_setup(b).name: builds[b] for b in builds}
    names = list(dict.fromkeys(n for c in comparisons for n in (c.baseline, c.candidate)))
    why = {n: unmet(known[n], plan, facts, request.model) for n in names}
    setups = [known[n] for n in names if why[n] is None]
    runs, workload = _measure(request, plan, setups, why, bench, benches, progress, source)
    hardware = Hardware.from_facts(facts)
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    source_name = f"{TUNE_SOURCE} {plan.hostname} {when}"
    records, skipped = [], {}
    for c in comparisons:
        missing = [why[n] for n in (c.candidate, c.baseline) if why.get(n)]
        record = None if missing else compare(c, {workload: runs}, {}, hardware, source_name)
        if record is None:
            skipped[c.knob] = missing[0] if missing else "no samples"
        else:
            records.append(record)
    return TuneResult(
        hardware=hardware,
        workload=workload,
        model=str(request.model),
        rounds=request.rounds,
        reps=request.reps,
        setups={
            s.name: {"args": s.bench_args(base, plan.cores), "env": s.bench_env(base, plan.cores)}
            for s in setups
            if not why.get(s.name)
        },
        runs=runs,
        skipped=skipped,
        records=tuple(records),
        seconds=round(time.monotonic() - start, 1),
        measured_at=when,
    )


def _measure(
    request: TuneRequest,
    plan: Plan,
    setups: list[Setup],
    why: dict[str, str | None],
    bench: Bench,
    benches: Mapping[str, Bench],
    progress: Progress,
    source: Source | None,
) -> tuple[dict[str, dict[str, list[float]]], str]:
    """`rounds` of every setup, the order rotating each round: samples per setup and test, and
    the model as llama-bench names it. A run that did not measure what its setup asks for
    leaves its reason in `why` and its samples out."""
    base = base_knobs(plan)
    sizes = ["-p", str(request.prompt), "-n", str(request.gen), "-r", str(request.reps)]
    runs: dict[str, dict[str, list[float]]] = {}
    workload = request.model.name
    for rnd in range(request.rounds):
        shift = rnd % len(setups) if setups else 0
        for setup in setups[shift:] + setups[:shift]:
            if why.get(setup.name):
                continue
            args = [*sizes, *setup.bench_args(base, plan.cores)]
            env = setup.bench_env(base, plan.cores)
            runner = partial(benches.get(setup.name, bench), request.model, args, env,
                             setup.locks(base, plan.cores))  # fmt: skip
            try:
                run, before, lowest = lowest_free_pages(runner, HUGEPAGE_KB, source)
            except SetupRefused as exc:
                why[setup.name] = str(exc)
                continue
            trouble = _not_as_asked(setup, setup.locks(base, plan.cores), run, lowest, before)
            if trouble:
                why[setup.name] = trouble
                runs.pop(setup.name, None)
                continue
            rows = run.rows
            workload = rows[0].get("model_type") or workload
            for test, samples in _samples(rows).items():
                runs.setdefault(setup.name, {}).setdefault(test, []).extend(samples)
            line = ", ".join(
                f"{t} {statistics.median(s):.1f} t/s" for t, s in _samples(rows).items()
            )
            progress(f"round {rnd + 1}/{request.rounds} {setup.name}: {line}")
    return runs, workload


def _not_as_asked(
    setup: Setup, locks: bool, run: BenchRun, lowest_free: int, free_before: int
) -> str | None:
    """Why a run did not measure what its setup asks for, or None."""
    if setup.needs == POOL and lowest_free >= free_before:
        return "took no pages from the 2 MiB pool (glibc older than 2.35?)"
    if locks and "failed to mlock" in run.log:
        return "could not lock the weights: raise the memlock limit (ulimit -l unlimited)"
    return None
