"""The tuning knobs as data: llama-bench setups derived from the planned llama-cpu service, and
the comparisons that judge one knob as a pair of setups differing by that knob alone.

A setup changes the plan's llama-cpu knobs (`LlamaKnobs` fields) and may add what llama-server's
knobs do not say (an environment); `bench_args` turns it into llama-bench's arguments, so what
is measured is what the plan serves with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from llmhost.cpulist import cpumask_hex

if TYPE_CHECKING:
    from llmhost.plan.planner import CorePlan
    from llmhost.plan.services import LlamaKnobs

POOL = "pool"  # a setup that needs free 2 MiB pages of the model's size
SMT = "smt"  # a setup that needs SMT siblings on the inference cores


@dataclass(frozen=True)
class Comparison:
    """A knob as a pair of benchmark configurations that differ only by that knob."""

    knob: str
    title: str
    scope: str  # "cpu": judged by CPU microarchitecture; "gpu": by GPU architecture
    service: str
    candidate: str
    baseline: str
    compares: str


@dataclass(frozen=True)
class Setup:
    """One llama-bench configuration of llama-cpu."""

    name: str
    change: Mapping[str, object] = field(default_factory=dict)  # LlamaKnobs fields replaced
    env: Mapping[str, str] = field(default_factory=dict)  # beyond the knobs' environment
    needs: str | None = None  # POOL or SMT: what the host must offer, else the setup is skipped
    siblings: bool = False  # a thread on every logical CPU of the inference cores

    def knobs(self, base: LlamaKnobs, cores: CorePlan) -> LlamaKnobs:
        if self.siblings:
            base = replace(base, cpu_mask=cores.inference_cpus, threads=len(cores.inference_cpus))
        return replace(base, **self.change)  # type: ignore[arg-type]

    def bench_args(self, base: LlamaKnobs, cores: CorePlan) -> list[str]:
        """llama-bench's arguments beyond the model and the test sizes."""
        k = self.knobs(base, cores)
        args = ["-t", str(k.threads)]
        if k.cpu_mask:
            args += ["-C", cpumask_hex(k.cpu_mask), "--cpu-strict", "1"]
        if k.load_mode:  # llama-bench takes llama-server's modes
            args += ["-lm", k.load_mode]
        if k.flash_attn != "auto":
            args += ["-fa", k.flash_attn]
        return args

    def locks(self, base: LlamaKnobs, cores: CorePlan) -> bool:
        """It locks the weights in RAM: a container run needs the memlock limit lifted."""
        return self.knobs(base, cores).mlock

    def bench_env(self, base: LlamaKnobs, cores: CorePlan) -> dict[str, str]:
        knobs_env = self.knobs(base, cores).env()
        env = {k: v for k, v in knobs_env.items() if k == "GLIBC_TUNABLES"}
        return {**env, **self.env}


def _frozen(**items: object) -> Mapping[str, object]:
    return MappingProxyType(items)


# The baseline knobs (`base`) are the plan's llama-cpu knobs pinned to the planned compute CPUs,
# weights mmapped, flash attention at llama.cpp's default; each setup changes that.
MMAP = _frozen(load_mode_none=False, hugetlb_malloc=False, mlock=False)
SETUPS: tuple[Setup, ...] = (
    Setup("unpinned", _frozen(**MMAP, cpu_mask=())),
    Setup("pinned", MMAP),
    Setup("pinned_hugetlb", _frozen(load_mode_none=True, hugetlb_malloc=True, mlock=False),
          needs=POOL),
    Setup("pinned_thp", _frozen(load_mode_none=True, hugetlb_malloc=False, mlock=False),
          env=MappingProxyType({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})),
    Setup("pinned_mlock", _frozen(load_mode_none=False, hugetlb_malloc=False, mlock=True)),
    Setup("pinned_fa_off", _frozen(**MMAP, flash_attn="off")),
    Setup("pinned_smt", MMAP, needs=SMT, siblings=True),
)  # fmt: skip
SETUP = {s.name: s for s in SETUPS}

CPU_KNOBS = (
    Comparison("cpu.pinning", "CPU pinning", "cpu", "llama-cpu", "pinned", "unpinned",
               "-C <mask> --cpu-strict 1 vs the same threads unpinned"),
    Comparison("cpu.hugetlb_weights", "weights on 2 MiB hugetlb pages", "cpu", "llama-cpu",
               "pinned_hugetlb", "pinned",
               "--load-mode none + GLIBC_TUNABLES=glibc.malloc.hugetlb=2 vs mmap, both pinned"),
    Comparison("cpu.pinning_hugetlb", "CPU pinning + hugetlb weights", "cpu", "llama-cpu",
               "pinned_hugetlb", "unpinned",
               "pinned + --load-mode none + glibc.malloc.hugetlb=2 vs unpinned mmap"),
    Comparison("cpu.thp_weights", "weights on transparent hugepages", "cpu", "llama-cpu",
               "pinned_thp", "pinned",
               "--load-mode none + GLIBC_TUNABLES=glibc.malloc.hugetlb=1 vs mmap, both pinned"),
)  # fmt: skip
# Measured by `llmhost tune` only (the lab benchmarks never ran them).
TUNE_KNOBS = (
    Comparison("cpu.mlock", "weights locked in RAM (mlock)", "cpu", "llama-cpu", "pinned_mlock",
               "pinned", "--load-mode mlock vs mmap, both pinned"),
    Comparison("cpu.flash_attn", "flash attention on the CPU (llama.cpp default)", "cpu",
               "llama-cpu", "pinned", "pinned_fa_off", "-fa auto (on) vs -fa off, both pinned"),
    Comparison("cpu.smt_threads", "a thread on every SMT sibling", "cpu", "llama-cpu",
               "pinned_smt", "pinned",
               "one thread per logical CPU of the inference cores vs one per core, pinned"),
)  # fmt: skip
TUNED = {c.knob: c for c in (*CPU_KNOBS, *TUNE_KNOBS)}  # what `llmhost tune` measures

# Other llama.cpp builds `llmhost tune --compare-build NAME=LLAMA_BENCH` runs beside the plan's,
# pinned as the plan runs it: name -> (title, what the other build is).
OTHER_BUILDS = {
    "official": ("CPU build with the plan's ISA flags vs official",
                 "plan's explicit ISA switches vs GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS"),
    "avx2": ("CPU build with the plan's ISA flags vs AVX2", "plan's explicit ISA switches vs "
             "AVX2-only build"),
    "threadpool": ("CPU build with OpenMP (llama.cpp's default) vs ggml's own threadpool",
                   "plan's build vs the same flags with GGML_OPENMP=OFF"),
}  # fmt: skip


def build_setup(name: str) -> Setup:
    """The pinned setup, run by another build's llama-bench."""
    return replace(SETUP["pinned"], name=f"build_{name}")


def build_comparison(name: str) -> Comparison:
    title, compares = OTHER_BUILDS[name]
    return Comparison(f"cpu_build.plan_vs_{name}", title, "cpu", "llama-cpu", "pinned",
                      build_setup(name).name, compares)  # fmt: skip


# Every comparison `llmhost tune` can record, by knob: the knobs and the other builds.
COMPARISONS = {**TUNED, **{c.knob: c for c in map(build_comparison, OTHER_BUILDS)}}
