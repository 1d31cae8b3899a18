"""Measured evidence for tuning knobs and what it says about a host: the shipped evidence
(llmhost/data/evidence.json, derived by `benchmarks/evidence.py` from `benchmarks/results/`) and
this host's own (`llmhost tune` writes it under the state directory).

This module reads both, judges by the rule below, and matches records to a host: CPU knobs by CPU
microarchitecture, GPU knobs by GPU architecture. Pure apart from loading and saving the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmhost.facts import uarch
from llmhost.plan.services import Knobs, LlamaKnobs

if TYPE_CHECKING:
    from llmhost.facts import HostFacts


class PlannedService(Protocol):
    """What the evidence reads of a planned service (llmhost.plan.planner.ServicePlan): which
    knobs it carries. A protocol, so the planner imports the evidence and not the reverse."""

    @property
    def name(self) -> str: ...
    @property
    def knobs(self) -> Knobs: ...
    @property
    def memlock(self) -> bool: ...


EVIDENCE_PATH = Path(__file__).parents[1] / "data" / "evidence.json"
LOCAL_EVIDENCE = "evidence.json"  # in the state directory: `llmhost tune`'s records of this host
TUNE_SOURCE = "llmhost tune on"  # how a record measured by `llmhost tune` names its source
MORE_ROUNDS = 6  # a knob measured here already is measured again with this many rounds
FORMAT = 1
# A median gain below 2 % is not worth a knob even when the spread clears 1.0.
NOISE_THRESHOLD = 0.02
# Fewer samples a side make no spread (one sample is its own min and max).
MIN_SAMPLES = 3
RULE = (
    "per metric, with at least min_samples samples of knob and baseline: positive when the "
    "median ratio (knob / baseline) > 1 + noise_threshold and the min-max spread of the knob's "
    "samples over the baseline's median lies wholly above 1.0; negative when the median ratio "
    "< 1 - noise_threshold and the spread lies wholly below 1.0; else nil. Per knob: positive "
    "when some metric is positive and none negative, negative when some metric is negative and "
    "none positive, else nil."
)
# `llmhost tune` measures the CPU knobs here; the builds and GPU knobs are lab benchmarks that
# need llmhost's source tree, so their fix names where the steps are written, not a path an
# installed wheel lacks.
_STEPS = "from the llmhost source tree (its bench documentation, 'Tuning evidence')"
MEASURE_CPU_BUILDS = f"run the CPU-build benchmark {_STEPS}"
MEASURE_GPU_KNOBS = f"run the GPU-knob benchmark {_STEPS}"
REBUILD_EVIDENCE = f"rebuild the packaged evidence {_STEPS}"
HUGEPAGES_OFF = "hugepages.enabled: false in llmhost.yaml"
FLASH_ATTN_OFF = "services.llama-cpu.flash_attn: false in llmhost.yaml"
MLOCK_OFF = "services.llama-cpu.mlock: false in llmhost.yaml"


class Verdict(StrEnum):
    POSITIVE = "positive"
    NIL = "nil"
    NEGATIVE = "negative"
    NOT_MEASURED = "not measured here"


# ---------------------------------------------------------------- the rule


def metric_verdict(
    ratio: float, low: float, high: float, samples: int, threshold: float = NOISE_THRESHOLD
) -> Verdict:
    """One metric's verdict: a median gain beyond the noise threshold, spread clear of 1.0;
    `samples` is the smaller side's count."""
    if samples < MIN_SAMPLES:
        return Verdict.NIL
    if ratio > 1 + threshold and low > 1.0:
        return Verdict.POSITIVE
    if ratio < 1 - threshold and high < 1.0:
        return Verdict.NEGATIVE
    return Verdict.NIL


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """A knob's verdict from its metrics' (pp helping while tg holds still is still a gain)."""
    seen = set(verdicts)
    if Verdict.POSITIVE in seen and Verdict.NEGATIVE not in seen:
        return Verdict.POSITIVE
    if Verdict.NEGATIVE in seen and Verdict.POSITIVE not in seen:
        return Verdict.NEGATIVE
    return Verdict.NIL


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Hardware:
    """What a result was measured on, named as llmhost's facts name it."""

    vendor: str | None = None  # /proc/cpuinfo vendor_id: GenuineIntel, AuthenticAMD
    microarchitecture: str | None = None  # "Emerald Rapids", "Zen 4"
    physical_cores: int | None = None
    logical_cpus: int | None = None
    virtual: bool | None = None  # a hypervisor's vCPUs
    threads_used: int | None = None  # when the core counts were not recorded
    gpu_name: str | None = None
    gpu_architecture: str | None = None  # "Hopper"

    @classmethod
    def from_facts(cls, facts: HostFacts) -> Hardware:
        """This host, for benchmark scripts to stamp on their results."""
        cpu, gpus = facts.cpu, facts.gpu.gpus
        return cls(
            vendor=cpu.vendor,
            microarchitecture=cpu.microarchitecture,
            physical_cores=cpu.physical_cores,
            logical_cpus=len(cpu.logical_cpus),
            virtual=cpu.has("hypervisor"),
            gpu_name=gpus[0].name if gpus else None,
            gpu_architecture=gpus[0].architecture if gpus else None,
        )

    def label(self, scope: str = "cpu") -> str:
        if scope == "gpu" and self.gpu_name:
            return f"{self.gpu_name} ({self.gpu_architecture or 'unknown architecture'})"
        vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(self.vendor or "", "")
        name = " ".join(p for p in (vendor, self.microarchitecture or "unknown CPU") if p)
        if self.logical_cpus and self.virtual:
            return f"{name} {self.logical_cpus} vCPU"
        if self.logical_cpus and self.physical_cores:
            return f"{name} {self.physical_cores} cores/{self.logical_cpus} threads"
        if self.threads_used:
            return f"{name}, {self.threads_used} threads"
        return name


@dataclass(frozen=True)
class Metric:
    workload: str  # the model llama-bench ran
    test: str  # llama-bench test: pp512 (prompt processing), tg128 (decode)
    ratio: float  # median(knob) / median(baseline)
    low: float  # min(knob) / median(baseline)
    high: float  # max(knob) / median(baseline)
    n: int  # the knob's samples
    baseline_n: int
    verdict: Verdict

    def text(self, with_workload: bool = False) -> str:
        name = f"{self.workload} {self.test}" if with_workload else self.test
        return f"{name} {self.ratio - 1:+.1%} [{self.low - 1:+.0%}..{self.high - 1:+.0%}]"


@dataclass(frozen=True)
class Record:
    """One knob measured on one kind of hardware, against the configuration without it."""

    knob: str
    title: str
    scope: str  # "cpu": judged by CPU microarchitecture; "gpu": by GPU architecture
    service: str  # the planned service the knob belongs to
    compares: str  # knob configuration vs baseline, as the benchmark ran them
    hardware: Hardware
    metrics: tuple[Metric, ...]
    verdict: Verdict
    source: str  # the results file(s), relative to the repository, joined by ", "

    def figures(self) -> str:
        many = len({m.workload for m in self.metrics}) > 1
        return ", ".join(m.text(many) for m in self.metrics)

    def basis(self, with_verdict: bool = True) -> str:
        """`measured nil on Intel Emerald Rapids 16 vCPU: tg128 +5.6% [-2%..+13%] (results)`."""
        where = self.hardware.label(self.scope)
        lead = f"measured {self.verdict} on {where}: " if with_verdict else ""
        tail = "" if with_verdict else f" on {where}"
        return f"{lead}{self.figures()}{tail} ({self.source})"


@dataclass(frozen=True)
class Evidence:
    noise_threshold: float
    records: tuple[Record, ...]

    def knobs(self) -> list[str]:
        return sorted({r.knob for r in self.records})


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def parse_record(data: dict[str, Any]) -> Record:
    metrics = tuple(
        _build(Metric, {**m, "verdict": Verdict(m["verdict"])}) for m in data["metrics"]
    )
    return _build(
        Record,
        {
            **data,
            "hardware": _build(Hardware, data["hardware"]),
            "metrics": metrics,
            "verdict": Verdict(data["verdict"]),
        },
    )


def parse_evidence(data: dict[str, Any]) -> Evidence:
    if data.get("format") != FORMAT:
        return Evidence(NOISE_THRESHOLD, ())
    records = tuple(parse_record(r) for r in data.get("records", ()))
    return Evidence(float(data.get("noise_threshold", NOISE_THRESHOLD)), records)


@cache
def load_evidence(path: Path = EVIDENCE_PATH) -> Evidence:
    """The packaged evidence (or a file of the same format); none when the file is absent."""
    try:
        return parse_evidence(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return Evidence(NOISE_THRESHOLD, ())


def local_evidence_path() -> Path:
    from llmhost.state import state_dir

    return state_dir() / LOCAL_EVIDENCE


def load_local_evidence(path: Path | None = None) -> Evidence:
    """This host's records from `llmhost tune`; none when it never ran. A file that is not
    evidence is refused with one line, never half-read."""
    from llmhost.errors import LlmhostError

    path = path or local_evidence_path()
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, not {FORMAT}")
        return parse_evidence(data)
    except FileNotFoundError:
        return Evidence(NOISE_THRESHOLD, ())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LlmhostError(
            f"{path} is not llmhost evidence ({exc})",
            fix=f"run `llmhost tune` again, or remove {path}",
        ) from None


def _alike(a: Record, b: Record) -> bool:
    """The same knob measured on the same kind of hardware."""
    ha, hb = a.hardware, b.hardware
    if a.knob != b.knob or a.scope != b.scope:
        return False
    if a.scope == "gpu":
        return ha.gpu_architecture == hb.gpu_architecture
    return _same_cpu(ha, hb.vendor, hb.microarchitecture)


def with_local(shipped: Evidence, local: Evidence) -> Evidence:
    """This host's records beside the shipped ones: a knob measured here sets aside the shipped
    records of that knob on the same kind of hardware (this host's own numbers judge it)."""
    kept = tuple(r for r in shipped.records if not any(_alike(r, h) for h in local.records))
    return Evidence(shipped.noise_threshold, kept + local.records)


def host_evidence() -> Evidence:
    """The evidence plan and doctor judge by: the shipped records and this host's."""
    return with_local(load_evidence(), load_local_evidence())


def save_local_evidence(records: Iterable[Record], path: Path | None = None) -> Path:
    """Add `records` to this host's evidence, replacing earlier ones of the same knob and kind of
    hardware; written whole to a temporary file first, then renamed into place."""
    from llmhost.facts import to_jsonable

    path = path or local_evidence_path()
    new = Evidence(NOISE_THRESHOLD, tuple(records))
    merged = with_local(load_local_evidence(path), new)
    data = {
        "format": FORMAT,
        "generated_by": "llmhost tune",
        "noise_threshold": NOISE_THRESHOLD,
        "min_samples": MIN_SAMPLES,
        "rule": RULE,
        "records": [to_jsonable(r) for r in merged.records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- knobs the plan applies


def _llama(s: PlannedService) -> LlamaKnobs | None:
    return s.knobs if isinstance(s.knobs, LlamaKnobs) else None


def _pinned(s: PlannedService) -> bool:
    k = _llama(s)
    return bool(k and k.cpu_mask)


def _hugetlb(s: PlannedService) -> bool:
    k = _llama(s)
    return bool(k and k.hugetlb_malloc and k.load_mode_none)


@dataclass(frozen=True)
class Knob:
    applied: Callable[[PlannedService], bool]  # does the planned service carry it
    off: str | None  # the setting that turns it off, where llmhost has one
    measure: str  # how to measure it on this host and feed the result in
    tuned: bool = False  # `llmhost tune` measures it (else a lab benchmark does)


def _pinned_hugetlb(s: PlannedService) -> bool:
    return _pinned(s) and _hugetlb(s)


def _flash_attn(s: PlannedService) -> bool:
    k = _llama(s)
    return bool(k and k.flash_attn != "off")  # llama.cpp's default: auto -> on


def _cuda_graphs(s: PlannedService) -> bool:
    return s.knobs.cuda_graphs


def _never(s: PlannedService) -> bool:
    return False


def _always(s: PlannedService) -> bool:
    return True


def _memlock(s: PlannedService) -> bool:
    return s.memlock


def tune(*knobs: str, rounds: int | None = None) -> str:
    """The command that measures `knobs` on this host."""
    more = f" --rounds {rounds}" if rounds else ""
    return "llmhost tune" + "".join(f" --knob {k}" for k in knobs) + more


def measure_commands(recs: Iterable[Recommendation]) -> str:
    """How to measure these knobs: one `llmhost tune` for those it measures (more rounds where
    one was measured here already), then the lab benchmarks for the rest."""
    recs = list(recs)
    tuned = [r for r in recs if r.tuned]
    rounds = MORE_ROUNDS if any(r.measured_here for r in tuned) else None
    lab = [r.measure for r in recs if r not in tuned]
    first = [tune(*dict.fromkeys(r.knob for r in tuned), rounds=rounds)] if tuned else []
    return "; ".join(dict.fromkeys(first + lab))


KNOBS: dict[str, Knob] = {
    "cpu.pinning": Knob(_pinned, None, tune("cpu.pinning"), tuned=True),
    "cpu.hugetlb_weights": Knob(_hugetlb, HUGEPAGES_OFF, tune("cpu.hugetlb_weights"), tuned=True),
    "cpu.pinning_hugetlb": Knob(
        _pinned_hugetlb, HUGEPAGES_OFF, tune("cpu.pinning_hugetlb"), tuned=True
    ),
    # glibc.malloc.hugetlb=1 (THP for the heap): measured, never planned.
    "cpu.thp_weights": Knob(_never, None, tune("cpu.thp_weights"), tuned=True),
    "cpu.mlock": Knob(_memlock, MLOCK_OFF, tune("cpu.mlock"), tuned=True),
    "cpu.flash_attn": Knob(_flash_attn, FLASH_ATTN_OFF, tune("cpu.flash_attn"), tuned=True),
    # one llama.cpp thread per physical core is the plan; a thread per sibling is measured only.
    "cpu.smt_threads": Knob(_never, None, tune("cpu.smt_threads"), tuned=True),
    "gpu.flash_attn": Knob(_flash_attn, None, MEASURE_GPU_KNOBS),
    "gpu.cuda_graphs": Knob(_cuda_graphs, None, MEASURE_GPU_KNOBS),
    "cpu_build.plan_vs_avx2": Knob(_always, None, MEASURE_CPU_BUILDS),
    "cpu_build.plan_vs_official": Knob(_always, None, MEASURE_CPU_BUILDS),
    "cpu_build.plan_vs_threadpool": Knob(_always, None, MEASURE_CPU_BUILDS),
    "cpu_build.amx": Knob(_always, None, MEASURE_CPU_BUILDS),
}
UNKNOWN_KNOB = Knob(lambda s: False, None, REBUILD_EVIDENCE)


# ---------------------------------------------------------------- recommendations


@dataclass(frozen=True)
class Recommendation:
    knob: str
    title: str
    service: str
    applied: bool
    verdict: Verdict  # on this kind of host
    recommended: bool  # measured positive on this kind of host
    host_kind: str  # "Emerald Rapids", "Hopper": what "this kind of host" meant
    basis: str  # the measurement behind the verdict, or where else it was measured
    text: str
    measure: str  # how to measure this knob on this host
    turn_off: str | None  # the setting that turns it off, where llmhost has one
    tuned: bool = False  # `llmhost tune` measures it
    measured_here: bool = False  # this host's own `llmhost tune` records judged it

    @property
    def summary(self) -> str:
        """The verdict on this kind of host without the numbers: `applied, measured nil`."""
        if self.verdict is Verdict.POSITIVE:
            return "recommended" if self.applied else "recommended, not applied"
        verdict = (
            "not measured" if self.verdict is Verdict.NOT_MEASURED else f"measured {self.verdict}"
        )
        return f"applied, {verdict}" if self.applied else f"{verdict}, not applied"


def host_kind(facts: HostFacts, scope: str) -> str:
    if scope == "gpu":
        return "/".join(sorted({g.architecture for g in facts.gpu.gpus})) or "no GPU"
    return facts.cpu.microarchitecture


def same_kind(record: Record, facts: HostFacts) -> bool:
    """Same CPU microarchitecture (and vendor) for CPU knobs, same GPU architecture for GPU ones."""
    hw = record.hardware
    if record.scope == "gpu":
        return hw.gpu_architecture in {g.architecture for g in facts.gpu.gpus}
    return _same_cpu(hw, facts.cpu.vendor, facts.cpu.microarchitecture)


def _same_cpu(hw: Hardware, vendor: str | None, microarchitecture: str | None) -> bool:
    """A record's CPU and another may be the same microarchitecture (vendor unknown: any)."""
    vendor_ok = hw.vendor in (None, vendor)
    return vendor_ok and uarch.same_kind(hw.microarchitecture or "", microarchitecture or "")


def _text(applied: bool, verdict: Verdict, kind: str, basis: str) -> str:
    if verdict is Verdict.POSITIVE:
        return f"recommended: {basis}" if applied else f"recommended, not applied: {basis}"
    if verdict is Verdict.NOT_MEASURED:
        if applied:
            return (
                "applied by config, not measured positive on this kind of host "
                f"({kind}: not measured; {basis})"
            )
        return f"not applied; not measured on this kind of host ({kind}; {basis})"
    if applied:
        return f"applied by config, not measured positive on this kind of host ({basis})"
    return f"not applied; {basis}"


def verdict_here(evidence: Evidence, knob: str, facts: HostFacts) -> tuple[Verdict, str]:
    """A knob's verdict on this kind of host, and the measurements behind it."""
    records = [r for r in evidence.records if r.knob == knob]
    here = [r for r in records if same_kind(r, facts)]
    if not here:
        where = "; ".join(r.basis() for r in records)
        return Verdict.NOT_MEASURED, f"measured elsewhere: {where}" if where else "no measurement"
    verdict = combine(m.verdict for r in here for m in r.metrics)
    return verdict, "; ".join(r.basis(with_verdict=False) for r in here)


def recommend_knob(
    knob: str, records: list[Record], facts: HostFacts, service: PlannedService
) -> Recommendation:
    """The verdict on this kind of host for one knob, from every record of that knob."""
    first = records[0]
    spec = KNOBS.get(knob, UNKNOWN_KNOB)
    applied = spec.applied(service)
    here = [r for r in records if same_kind(r, facts)]
    kind = host_kind(facts, first.scope)
    verdict = combine(m.verdict for r in here for m in r.metrics) if here else Verdict.NOT_MEASURED
    positive = verdict is Verdict.POSITIVE
    basis = "; ".join(r.basis(with_verdict=not positive) for r in here or records)
    measured_here = spec.tuned and any(r.source.startswith(TUNE_SOURCE) for r in here)
    measure = tune(knob, rounds=MORE_ROUNDS) if measured_here else spec.measure
    return Recommendation(
        knob=knob,
        title=first.title,
        service=first.service,
        applied=applied,
        verdict=verdict,
        recommended=positive,
        host_kind=kind,
        basis=basis,
        text=_text(applied, verdict, kind, basis),
        measure=measure,
        turn_off=spec.off,
        tuned=spec.tuned,
        measured_here=measured_here,
    )


def recommend(
    evidence: Evidence, facts: HostFacts, services: tuple[PlannedService, ...]
) -> tuple[Recommendation, ...]:
    """One recommendation per measured knob of each planned service."""
    planned = {s.name: s for s in services}
    by_knob: dict[str, list[Record]] = {}
    for record in evidence.records:
        if record.service in planned:
            by_knob.setdefault(record.knob, []).append(record)
    return tuple(
        recommend_knob(knob, recs, facts, planned[recs[0].service])
        for knob, recs in sorted(by_knob.items())
    )
