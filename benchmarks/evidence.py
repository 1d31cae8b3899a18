"""Benchmark results -> llmhost/data/evidence.json: one record per (knob, hardware) with the
measured ratios, their spread, the verdict (llmhost.plan.evidence's rule) and the source file.

Nothing here is a measurement: every number and every hardware name is read from the result
files. Re-run after adding results; tests fail while the packaged file differs from this output.

    python benchmarks/evidence.py [--results benchmarks/results] [--out PATH] [--check]

Readers (add one per new result format; each yields Records):
  <run>/summary.json            the H100 runs' summary (retired summarize_h100.py): CPU knob
                                matrix + GPU llama-bench
  **/cpu_knobs-<host>.json      the CPU knob matrix of the retired benchmarks/cpu_knobs.py
  **/tune*.json                 `llmhost tune --json`: its knobs and builds judged again from its
                                samples, pooled over every run of one kind of host, model and
                                test sizes (two runs of one comparison are one sample set)
  **/cpu_builds-*.json          benchmarks/cpu_builds.py: plan flags vs AVX2 vs official build;
                                every file of one kind of host and thread count pooled per model
                                (a run split over device calls is judged as one run)
Files under a `superseded/` folder measured what an older llmhost planned (kept as data, for the
before/after in docs/performance.md); they are not evidence for what it plans now.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from _results import merge_cpu_runs  # beside this script, first on sys.path

from llmhost.facts import to_jsonable
from llmhost.facts.gpu import architecture_for
from llmhost.facts.uarch import _AMD_RANGES, _INTEL_MODELS, microarchitecture
from llmhost.plan.evidence import (
    FORMAT,
    MIN_SAMPLES,
    NOISE_THRESHOLD,
    RULE,
    Hardware,
    Record,
)
from llmhost.verify.tune.judge import compare
from llmhost.verify.tune.knobs import COMPARISONS, CPU_KNOBS, Comparison, build_comparison

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "llmhost" / "data" / "evidence.json"
SUPERSEDED = "superseded"


# The lab's knobs: `llmhost tune` measures the CPU ones (llmhost.verify.tune.knobs).
GPU_KNOBS = (
    Comparison("gpu.flash_attn", "flash attention (llama.cpp default)", "gpu", "llama-gpu",
               "fa=on,graphs=on", "fa=off,graphs=on", "-fa 1 vs -fa 0, CUDA graphs on"),
    Comparison("gpu.cuda_graphs", "CUDA graphs (llama.cpp default)", "gpu", "llama-gpu",
               "fa=on,graphs=on", "fa=on,graphs=off",
               "CUDA graphs vs GGML_CUDA_DISABLE_GRAPHS=1, flash attention on"),
)  # fmt: skip
# benchmarks/cpu_builds.py names its builds plan, avx2 and official.
BUILD_KNOBS = (
    *(replace(build_comparison(b), candidate="plan", baseline=b) for b in ("avx2", "official")),
    Comparison("cpu_build.amx", "AMX kernels in the CPU build", "cpu", "llama-cpu", "amx",
               "noamx", "plan's ISA with AMX (llmhost's source fix applied) vs the same without "
               "AMX (benchmarks/device/amx_check.py)"),
)  # fmt: skip
# The H100 runs (the retired h100_driver.sh) named the CPU configurations after its 8 threads.
H100_CPU_NAMES = {
    "unpinned": "threads8",
    "pinned": "pinned8",
    "pinned_hugetlb": "pinned8_hugetlb",
    "pinned_thp": "pinned8_thp",
}


# ---------------------------------------------------------------- hardware from result files


def lscpu_hardware(text: str) -> Hardware:
    """`lscpu` output as the benchmark host printed it."""
    info = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}
    vendor = info.get("Vendor ID")
    family, model = int(info.get("CPU family", -1)), int(info.get("Model", -1))
    sockets, stepping = int(info.get("Socket(s)", 1)), int(info.get("Stepping", 0))
    return Hardware(
        vendor=vendor,
        microarchitecture=microarchitecture(vendor or "", family, model, stepping),
        physical_cores=int(info["Core(s) per socket"]) * sockets,
        logical_cpus=int(info["CPU(s)"]),
        virtual="Hypervisor vendor" in info,
    )


def vendor_of(uarch: str) -> str | None:
    """The vendor a microarchitecture name belongs to, from llmhost's own tables."""
    if uarch in _INTEL_MODELS.values():
        return "GenuineIntel"
    if uarch in {row[3] for row in _AMD_RANGES}:
        return "AuthenticAMD"
    return None


def _rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def _planned_cc(path: Path) -> tuple[int, int] | None:
    """The GPU's compute capability, from the plan the run recorded (`llmhost plan --json`)."""
    if not path.exists():
        return None
    arch = (json.loads(path.read_text())["build"]["torch_cuda_arch_list"] or "").split(";")[0]
    major, _, minor = arch.partition(".")
    return (int(major), int(minor or 0)) if major else None


# ---------------------------------------------------------------- readers


def read_summary(path: Path, source: str) -> Iterator[Record]:
    """An H100 run's summary (the retired summarize_h100.py), its raw files beside it."""
    root, summary = path.parent, json.loads(path.read_text())
    lscpu = root / "lscpu.txt"
    cpu = lscpu_hardware(lscpu.read_text()) if lscpu.exists() else Hardware()
    for key, section in summary.items():
        if not key.startswith("cpu") or "runs" not in section or cpu.microarchitecture is None:
            continue
        raw = sorted((root / "cpu").glob("cpu-*.json"))
        workload = _rows(raw[0])[0]["model_type"] if raw else key
        for c in CPU_KNOBS:
            record = compare(c, {workload: section["runs"]}, H100_CPU_NAMES, cpu, source)
            if record:
                yield record
    bench = summary.get("gpu", {}).get("llama_bench")
    if bench:
        rows = _rows(root / "llama-bench-graphs-on.json")
        cc = _planned_cc(root / "plan-gpu.json")
        gpu = replace(
            cpu,
            gpu_name=rows[0]["gpu_info"] if rows else None,
            gpu_architecture=architecture_for(cc),
        )
        workload = rows[0]["model_type"] if rows else "gpu"
        configs = {
            name: {test: v["samples"] for test, v in tests.items() if isinstance(v, dict)}
            for name, tests in bench.items()
        }
        for c in GPU_KNOBS:
            record = compare(c, {workload: configs}, {}, gpu, source)
            if record:
                yield record


def read_cpu_knobs(data: dict, source: str) -> Iterator[Record]:
    hardware = Hardware(**data["hardware"])
    for c in CPU_KNOBS:
        record = compare(c, {data["model_type"]: data["runs"]}, {}, hardware, source)
        if record:
            yield record


def cpu_builds_hardware(data: dict) -> Hardware:
    """The host a cpu_builds.py file ran on, its GPU left out: the builds compared are CPU-only."""
    if "hardware" in data:
        return replace(Hardware(**data["hardware"]), gpu_name=None, gpu_architecture=None)
    # the first cpu_builds.py results carry the microarchitecture and thread count only
    uarch = data["cpu"]
    return Hardware(
        vendor=vendor_of(uarch), microarchitecture=uarch, threads_used=data.get("threads")
    )


def read_cpu_builds(paths: list[Path], results: Path) -> Iterator[Record]:
    """One record per knob for each kind of host and thread count, over every file of it with
    samples pooled per model: one file of a split run has too few samples to judge alone."""
    runs: dict[tuple[Hardware, int | None], list[Path]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if data.get("samples"):
            runs.setdefault((cpu_builds_hardware(data), data.get("threads")), []).append(path)
    for (hardware, _), files in runs.items():
        merged = merge_cpu_runs(files)
        source = ", ".join(_source(p, results) for p in files)
        for c in BUILD_KNOBS:
            record = compare(c, merged["models"], {}, hardware, source)
            if record:
                yield record


def read_tunes(paths: list[Path], results: Path) -> Iterator[Record]:
    """`llmhost tune` results judged again with the samples of every run of the same
    comparison pooled: one kind of host, one model, the same test sizes."""
    runs: dict[tuple, list[dict]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        tests = tuple(sorted({t for tests in data["runs"].values() for t in tests}))
        key = (Hardware(**data["hardware"]), data["workload"], tests)
        runs.setdefault(key, []).append({**data, "path": path})
    for (hardware, workload, _), files in runs.items():
        pooled: dict[str, dict[str, list[float]]] = {}
        for data in files:
            for setup, tests in data["runs"].items():
                for test, samples in tests.items():
                    pooled.setdefault(setup, {}).setdefault(test, []).extend(samples)
        source = ", ".join(_source(d["path"], results) for d in files)
        knobs = dict.fromkeys(r["knob"] for d in files for r in d["records"])
        for knob in knobs:
            record = compare(COMPARISONS[knob], {workload: pooled}, {}, hardware, source)
            if record:
                yield record


def _source(path: Path, results: Path) -> str:
    return f"benchmarks/results/{path.relative_to(results).as_posix()}"


def read_results(results: Path) -> list[Record]:
    records: list[Record] = []
    builds: list[Path] = []
    tunes: list[Path] = []
    for path in sorted(results.rglob("*.json")):
        if SUPERSEDED in path.relative_to(results).parts:
            continue
        source = _source(path, results)
        if path.name == "summary.json":
            records += read_summary(path, source)
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        kind = data.get("benchmark") if isinstance(data, dict) else None
        if kind == "cpu_knobs":
            records += read_cpu_knobs(data, source)
        elif kind == "cpu_builds":
            builds.append(path)
        elif kind == "llmhost tune":
            tunes.append(path)
    records += read_cpu_builds(builds, results)
    records += read_tunes(tunes, results)
    return sorted(records, key=lambda r: (r.knob, r.hardware.microarchitecture or "", r.source))


def build_evidence(results: Path = RESULTS) -> dict:
    return {
        "format": FORMAT,
        "generated_by": "benchmarks/evidence.py",
        "noise_threshold": NOISE_THRESHOLD,
        "min_samples": MIN_SAMPLES,
        "rule": RULE,
        "records": to_jsonable(read_results(results)),
    }


def render(evidence: dict) -> str:
    return json.dumps(evidence, indent=2) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is out of date")
    ns = parser.parse_args()
    text = render(build_evidence(ns.results))
    if ns.check:
        current = ns.out.read_text() if ns.out.exists() else ""
        print(f"{ns.out}: {'up to date' if current == text else 'out of date'}")
        return 0 if current == text else 1
    ns.out.write_text(text)
    records = json.loads(text)["records"]
    for r in records:
        hw = r["hardware"]["gpu_architecture" if r["scope"] == "gpu" else "microarchitecture"]
        print(f"{r['knob']:<28} {r['verdict']:<9} {hw} ({r['source']})")
    print(f"wrote {ns.out} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
