"""llama.cpp CPU builds side by side: llmhost's plan flags vs a generic AVX2-only build vs
llama.cpp's official CPU recipe (GGML_NATIVE=OFF GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON).

Builds llama-bench natively from the same source tree three times, then runs llama-bench
(pp512, tgN) on each, interleaved (A B C A B C ...) with repetitions, and writes medians, spreads
and ratios to benchmarks/results/cpu_builds-<host>.json.

    python benchmarks/cpu_builds.py --source TREE --model M.gguf [--model M2.gguf] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

from llmhost.config import Config
from llmhost.facts import gather
from llmhost.plan import cpu_cmake_flags
from llmhost.sources import LiveSource

COMMON = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_CCACHE=OFF",
]
AVX2_ONLY = [
    "-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
    "-DGGML_BMI2=ON", "-DGGML_AVX512=OFF", "-DGGML_AVX_VNNI=OFF",
]  # fmt: skip
OFFICIAL = ["-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON"]


def variants() -> dict[str, list[str]]:
    plan_flags, _ = cpu_cmake_flags(gather(LiveSource(), containers=False).cpu)
    return {"plan": list(plan_flags), "avx2": AVX2_ONLY, "official": OFFICIAL}


def build(source: Path, name: str, flags: list[str], work: Path, jobs: int) -> tuple[Path, float]:
    out = work / f"build-{name}"
    bench = out / "bin" / "llama-bench"
    if bench.exists():
        return bench, 0.0
    start = time.monotonic()
    subprocess.run(["cmake", "-S", str(source), "-B", str(out), *COMMON, *flags], check=True,
                   capture_output=True)  # fmt: skip
    targets = ["llama-bench"]
    if name == "official":  # plus every dynamically loaded ggml-cpu-<isa> variant
        listing = subprocess.run(["cmake", "--build", str(out), "--target", "help"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        targets += sorted({w.strip(".:") for w in listing.split() if w.startswith("ggml-cpu-")})
    proc = subprocess.run(
        ["cmake", "--build", str(out), "-j", str(jobs), "--target", *targets],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"build {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return bench, time.monotonic() - start


def run_bench(bench: Path, model: Path, threads: int, n_gen: int) -> dict[str, list[float]]:
    proc = subprocess.run(
        [str(bench), "-m", str(model), "-p", "512", "-n", str(n_gen), "-t", str(threads),
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, cwd=bench.parent,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{bench} failed: {proc.stderr[-1500:]}")
    result: dict[str, list[float]] = {}
    for row in json.loads(proc.stdout):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        result[test] = row["samples_ts"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/llmhost/cpu-builds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ns = parser.parse_args()
    jobs = os.cpu_count() or 2
    threads = Config().inference_cores if jobs > 12 else jobs
    ns.work.mkdir(parents=True, exist_ok=True)
    builds = {}
    for name, flags in variants().items():
        bench, seconds = build(ns.source, name, flags, ns.work, jobs)
        builds[name] = {"flags": flags, "build_s": seconds, "bench": str(bench)}
        print(f"built {name} in {seconds:.0f} s", flush=True)
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    for rnd in range(ns.rounds):
        for model in ns.model:
            for name, info in builds.items():
                for test, values in run_bench(
                    Path(info["bench"]), model, threads, ns.n_gen
                ).items():
                    samples.setdefault(model.name, {}).setdefault(name, {}).setdefault(
                        test, []
                    ).extend(values)
                print(f"round {rnd + 1} {model.name} {name} done", flush=True)
    summary: dict[str, dict] = {}
    for model, by_build in samples.items():
        summary[model] = {}
        for name, tests in by_build.items():
            summary[model][name] = {
                t: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
                for t, v in tests.items()
            }
        for other in ("avx2", "official"):
            summary[model][f"plan_vs_{other}"] = {
                t: summary[model]["plan"][t]["median"] / summary[model][other][t]["median"]
                for t in summary[model]["plan"]
            }
    result = {
        "benchmark": "cpu_builds",
        "host": platform.node(),
        "cpu": gather(LiveSource(), containers=False).cpu.microarchitecture,
        "threads": threads,
        "rounds": ns.rounds,
        "builds": builds,
        "summary": summary,
        "samples": samples,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    path = ns.out / f"cpu_builds-{platform.node()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for model, rows in summary.items():
        for key in ("plan_vs_avx2", "plan_vs_official"):
            print(model, key, {t: round(r, 3) for t, r in rows[key].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
