"""Checks on the CPU, the plan, hugepages, CPU isolation and frequency governors."""

from __future__ import annotations

from llmhost.cpulist import format_cpulist
from llmhost.facts import uarch
from llmhost.verify.doctor.result import Context, Finding, fail, ok, skip, warn

TAGS_FIX = "ansible-playbook site.yml --tags {tags}"


def cpu_microarchitecture(ctx: Context) -> Finding:
    cpu = ctx.facts.cpu
    name = cpu.microarchitecture + (f" ({cpu.codename})" if cpu.codename else "")
    detail = (
        f"{cpu.vendor} {name}, family {cpu.family} model {cpu.model:#x}: "
        f"{cpu.physical_cores} cores / {len(cpu.logical_cpus)} CPUs, "
        f"{len(cpu.l3_domains)} L3 domain(s), {len(cpu.numa_nodes)} NUMA node(s)"
    )
    if cpu.microarchitecture.startswith("unknown"):
        return warn(detail + "; llmhost plans from the ISA flags alone")
    dated = uarch.era(cpu.microarchitecture)
    reported = uarch.microarchitecture(cpu.vendor, cpu.family, cpu.model, cpu.stepping)
    if dated and reported != cpu.microarchitecture:
        detail += (
            f"; named by its instruction sets: the model it reports is {reported}'s, which has "
            f"no {', '.join(dated.flags)} (a virtual machine's CPU model)"
        )
    return ok(detail)


def cpu_vnni(ctx: Context) -> Finding:
    cpu = ctx.facts.cpu
    have = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16") if cpu.has(f)]
    if cpu.has("avx512_vnni"):
        return ok(f"AVX-512 VNNI present ({', '.join(have)}): fast int8 dot products for Q4/Q8")
    if cpu.has("avx_vnni"):
        return ok(f"AVX-VNNI (256-bit) present ({', '.join(have)})")
    if cpu.has("avx2"):
        return warn("no VNNI: quantized matmuls use the slower AVX2 path")
    return fail("no AVX2: llama.cpp CPU inference will be very slow on this CPU")


def plan_ready(ctx: Context) -> Finding:
    if ctx.plan is None:
        detail = (ctx.plan_error or "").replace(f": {ctx.plan_fix}", "")
        return fail(f"no plan: {detail}", ctx.plan_fix)
    plan = ctx.plan
    cores = (
        f"{plan.cores.inference_cores} inference cores -> CPUs {plan.cores.inference_cpulist}, "
        f"housekeeping {plan.cores.housekeeping_cpulist}"
        if plan.cores.inference_cores
        else "no CPU isolation"
    )
    gpus = [
        f"{s.name} on GPU {','.join(map(str, s.gpus))} ({s.serving})"
        for s in plan.services
        if s.gpus
    ]
    return ok(f"{cores}; {plan.hugepages.pages} x 2 MiB pages" + "".join(f"; {g}" for g in gpus))


def hugepages_reserved(ctx: Context) -> Finding:
    if ctx.plan is None:
        return skip("no plan")
    need = ctx.plan.hugepages.pages
    pool = ctx.facts.memory.pool(ctx.plan.hugepages.page_kb)
    if pool is None:
        return fail("the kernel has no 2 MiB hugepage pool (CONFIG_HUGETLBFS off?)")
    fix = TAGS_FIX.format(tags="hugepages") + f"  (or: sysctl -w vm.nr_hugepages={need})"
    if need == 0:
        if pool.total:
            return warn(
                f"{pool.total} x 2 MiB pages reserved but the plan needs none "
                f"({ctx.plan.hugepages.reason}): {pool.total * 2} MiB withheld from the host",
                "sysctl -w vm.nr_hugepages=0",
            )
        return ok(f"none needed: {ctx.plan.hugepages.reason}")
    if pool.total < need:
        return fail(f"{pool.total} of {need} planned 2 MiB pages reserved", fix)
    if pool.free < need and not _pool_in_use_by_service(ctx):
        return warn(f"{pool.total} reserved but only {pool.free} free of {need} needed", fix)
    return ok(f"{pool.total} reserved, {pool.free} free, plan {need} ({ctx.plan.hugepages.reason})")


def _pool_in_use_by_service(ctx: Context) -> bool:
    return any(
        c.service == "llama-cpu" and c.state == "running" for c in ctx.facts.containers.containers
    )


def cpu_isolation(ctx: Context) -> Finding:
    if ctx.plan is None:
        return skip("no plan")
    kernel = ctx.facts.kernel
    want = ctx.plan.cores.inference_cpus
    fix = TAGS_FIX.format(tags="cpu_isolation") + " and reboot"
    planned = ctx.plan.kernel_params
    if not want:
        if kernel.isolated_cpus:
            return warn(
                f"CPUs {format_cpulist(kernel.isolated_cpus)} are isolated but this plan isolates "
                f"none ({ctx.plan.cores.reason}): the scheduler leaves them idle",
                fix,
            )
        return ok(f"nothing to isolate: {ctx.plan.cores.reason}")
    if kernel.isolated_cpus == want and set(kernel.nohz_full_cpus) >= set(want):
        return ok(f"CPUs {format_cpulist(want)} isolated and nohz_full, as planned")
    dropin = kernel.grub_dropin_params
    if dropin is not None and any(dropin.get(k) != v for k, v in planned.items()):
        return warn("the llmhost GRUB drop-in differs from the plan (hand-edited?)", fix)
    if dropin and kernel.pending_params:
        return warn(
            f"pending reboot: the GRUB drop-in sets isolcpus={planned['isolcpus']} "
            "but the running kernel has not booted with it",
            "reboot",
        )
    if kernel.isolated_cpus:
        return fail(
            f"isolated CPUs are {format_cpulist(kernel.isolated_cpus)}, the plan wants "
            f"{format_cpulist(want)}",
            fix,
        )
    return warn(f"no CPUs isolated (plan: {format_cpulist(want)})", fix)


def cpu_governor(ctx: Context) -> Finding:
    governors = ctx.facts.kernel.governors
    if not governors:
        return skip("no cpufreq on this host (VM or firmware-controlled)")
    slow = {g: c for g, c in governors.items() if g != "performance"}
    if not slow:
        return ok("all CPUs on the performance governor")
    detail = "; ".join(f"{g} on CPUs {format_cpulist(c)}" for g, c in slow.items())
    return warn(detail, TAGS_FIX.format(tags="cpu_isolation"))


def transparent_hugepages(ctx: Context) -> Finding:
    mode = ctx.facts.memory.thp_enabled
    if mode is None:
        return skip("no transparent hugepage support")
    if mode == "never":
        return warn(
            "THP is 'never': anonymous buffers get 4 KiB pages",
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled",
        )
    return ok(f"THP mode '{mode}'")


def _pool_bytes(params: dict[str, str]) -> int:
    """Bytes a kernel command line reserves at boot (hugepages=N of hugepagesz, default 2M)."""
    count = params.get("hugepages", "0")
    size = params.get("hugepagesz", "2M").upper()
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if not count.isdigit() or not size[:-1].isdigit() or size[-1:] not in units:
        return 0
    return int(count) * int(size[:-1]) * units[size[-1]]


def boot_hugepages(ctx: Context) -> Finding:
    """A boot-time pool is taken before anything else runs: one larger than the RAM can spare
    (RAM removed, a drop-in copied from a bigger host) leaves a host that cannot boot usefully."""
    from llmhost.plan.planner import MAX_HUGEPAGE_RAM_FRACTION

    ram = ctx.facts.memory.total_kb * 1024
    kernel = ctx.facts.kernel
    boots = {"the running kernel's command line": kernel.params}
    if kernel.grub_dropin_params:
        boots["llmhost's GRUB drop-in (the next boot)"] = kernel.grub_dropin_params
    sizes = {where: _pool_bytes(params) for where, params in boots.items()}
    if not any(sizes.values()):
        return ok("no hugepages reserved on the kernel command line")
    if not ram:
        return skip("MemTotal unknown")
    limit = ram * MAX_HUGEPAGE_RAM_FRACTION
    too_big = {where: size for where, size in sizes.items() if size > limit}
    if not too_big:
        shown = "; ".join(f"{w}: {s / 2**30:.1f} GiB" for w, s in sizes.items() if s)
        return ok(f"boot-time pool within {MAX_HUGEPAGE_RAM_FRACTION:.0%} of RAM ({shown})")
    where, size = next(iter(too_big.items()))
    return fail(
        f"{where} reserves {size / 2**30:.1f} GiB of hugepages at boot, more than "
        f"{MAX_HUGEPAGE_RAM_FRACTION:.0%} of this host's {ram / 2**30:.1f} GiB RAM",
        TAGS_FIX.format(tags="cpu_isolation") + "  (rewrites the drop-in from this host's plan)",
    )
