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
        gpus = f"  GPU {','.join(map(str, s.gpus))}" if s.gpus else ""
        click.echo(
            f"  service {s.name:<9} {s.bind_address}:{s.port}  {s.serving}  cpuset {s.cpuset}  "
            f"threads {s.threads}{gpus}  image {s.image}"
        )
    if plan.gpu_memory:
        for line in gpu_memory_lines(plan):
            click.echo(line)
    for i, r in enumerate(plan.recommendations):
        label = "evidence" if i == 0 else ""
        click.echo(f"  {label:<16} {r.title} ({r.service}): {r.text}")
    for note in plan.notes:
        click.echo(f"  note: {note}")


def gpu_memory_lines(plan: Plan) -> list[str]:
    """The GPU memory table: per GPU, who holds what (GiB), and each service's terms."""
    memory = plan.gpu_memory
    if memory is None:
        return []
    names = [s.name for s in plan.services if s.gpu]
    head = f"  {'GPU memory (GiB)':<34}{'total':>7}{'others':>8}{'reserve':>8}"
    head += "".join(f"{n:>11}" for n in names) + f"{'free':>7}"
    lines = [head]
    for row in memory.rows:
        held = row.planned_mib
        cells = "".join(f"{held[n] / 1024:>11.1f}" if n in held else f"{'-':>11}" for n in names)
        label = f"{row.index} {row.name}"[:32]
        lines.append(
            f"  {label:<34}{row.total_mib / 1024:>7.1f}{row.others_mib / 1024:>8.1f}"
            f"{row.reserve_mib / 1024:>8.1f}{cells}{row.free_mib / 1024:>7.1f}"
        )
    for name, p in memory.placements.items():
        parts = ", ".join(f"{k} {v / 2**30:.1f} GiB" for k, v in p.parts.items()) or "not sized"
        extra = []
        if p.utilization is not None:
            extra.append(f"--gpu-memory-utilization {p.utilization:.3f}")
        if p.kv_tokens is not None:
            extra.append(f"KV {p.kv_tokens} tokens")
        if p.max_num_seqs is not None:
            extra.append(f"max-num-seqs {p.max_num_seqs}")
        if p.tensor_parallel_size > 1:
            extra.append(f"tensor parallel {p.tensor_parallel_size}")
        lines.append(f"    {name} per GPU: {parts}" + (f"; {', '.join(extra)}" if extra else ""))
    return lines
