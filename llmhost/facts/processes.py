"""Running llmhost services as the host kernel sees them: for each container, the server's host
PID, its memory by page size, its threads' CPU affinity and last CPU, and its command line.

Everything is read through the Source (the container list via `docker-inspect-llmhost`, then
`/proc/PID/...`), so `doctor --from SNAPSHOT` replays exactly what a live run saw. Memory comes
from `smaps_rollup` (totals, no per-mapping text); the full `smaps` is read only when the
rollup shows hugetlb pages, to list those mappings: then the large memory is in 2 MiB pages,
whose page-table walk is 512 times shorter than the same bytes in 4 KiB pages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace

from llmhost.cpulist import parse_cpulist
from llmhost.facts import our_labels
from llmhost.facts.sources import Source

INSPECT_KEY = "docker-inspect-llmhost"
# /proc/PID/stat fields after the ")" that closes comm: field 3 (state) is index 0.
_STAT_UTIME, _STAT_STIME, _STAT_PROCESSOR = 14 - 3, 15 - 3, 39 - 3
_SMAPS_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+\S+\s+\S+\s+\d+\s*(.*)$")


@dataclass(frozen=True)
class ThreadInfo:
    tid: int
    name: str
    cpus_allowed: tuple[int, ...]  # Cpus_allowed_list of /proc/PID/task/TID/status
    last_cpu: int | None  # `processor`, field 39 of /proc/PID/task/TID/stat
    cpu_ticks: int  # utime + stime, in clock ticks


@dataclass(frozen=True)
class HugetlbMapping:
    """One mapping of the process backed by pages larger than 4 KiB (smaps KernelPageSize)."""

    start: str
    size_kb: int
    page_kb: int
    perms: str
    hugetlb_kb: int  # Private_Hugetlb + Shared_Hugetlb: pages faulted in
    path: str


@dataclass(frozen=True)
class ProcessMemory:
    rss_kb: int
    hugetlb_kb: int  # Private_Hugetlb + Shared_Hugetlb (smaps_rollup): pages from the pool
    anon_huge_kb: int  # AnonHugePages: transparent hugepages
    locked_kb: int  # VmLck (status): mlock'ed
    mappings: tuple[HugetlbMapping, ...] = ()  # from smaps, only when hugetlb_kb > 0
    model_mapped_kb: int | None = None  # Rss of mappings of the --model file (None: not scanned)


@dataclass(frozen=True)
class ServiceProcess:
    service: str
    project: str
    container: str
    pid: int
    cpuset: tuple[int, ...]  # the container's cpuset (HostConfig.CpusetCpus); () = every CPU
    health: str | None
    health_exit_codes: tuple[int, ...]  # the engine's last health-check exit codes
    env: dict[str, str]  # only sources.INSPECT_ENV_KEYS
    args: tuple[str, ...] = ()  # /proc/PID/cmdline
    memlock_limit_kb: int | None = None  # soft "Max locked memory"; None = unlimited/unknown
    memory: ProcessMemory | None = None
    threads: tuple[ThreadInfo, ...] = ()
    error: str | None = None  # why /proc/PID could not be read

    def arg(self, *names: str) -> str | None:
        """The value of the last `--name value` (or `--name=value`) among `names`."""
        value = None
        for i, token in enumerate(self.args):
            key, eq, inline = token.partition("=")
            if key in names:
                value = inline if eq else (self.args[i + 1] if i + 1 < len(self.args) else "")
        return value


@dataclass(frozen=True)
class ProcessFacts:
    services: tuple[ServiceProcess, ...] = field(default_factory=tuple)
    error: str | None = None  # why no container could be listed

    def service(self, project: str, name: str) -> ServiceProcess | None:
        return next((s for s in self.services if s.project == project and s.service == name), None)


# ---------------------------------------------------------------- parsers (text in, data out)


def parse_kb_fields(text: str) -> dict[str, int]:
    """`Key:   123 kB` lines (status, smaps_rollup) -> {"Key": 123}; other lines ignored."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0])
    return values


def parse_status(text: str) -> dict[str, str]:
    """/proc/PID/status as {field: raw value}."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def parse_stat(text: str) -> tuple[int | None, int]:
    """/proc/PID/stat -> (processor, utime + stime); comm may hold spaces and parentheses."""
    fields = text[text.rfind(")") + 1 :].split()
    if len(fields) <= _STAT_PROCESSOR:
        return None, 0
    ticks = int(fields[_STAT_UTIME]) + int(fields[_STAT_STIME])
    return int(fields[_STAT_PROCESSOR]), ticks


def parse_cmdline(raw: str) -> tuple[str, ...]:
    return tuple(a for a in raw.split("\0") if a)


def parse_memlock_limit(text: str) -> int | None:
    """Soft "Max locked memory" of /proc/PID/limits in kB; None when unlimited or absent."""
    for line in text.splitlines():
        if line.startswith("Max locked memory"):
            soft = line[len("Max locked memory") :].split()[0]
            return int(soft) // 1024 if soft.isdigit() else None
    return None


def parse_smaps(text: str, model_name: str | None) -> tuple[tuple[HugetlbMapping, ...], int]:
    """(mappings with pages > 4 KiB, Rss kB of mappings whose path ends in /model_name)."""
    mappings: list[HugetlbMapping] = []
    model_kb = 0
    block: dict[str, int] = {}
    header: tuple[str, str, str] | None = None

    def flush() -> None:
        nonlocal model_kb
        if header is None:
            return
        start, perms, path = header
        if block.get("KernelPageSize", 4) > 4:
            hugetlb = block.get("Private_Hugetlb", 0) + block.get("Shared_Hugetlb", 0)
            mappings.append(
                HugetlbMapping(
                    start, block.get("Size", 0), block["KernelPageSize"], perms, hugetlb, path
                )
            )
        if model_name and path.split(" (")[0].endswith("/" + model_name):
            model_kb += block.get("Rss", 0)

    for line in text.splitlines():
        match = _SMAPS_HEADER.match(line)
        if match:
            flush()
            header = (match.group(1), match.group(3), match.group(4).strip())
            block = {}
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            block[key] = int(parts[0])
    flush()
    return tuple(mappings), model_kb


def parse_inspect(text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    return data if isinstance(data, list) else []


# ---------------------------------------------------------------- gathering


def _memory(source: Source, pid: int, status: dict[str, str], model: str | None) -> ProcessMemory:
    rollup = parse_kb_fields(source.read_text(f"/proc/{pid}/smaps_rollup") or "")
    hugetlb = rollup.get("Private_Hugetlb", 0) + rollup.get("Shared_Hugetlb", 0)
    mappings: tuple[HugetlbMapping, ...] = ()
    model_kb = None
    if hugetlb or not rollup:  # no rollup (kernel < 4.14): the full smaps is all there is
        smaps = source.read_text(f"/proc/{pid}/smaps")
        if smaps is not None:
            mappings, model_kb = parse_smaps(smaps, model.rsplit("/", 1)[-1] if model else None)
            if not rollup:
                hugetlb = sum(m.hugetlb_kb for m in mappings)
    return ProcessMemory(
        rss_kb=rollup.get("Rss", _kb(status.get("VmRSS"))),
        hugetlb_kb=hugetlb,
        anon_huge_kb=rollup.get("AnonHugePages", 0),
        locked_kb=_kb(status.get("VmLck")),
        mappings=mappings,
        model_mapped_kb=model_kb,
    )


def _kb(value: str | None) -> int:
    parts = (value or "").split()
    return int(parts[0]) if parts and parts[0].isdigit() else 0


def _threads(source: Source, pid: int) -> tuple[ThreadInfo, ...]:
    threads = []
    for name in source.list_dir(f"/proc/{pid}/task") or []:
        if not name.isdigit():
            continue
        status_path = f"/proc/{pid}/task/{name}/status"
        status = source.read_text(status_path)
        stat = source.read_text(f"/proc/{pid}/task/{name}/stat")
        if status is None or stat is None:
            continue  # the thread exited between the listing and the read
        fields = parse_status(status)
        last_cpu, ticks = parse_stat(stat)
        threads.append(
            ThreadInfo(
                tid=int(name),
                name=fields.get("Name", ""),
                cpus_allowed=parse_cpulist(fields.get("Cpus_allowed_list"), status_path),
                last_cpu=last_cpu,
                cpu_ticks=ticks,
            )
        )
    return tuple(sorted(threads, key=lambda t: t.tid))


def _service_process(source: Source, box: dict) -> ServiceProcess:
    state = box.get("State") or {}
    config = box.get("Config") or {}
    labels = config.get("Labels") or {}
    health = state.get("Health") or {}
    pid = int(state.get("Pid") or 0)
    proc = ServiceProcess(
        service=labels.get(our_labels.SERVICE) or labels.get("com.docker.compose.service", ""),
        project=labels.get("com.docker.compose.project", ""),
        container=str(box.get("Name") or box.get("Id") or "?").lstrip("/"),
        pid=pid,
        cpuset=parse_cpulist(
            (box.get("HostConfig") or {}).get("CpusetCpus"), f"{INSPECT_KEY} HostConfig.CpusetCpus"
        ),
        health=health.get("Status"),
        health_exit_codes=tuple(int(h.get("ExitCode") or 0) for h in health.get("Log") or []),
        env=dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e),
    )
    status_text = source.read_text(f"/proc/{pid}/status") if pid else None
    if status_text is None:
        return replace(proc, error=f"cannot read /proc/{pid}/status (doctor needs root)")
    proc = replace(proc, args=parse_cmdline(source.read_text(f"/proc/{pid}/cmdline") or ""))
    return replace(
        proc,
        memlock_limit_kb=parse_memlock_limit(source.read_text(f"/proc/{pid}/limits") or ""),
        memory=_memory(source, pid, parse_status(status_text), proc.arg("--model", "-m")),
        threads=_threads(source, pid),
    )


def gather_processes(source: Source) -> ProcessFacts:
    out = source.command(INSPECT_KEY)
    if not out.ok:
        return ProcessFacts(error=out.error)
    return ProcessFacts(
        services=tuple(_service_process(source, b) for b in parse_inspect(out.stdout))
    )
