"""Text rendering shared by commands: doctor's table, plan summaries, JSON."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from llmhost.cli.layout import PIPE_WIDTH, condense, fix_lines, wrap
from llmhost.facts import to_jsonable
from llmhost.verdict import Status

if TYPE_CHECKING:  # `plan` renders without importing doctor's checks (a fifth of its run)
    from llmhost.plan.planner import Plan
    from llmhost.verify.doctor import Report

# Keyed by Status values (a StrEnum: Status.OK == "ok" and hashes alike).
MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}
COLORS = {"ok": "green", "warn": "yellow", "fail": "red", "skip": None}


def echo_json(data: Any) -> None:
    click.echo(json.dumps(to_jsonable(data), indent=2, sort_keys=False))


def _mark(status: Status) -> str:
    return MARKS[status] if (sys.stdout.encoding or "").lower().startswith("utf") else status.value


def _echo_marked(lines: list[str], mark: str, status: Status) -> None:
    """Echo `lines`, colouring the `[mark]` that starts the first (widths counted unstyled)."""
    plain = f"[{mark}]"
    first = lines[0]
    click.echo(click.style(plain, fg=COLORS[status]) + first[len(plain) :])
    for line in lines[1:]:
        click.echo(line)


def render_doctor(report: Report, header: str, width: int | None = None) -> None:
    """One line per check; details and the fix only for what is not ok (flutter doctor style).
    With a width, details wrap with a hanging indent; fixes never break inside a command."""
    for line in wrap(header, width, "", "  "):
        click.echo(line)
    title_width = max(len(r.title) for r in report.results)
    for r in report.results:
        mark = _mark(r.status)
        if r.status in ("ok", "skip"):
            first = f"[{mark}] {r.title.ljust(title_width)}  "
            if width is None or width - len(first) >= 30 or len(first + r.detail) <= width:
                _echo_marked(wrap(r.detail, width, first, " " * len(first)), mark, r.status)
                continue
            # Too narrow for a detail column: the detail goes under the title, like a warning's.
        _echo_marked([f"[{mark}] {r.title}"], mark, r.status)
        for line in wrap(r.detail, width, " " * 6, " " * 8):
            click.echo(line)
        if r.remediation:
            for line in fix_lines(r.remediation, width, " " * 6):
                click.echo(line)
    counts = report.counts()
    click.echo(
        f"\n{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s), "
        f"{counts['skip']} skipped"
    )


def _field(label: str, text: str, width: int | None) -> list[str]:
    return wrap(text, width, f"  {label:<16} ", " " * 19)


def render_plan(plan: Plan, width: int | None = None) -> None:
    """The plan in a screenful: fields wrap with a hanging indent; each evidence line is condensed
    to one line (`--json` has the full text)."""
    c, h, b = plan.cores, plan.hugepages, plan.build
    lines = [f"Plan for {plan.hostname} (profile {plan.profile})"]
    cores = c.inference_cores
    isolated = f"{c.inference_cpulist}  ({cores} cores)" if cores else "none"
    lines += _field("inference CPUs", isolated, width)
    lines += _field("housekeeping", c.housekeeping_cpulist, width)
    lines += _field("why", c.reason, width)
    pages = f"{h.pages}  ({h.bytes / 2**30:.2f} GiB) — {h.reason}"
    lines += _field("hugepages (2M)", pages, width)
    cmdline = " ".join(f"{k}={v}" for k, v in plan.kernel_params.items())
    lines += _field("kernel cmdline", cmdline, width)
    lines += _field("CPU build", " ".join(b.llama_cpu_cmake_flags), width)
    if b.cuda_architectures:
        cuda = (
            f"CMAKE_CUDA_ARCHITECTURES={b.cuda_architectures}, "
            f"TORCH_CUDA_ARCH_LIST={b.torch_cuda_arch_list}, CUDA {b.cuda_version}"
        )
        lines += _field("CUDA build", cuda, width)
    for s in plan.services:
        extra = f"  GPU {','.join(map(str, s.gpus))}" if s.gpus else ""
        if s.memory_limit_mib:
            extra += f"  memory ≤ {s.memory_limit_mib / 1024:.1f} GiB"
        text = (
            f"{s.bind_address}:{s.port}  {s.serving}  cpuset {s.cpuset}  "
            f"{s.knobs.host_work}{extra}  image {s.image}"
        )
        lines += wrap(text, width, f"  service {s.name:<9} ", " " * 20)
    if plan.gpu_memory:
        lines += gpu_memory_lines(plan)
    lines += _evidence_lines(plan, width or PIPE_WIDTH)
    for note in plan.notes:
        lines += wrap(note, width, "  note: ", " " * 8)
    for line in lines:
        click.echo(line)


def _evidence_lines(plan: Plan, width: int) -> list[str]:
    """One line per knob, its verdict on this kind of host first; `--json` has the numbers."""
    recs = plan.recommendations
    lines = []
    for i, r in enumerate(recs):
        text = condense(f"{r.summary}: {r.title} ({r.service})", width - 19)
        lines.append(f"  {'evidence' if i == 0 else '':<16} {text}")
    if recs:
        kinds = ", ".join(dict.fromkeys(r.host_kind for r in recs))
        where = f"(measured on {kinds}; the numbers: llmhost plan --json)"
        lines += wrap(where, width, " " * 19, " " * 20)
    return lines


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
