"""Checks on the running services, from the kernel's view of their processes: are the weights
really on 2 MiB pages, do the compute threads really run on the planned CPUs, is a reserved pool
used at all, is an mlock that was asked for in effect. They read `facts.processes`, so they work
the same from a snapshot.
"""

from __future__ import annotations

import math

from llmhost.cpulist import format_cpulist
from llmhost.facts.processes import ServiceProcess, ThreadInfo
from llmhost.plan.planner import HUGEPAGE_KB
from llmhost.verify.doctor.result import Context, Finding, fail, ok, skip, warn

CPU_SERVICE = "llama-cpu"
SIGBUS_EXIT = 128 + 7  # a shell reports a child killed by SIGBUS as exit status 135
MLOCK_MODES = ("mlock", "mmap+mlock")


def _running(ctx: Context, name: str) -> tuple[ServiceProcess | None, str]:
    """The running service `name` of this project, or why there is none to look at."""
    if ctx.plan is None:
        return None, "no plan"
    if ctx.plan.service(name) is None:
        return None, f"{name} is not in the {ctx.profile} profile"
    procs = ctx.facts.processes
    if procs.error:
        return None, f"running services not inspected: {procs.error}"
    proc = procs.service(ctx.config.project, name)
    if proc is None:
        return None, f"{name} is not running (project {ctx.config.project})"
    if proc.error:
        return None, f"{name}: {proc.error}"
    return proc, ""


def _mib(kb: float) -> str:
    return f"{kb / 1024:.0f} MiB"


# ---------------------------------------------------------------- weights on 2 MiB pages


def weights_on_hugepages(ctx: Context) -> Finding:
    """The server's hugetlb pages (smaps) against the plan and the pool (meminfo).

    Tolerance: none downward, the plan's headroom upward. The weights are read into buffers
    glibc maps from the pool whole or not at all, so the pages faulted in must cover every
    weight byte (ceil(weights / 2 MiB)); KV cache and compute buffers may take less than
    planned, but what the server maps must fit `hugepages.pages`, which already carries
    headroom_pct on top of the estimate. The pool's in-use count (Total - Free) is its drop
    since it was reserved: the server's pages when nothing else uses the pool (the e2e test
    checks the drop), any excess is reported as other processes'.
    """
    proc, why = _running(ctx, CPU_SERVICE)
    if proc is None or proc.memory is None or ctx.plan is None:
        return skip(why or "no memory figures")
    hp, mem = ctx.plan.hugepages, proc.memory
    page_kb = hp.page_kb
    if hp.pages == 0:
        return skip(
            f"not planned ({hp.reason}); {CPU_SERVICE} has {_mib(mem.hugetlb_kb)} hugetlb, "
            f"{_mib(mem.anon_huge_kb)} THP"
        )
    weights = sum(m.weights_bytes for m in hp.models)
    weights_pages = math.ceil(weights / (page_kb * 1024))
    used = mem.hugetlb_kb // page_kb
    mapped = sum(math.ceil(m.size_kb / page_kb) for m in mem.mappings if m.page_kb == page_kb)
    pool = ctx.facts.memory.pool(page_kb)
    in_use = pool.total - pool.free if pool else 0
    available = pool.available if pool else 0
    detail = (
        f"{proc.container} pid {proc.pid}: {used} x 2 MiB pages in use "
        f"({_mib(mem.hugetlb_kb)}) in {len(mem.mappings)} hugetlb mapping(s), {mapped} mapped; "
        f"weights {_mib(weights / 1024)} need >= {weights_pages}; plan {hp.pages}; "
        f"pool {pool.total if pool else 0} total, {in_use} in use, "
        f"{pool.reserved if pool else 0} reserved, {available} available"
    )
    if in_use > used:
        detail += f" ({in_use - used} in use by other processes)"
    redeploy = f"llmhost deploy --profile {ctx.profile}"
    if not used and "hugetlb" not in proc.env.get("GLIBC_TUNABLES", ""):
        return fail(
            f"weights on 4 KiB pages: {CPU_SERVICE} runs without GLIBC_TUNABLES "
            f"glibc.malloc.hugetlb (deployed by an older llmhost?); {detail}",
            redeploy,
        )
    if mem.model_mapped_kb and mem.model_mapped_kb * 1024 >= weights / 2:
        return fail(
            f"weights served from the page cache: the model file is memory-mapped "
            f"({_mib(mem.model_mapped_kb)} resident, --load-mode {proc.arg('--load-mode')}); "
            + detail,
            redeploy,
        )
    if used < weights_pages and mem.anon_huge_kb * 1024 >= weights:
        return warn(
            f"weights on transparent hugepages ({_mib(mem.anon_huge_kb)} AnonHugePages), not "
            f"the reserved pool, which is withheld for nothing; {detail}",
            redeploy,
        )
    if used < weights_pages:
        need = hp.pages + max(in_use - used, 0)
        return fail(
            f"weights not on 2 MiB pages: {used} pages in use, the weights alone need "
            f"{weights_pages} (the pool was short when the model loaded, so glibc fell back to "
            f"4 KiB pages); {detail}",
            f"sysctl -w vm.nr_hugepages={need} && {redeploy}",
        )
    bus_errors = sum(code == SIGBUS_EXIT for code in proc.health_exit_codes)
    if bus_errors:
        return fail(
            f"pool exhausted: {bus_errors} of the last {len(proc.health_exit_codes)} health "
            f"checks died of SIGBUS (GLIBC_TUNABLES puts every process in the container on "
            f"2 MiB pages; a fault the pool cannot serve kills it); {detail}",
            "raise hugepages.headroom_pct in llmhost.yaml, reserve the new plan's pages, "
            f"and {redeploy}",
        )
    if mapped > hp.pages:
        return warn(
            f"{CPU_SERVICE} maps {mapped} pages, more than the plan's {hp.pages}: {detail}",
            "raise hugepages.headroom_pct in llmhost.yaml",
        )
    if pool and available == 0:
        return warn(
            f"pool exhausted: no page left for a new malloc arena; {detail}",
            "raise hugepages.headroom_pct in llmhost.yaml",
        )
    return ok(detail)


# ---------------------------------------------------------------- compute threads


def compute_threads(proc: ServiceProcess) -> tuple[ThreadInfo, ...]:
    """The threads llama.cpp computes on, told apart from its HTTP and helper threads.

    Rule: with --cpu-strict 1 ggml pins each compute thread (the main thread, which runs the
    task loop and every graph, and the OpenMP workers) to one CPU of --cpu-mask, while the HTTP
    threads start before the model loads and keep the container's cpuset. So the compute
    threads are those allowed on exactly one CPU that is narrower than the cpuset. When none is
    narrower, the only compute thread is the main thread: so it is with a one-CPU cpuset, and
    with --threads 1 (ggml opens no parallel region for one thread, so it never sets an
    affinity). ggml pins at the first graph run on the server's threadpool, i.e. the first
    request; the load-time warm-up runs before that pool is attached.
    """
    cpuset = set(proc.cpuset) or {c for t in proc.threads for c in t.cpus_allowed}
    pinned = tuple(
        t for t in proc.threads if len(t.cpus_allowed) == 1 and set(t.cpus_allowed) < cpuset
    )
    if pinned:
        return pinned
    return tuple(t for t in proc.threads if t.tid == proc.pid)


def _thread_map(threads: tuple[ThreadInfo, ...]) -> str:
    return ", ".join(
        f"{t.tid}->CPU {format_cpulist(t.cpus_allowed)} (ran on {t.last_cpu})" for t in threads
    )


def threads_pinned(ctx: Context) -> Finding:
    """Each compute thread on one planned compute CPU, all distinct, none a housekeeping CPU,
    and the CPU it last ran on (stat field 39) inside its affinity."""
    proc, why = _running(ctx, CPU_SERVICE)
    if proc is None or ctx.plan is None:
        return skip(why)
    svc = ctx.plan.service(CPU_SERVICE)
    assert svc is not None  # _running checked it
    cores = ctx.plan.cores
    planned, housekeeping = set(cores.compute_cpus), set(cores.housekeeping_cpus)
    compute = compute_threads(proc)
    others = len(proc.threads) - len(compute)
    detail = (
        f"thread -> CPU: {_thread_map(compute)}; {others} other thread(s) on cpuset "
        f"{format_cpulist(proc.cpuset)}; plan: {svc.threads} thread(s) on CPUs "
        f"{format_cpulist(planned)}, housekeeping {format_cpulist(housekeeping)}"
    )
    redeploy = f"llmhost deploy --profile {ctx.profile}"
    problems: list[str] = []
    if set(proc.cpuset) != set(cores.inference_cpus):
        problems.append(
            f"container cpuset {format_cpulist(proc.cpuset) or 'all CPUs'}, plan "
            f"{cores.inference_cpulist}"
        )
    if svc.threads > 1 and len(compute) == 1 and len(compute[0].cpus_allowed) > 1:
        if proc.arg("--cpu-strict") != "1":
            problems.append("no compute thread pinned: --cpu-strict 1 is missing")
        if problems:
            return fail("; ".join(problems) + f" — {detail}", redeploy)
        return warn(
            f"compute threads not pinned yet: ggml pins them at the first request — {detail}",
            f"llmhost bench --service {CPU_SERVICE}  (then run doctor again)",
        )
    if len(compute) != svc.threads:
        problems.append(f"{len(compute)} compute thread(s), plan {svc.threads}")
    seen: dict[int, int] = {}
    soft: list[str] = []
    for t in compute:
        allowed = set(t.cpus_allowed)
        if allowed & housekeeping:
            problems.append(
                f"thread {t.tid} may run on housekeeping CPU(s) "
                f"{format_cpulist(allowed & housekeeping)}"
            )
        elif len(allowed) > 1:
            soft.append(f"thread {t.tid} floats over CPUs {format_cpulist(allowed)}")
        elif not allowed <= planned:
            problems.append(
                f"thread {t.tid} on CPU {format_cpulist(allowed)}, not a planned compute CPU"
            )
        if len(allowed) == 1:
            cpu = next(iter(allowed))
            if cpu in seen:
                problems.append(f"threads {seen[cpu]} and {t.tid} share CPU {cpu}")
            seen[cpu] = t.tid
        if t.last_cpu is not None and t.last_cpu not in allowed:
            problems.append(f"thread {t.tid} last ran on CPU {t.last_cpu}, outside its affinity")
    if problems:
        return fail("; ".join(problems) + f" — {detail}", redeploy)
    if soft:
        return warn(
            "; ".join(soft) + " (one core's SMT siblings; llama.cpp applies --cpu-mask only "
            f"with --threads > 1) — {detail}"
        )
    return ok(detail)


# ---------------------------------------------------------------- pool used at all


def pool_used(ctx: Context) -> Finding:
    """A reserved pool nothing maps is RAM withheld from the host for nothing."""
    pool = ctx.facts.memory.pool(HUGEPAGE_KB)
    if pool is None or pool.total == 0:
        return ok("no 2 MiB pool reserved")
    in_use = pool.total - pool.free
    size = f"{pool.total} x 2 MiB pages ({pool.total * 2} MiB)"
    users = [
        f"{p.service} ({p.project}): {p.memory.hugetlb_kb // HUGEPAGE_KB}"
        for p in ctx.facts.processes.services
        if p.memory and p.memory.hugetlb_kb
    ]
    if in_use or pool.reserved:
        by = f"; llmhost services: {', '.join(users)}" if users else ""
        return ok(f"{size}: {in_use} in use, {pool.reserved} reserved{by}")
    planned = ctx.plan.hugepages.pages if ctx.plan else 0
    fix = "sysctl -w vm.nr_hugepages=0"
    if "hugepages" in ctx.facts.kernel.params:
        fix += " (and drop hugepages= from the kernel command line)"
    if planned:
        fix = f"llmhost deploy --profile {ctx.profile} (llama-cpu takes them), or {fix}"
    why = ctx.plan.hugepages.reason if ctx.plan else "no plan"
    return warn(
        f"reserved pool unused: {size} reserved and none in use, memory withheld for nothing "
        f"(plan: {planned} pages, {why})",
        fix,
    )


# ---------------------------------------------------------------- mlock


def mlock_effective(ctx: Context) -> Finding:
    """--mlock (or --load-mode mlock / mmap+mlock) asked for, and VmLck shows it happened."""
    procs = ctx.facts.processes
    if procs.error:
        return skip(f"running services not inspected: {procs.error}")
    ours = [p for p in procs.services if p.project == ctx.config.project and not p.error]
    if not ours:
        return skip(f"no running service in project {ctx.config.project}")
    asked, failed, good = [], [], []
    for p in ours:
        mode = p.arg("--load-mode", "-lm") or p.env.get("LLAMA_ARG_LOAD_MODE")
        if "--mlock" not in p.args and mode not in MLOCK_MODES:
            continue
        asked.append(p.service)
        locked = p.memory.locked_kb if p.memory else 0
        limit = "unlimited" if p.memlock_limit_kb is None else _mib(p.memlock_limit_kb)
        if locked == 0:
            failed.append(f"{p.service}: mlock requested but VmLck 0 kB (memlock limit {limit})")
        else:
            good.append(f"{p.service}: VmLck {_mib(locked)} (memlock limit {limit})")
    if not asked:
        return skip("no service asks for --mlock")
    if failed:
        return fail(
            "; ".join(failed),
            "give the container an unlimited memlock limit (compose `ulimits: memlock: -1`) "
            f"and llmhost deploy --profile {ctx.profile}",
        )
    return ok("; ".join(good))
