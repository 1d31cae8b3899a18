"""Text rendering shared by commands: doctor's table, plan summaries, JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from llmhost.doctor import Report
from llmhost.doctor.result import Status
from llmhost.facts import to_jsonable
from llmhost.plan import Plan

MARKS = {Status.OK: "✓", Status.WARN: "!", Status.FAIL: "✗", Status.SKIP: "-"}
COLORS = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.SKIP: None}


def echo_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=False))


def _mark(status: Status) -> str:
    mark = MARKS[status] if (sys.stdout.encoding or "").lower().startswith("utf") else status.value
    return click.style(f"[{mark}]", fg=COLORS[status])


def render_doctor(report: Report, header: str) -> None:
    """One line per check; details and the fix only for what is not ok (flutter doctor style)."""
    click.echo(header)
    width = max(len(r.title) for r in report.results)
    for r in report.results:
        line = f"{_mark(r.status)} {r.title.ljust(width)}  "
        click.echo(line + (r.detail if r.status in (Status.OK, Status.SKIP) else ""))
        if r.status in (Status.WARN, Status.FAIL):
            click.echo(f"      {r.detail}")
            if r.remediation:
                click.echo(f"      fix: {r.remediation}")
    counts = report.counts()
    click.echo(
        f"\n{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s), "
        f"{counts['skip']} skipped"
    )


def render_plan(plan: Plan) -> None:
    c, h, b = plan.cores, plan.hugepages, plan.build
    click.echo(f"Plan for {plan.hostname} (profile {plan.profile})")
    click.echo(f"  inference CPUs   {c.inference_cpulist}  ({c.inference_cores} cores)")
    click.echo(f"  housekeeping     {c.housekeeping_cpulist}")
    click.echo(f"  why              {c.reason}")
    click.echo(f"  hugepages (2M)   {h.pages}  ({h.bytes / 2**30:.2f} GiB) — {h.reason}")
    click.echo("  kernel cmdline   " + " ".join(f"{k}={v}" for k, v in plan.kernel_params.items()))
    click.echo(f"  CPU build        {' '.join(b.llama_cpu_cmake_flags)}")
    if b.cuda_architectures:
        click.echo(
            f"  CUDA build       CMAKE_CUDA_ARCHITECTURES={b.cuda_architectures}, "
            f"TORCH_CUDA_ARCH_LIST={b.torch_cuda_arch_list}, CUDA {b.cuda_version}"
        )
    for s in plan.services:
        click.echo(
            f"  service {s.name:<9} {s.bind_address}:{s.port}  cpuset {s.cpuset}  "
            f"threads {s.threads}  image {s.image}"
        )
    for i, r in enumerate(plan.recommendations):
        label = "evidence" if i == 0 else ""
        click.echo(f"  {label:<16} {r.title} ({r.service}): {r.text}")
    for note in plan.notes:
        click.echo(f"  note: {note}")
