"""Smoke benchmarks of deployed services: run, gate against targets, keep JSON evidence."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmhost.facts import HostFacts, to_jsonable
from llmhost.plan.config import Config
from llmhost.plan.planner import Plan, ServicePlan
from llmhost.verify.bench.report import REPORT_SCHEMA

RESULTS_DIR = "bench"


def service_url(svc: ServicePlan) -> str:
    host = "127.0.0.1" if svc.bind_address in ("0.0.0.0", "::") else svc.bind_address
    return f"http://{host}:{svc.port}"


def image_labels(facts: HostFacts, image: str) -> dict[str, str]:
    found = next((i for i in facts.containers.images if image in i.tags), None)
    return dict(found.labels) if found else {}


def evidence(
    runs: list[dict[str, Any]],
    facts: HostFacts,
    *,
    service: str | None,
    labels: dict[str, str],
    gates: list[Any],
) -> dict[str, Any]:
    """The saved result: runs + the host's facts + the image's build labels + verdict."""
    return {
        "schema": REPORT_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "service": service,
        "host": {
            "hostname": facts.hostname,
            "cpu": to_jsonable(facts.cpu),
            "memory_total_kb": facts.memory.total_kb,
            "kernel": facts.kernel.release,
            "gpu": to_jsonable(facts.gpu),
        },
        "image_labels": labels,
        "runs": runs,
        "gates": to_jsonable(gates),
        "passed": all(g.passed for g in gates),
    }


def save(report: dict[str, Any], out_dir: Path, name: str) -> Path:
    path = out_dir / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.json"
    write_report(report, path)
    return path


def write_report(report: dict[str, Any], path: Path) -> None:
    """(Re)write a report, e.g. once its plot exists and `plot` can name it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def default_out_dir() -> Path:
    from llmhost.state import state_dir

    return state_dir() / RESULTS_DIR


def smoke_all(plan: Plan, config: Config, facts: HostFacts, *, echo: Callable[[str], None]) -> bool:
    """Bench every planned service with the config's bench settings; True when all gates pass."""
    from llmhost.verify.bench.report import gate, to_dict
    from llmhost.verify.bench.runner import run_bench

    ok = True
    for svc in plan.services:
        concurrency = config.bench.concurrency or svc.bench_concurrency
        result = run_bench(
            service_url(svc),
            concurrency=concurrency,
            requests=max(config.bench.requests, 2 * concurrency),
            max_tokens=config.bench.max_tokens,
            warmup=config.bench.warmup,
            api_key=config.api_key,
        )
        # The serving configuration's targets hold at its own concurrency.
        checks = gate(result, svc.targets) if concurrency == svc.bench_concurrency else []
        report = evidence(
            [to_dict(result)],
            facts,
            service=svc.name,
            labels=image_labels(facts, svc.image),
            gates=checks,
        )
        path = save(report, default_out_dir(), svc.name)
        s = result.summary
        echo(
            f"  {svc.name}: {s.output_throughput:.1f} tok/s, TTFT p90 "
            f"{s.ttft.percentile(90):.0f} ms, ITL p90 {s.itl.percentile(90):.1f} ms "
            f"-> {'PASS' if report['passed'] else 'FAIL'} ({path})"
        )
        for check in checks:
            if not check.passed:
                echo(f"    {check.target}: {check.actual} vs limit {check.limit}")
        ok = ok and report["passed"]
    return ok
