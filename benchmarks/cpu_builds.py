"""llama.cpp CPU builds side by side: llmhost's plan flags vs a generic AVX2-only build vs
llama.cpp's official CPU recipe (GGML_NATIVE=OFF GGML_BACKEND_DL=ON GGML_CPU_ALL_VARIANTS=ON).

Builds llama-bench natively from the same source tree once per variant, then runs llama-bench
(ppN, tgN) on each, interleaved per model (rounds of A B C, the order rotating each round) with
repetitions, and writes medians, spreads and ratios to benchmarks/results/cpu_builds-<host>.json
(rewritten after every round, so a run cut short keeps what it measured). With --serve it also
serves that model from each of --serve-variants' llama-server and measures it with `llmhost bench`.

    python benchmarks/cpu_builds.py --source TREE --model M.gguf [--model M2.gguf] [--rounds 3]
        [--plan-json plan-cpu.json] [--variants plan,avx2] [--serve M.gguf] [--time-budget 300]

--plan-json (the output of `llmhost plan --profile cpu --json`) takes the plan's CMake flags,
its llama-cpu thread count and CPU mask (llama-bench -t/-C/--cpu-strict) and llama-server
arguments from the plan instead of re-deriving them here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from _results import budgeted_rounds
from _serve import serve_and_bench

from llmhost.facts import gather, to_jsonable
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config
from llmhost.plan.evidence import Hardware
from llmhost.plan.planner import cpu_cmake_flags

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
STAMP = "llmhost-build.json"  # flags and build seconds, so a reused build still reports both


@dataclass(frozen=True)
class Pinning:
    """How llama-bench and llama-server run: the plan's llama-cpu threads and CPU mask."""

    threads: int
    cpu_mask: str | None = None  # hex, as llama.cpp's --cpu-mask takes it
    server_args: tuple[str, ...] = ()  # the plan's llama-cpu arguments (host/port replaced)

    def bench_args(self) -> list[str]:
        args = ["-t", str(self.threads)]
        if self.cpu_mask:
            args += ["-C", self.cpu_mask, "--cpu-strict", "1"]
        return args


@dataclass
class Build:
    name: str
    flags: list[str]
    dir: Path
    build_s: float | None = None
    backend: str | None = None  # the CPU backend llama-bench loaded (official: a variant .so)
    reused: bool = False
    targets: list[str] = field(default_factory=list)

    @property
    def bin(self) -> Path:
        return self.dir / "bin"


def read_plan(path: Path | None) -> tuple[list[str] | None, Pinning | None]:
    if path is None:
        return None, None
    plan = json.loads(path.read_text())
    svc = next(s for s in plan["services"] if s["name"] == "llama-cpu")
    args = list(svc["args"])
    mask = args[args.index("--cpu-mask") + 1] if "--cpu-mask" in args else None
    drop = {"--host", "--port"}
    kept = [a for i, a in enumerate(args) if a not in drop and (i == 0 or args[i - 1] not in drop)]
    return list(plan["build"]["llama_cpu_cmake_flags"]), Pinning(svc["threads"], mask, tuple(kept))


def variant_flags(names: list[str], plan_flags: list[str] | None) -> dict[str, list[str]]:
    if plan_flags is None:
        plan_flags = list(cpu_cmake_flags(gather(LiveSource(), containers=False).cpu)[0])
    known = {"plan": plan_flags, "avx2": AVX2_ONLY, "official": OFFICIAL}
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown variant(s) {sorted(unknown)}; choose from {sorted(known)}")
    return {n: known[n] for n in names}


def build(source: Path, b: Build, jobs: int, server: bool) -> None:
    """Configure and build what is missing; a finished build dir is reused (its stamp says how
    long it took)."""
    stamp = b.dir / STAMP
    prior = json.loads(stamp.read_text()) if stamp.exists() else {}
    if prior and prior.get("flags") != b.flags:
        shutil.rmtree(b.dir)
        prior = {}
    wanted = ["llama-bench"] + (["llama-server"] if server else [])
    built = set(prior.get("complete", []))
    if all((b.bin / t).exists() for t in wanted) and built >= set(wanted):
        b.build_s, b.reused, b.targets = prior.get("build_s"), True, wanted
        return
    start = time.monotonic()
    if not (b.dir / "CMakeCache.txt").exists():
        subprocess.run(["cmake", "-S", str(source), "-B", str(b.dir), *COMMON, *b.flags],
                       check=True, capture_output=True)  # fmt: skip
    targets = list(wanted)
    if b.name == "official":  # plus every dynamically loaded ggml-cpu-<isa> variant
        listing = subprocess.run(["cmake", "--build", str(b.dir), "--target", "help"],
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        targets += sorted({w.strip(".:") for w in listing.split() if w.startswith("ggml-cpu-")})
    proc = subprocess.run(
        ["cmake", "--build", str(b.dir), "-j", str(jobs), "--target", *targets],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"build {b.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    b.build_s = (prior.get("build_s") or 0.0) + time.monotonic() - start
    b.targets = wanted
    complete = sorted(built | set(wanted))
    stamp.write_text(json.dumps({"flags": b.flags, "build_s": b.build_s, "complete": complete}))


def run_bench(
    b: Build, model: Path, pin: Pinning, n_prompt: int, n_gen: int, reps: int
) -> dict[str, list[float]]:
    proc = subprocess.run(
        [str(b.bin / "llama-bench"), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
         *pin.bench_args(), "-r", str(reps), "-o", "json"],
        capture_output=True, text=True, cwd=b.bin,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{b.bin}/llama-bench failed: {proc.stderr[-1500:]}")
    loaded = re.search(r"loaded CPU backend from (\S+)", proc.stderr)
    b.backend = Path(loaded.group(1)).name if loaded else b.backend or "built in (static)"
    result: dict[str, list[float]] = {}
    for row in json.loads(proc.stdout):
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        result[test] = row["samples_ts"]
    return result


def serve_once(b: Build, model: Path, pin: Pinning, requests: int, max_tokens: int) -> dict:
    """Serve `model` from build b's llama-server with the plan's arguments and bench it."""
    args = list(pin.server_args) or ["--threads", str(pin.threads), "--ctx-size", "4096"]
    return serve_and_bench(b.bin / "llama-server", model, args, requests=requests,
                           max_tokens=max_tokens)  # fmt: skip


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}  # fmt: skip


def summarise(samples: dict[str, dict[str, dict[str, list[float]]]]) -> dict[str, dict]:
    summary: dict[str, dict] = {}
    for model, by_build in samples.items():
        summary[model] = {name: {t: stats(v) for t, v in tests.items()}
                          for name, tests in by_build.items()}  # fmt: skip
        for other in ("avx2", "official"):
            if "plan" in by_build and other in by_build:
                summary[model][f"plan_vs_{other}"] = {
                    t: summary[model]["plan"][t]["median"] / summary[model][other][t]["median"]
                    for t in summary[model]["plan"]
                    if t in summary[model][other]
                }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--variants", default="plan,avx2,official")
    parser.add_argument("--plan-json", type=Path, help="`llmhost plan --profile cpu --json`")
    parser.add_argument("--threads", type=int, help="default: the plan's, else all CPUs (<=12)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=1, help="llama-bench -r per round")
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--serve", type=Path, help="model to serve from each --serve-variants")
    parser.add_argument("--serve-variants", default="plan,avx2")
    parser.add_argument("--serve-rounds", type=int, default=3)
    parser.add_argument("--serve-requests", type=int, default=8)
    parser.add_argument("--serve-max-tokens", type=int, default=64)
    parser.add_argument(
        "--time-budget", type=float, help="seconds; start no round that the last one says won't fit"
    )
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/llmhost/cpu-builds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--out-file", type=Path, help="default: OUT/cpu_builds-<host>.json")
    ns = parser.parse_args()
    t0 = time.monotonic()
    names = ns.variants.split(",")
    serve_names = ns.serve_variants.split(",") if ns.serve else []
    plan_flags, pin = read_plan(ns.plan_json)
    cpus = os.cpu_count() or 2
    if pin is None:
        pin = Pinning(Config().inference_cores if cpus > 12 else cpus)
    if ns.threads:
        pin = Pinning(ns.threads, pin.cpu_mask, pin.server_args)
    ns.work.mkdir(parents=True, exist_ok=True)
    flags = variant_flags(names, plan_flags)
    builds = {n: Build(n, f, ns.work / f"build-{n}") for n, f in flags.items()}
    for b in builds.values():
        build(ns.source, b, ns.jobs, server=b.name in serve_names)
        print(f"built {b.name} in {b.build_s or 0:.0f} s{' (reused)' if b.reused else ''}",
              flush=True)  # fmt: skip
    if ns.build_only:
        return

    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    served: dict[str, list[dict]] = {}
    rounds_done: dict[str, int] = {}
    facts = gather(LiveSource(), containers=False)
    path = ns.out_file or ns.out / f"cpu_builds-{platform.node()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def write() -> None:
        result = {
            "benchmark": "cpu_builds",
            "host": platform.node(),
            "cpu": facts.cpu.microarchitecture,
            "hardware": to_jsonable(Hardware.from_facts(facts)),  # what evidence.py judges by
            "threads": pin.threads,
            "cpu_mask": pin.cpu_mask,
            "n_prompt": ns.n_prompt,
            "n_gen": ns.n_gen,
            "reps_per_round": ns.reps,
            "rounds": ns.rounds,
            "rounds_done": rounds_done,
            "builds": {
                n: {
                    "flags": b.flags,
                    "build_s": b.build_s,
                    "reused": b.reused,
                    "cpu_backend": b.backend,
                    "bench": str(b.bin / "llama-bench"),
                }
                for n, b in builds.items()
            },
            "summary": summarise(samples),
            "samples": samples,
        }
        if ns.serve:
            result["served"] = {
                "model": ns.serve.name,
                "requests": ns.serve_requests,
                "max_tokens": ns.serve_max_tokens,
                "server_args": [*pin.server_args, "--host", "127.0.0.1", "--port", "PORT"],
                "runs": served,
                "summary": {
                    n: {
                        k: stats([r[k] for r in runs])
                        for k in ("output_throughput", "median_ttft_ms", "median_tpot_ms")
                    }
                    for n, runs in served.items()
                },
            }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(path)

    def fits(estimate_s: float) -> bool:
        return ns.time_budget is None or time.monotonic() - t0 + estimate_s <= ns.time_budget

    last_s, last_bytes = 0.0, 1
    for model in ns.model:
        size = model.stat().st_size
        # a model's first round is estimated from the previous model's last, scaled by file size
        first = last_s * size / last_bytes
        for rnd, order in budgeted_rounds(
            ns.rounds, names, model.name, fits, lambda r, last, first=first: last if r else first
        ):
            start = time.monotonic()
            for name in order:
                for test, values in run_bench(
                    builds[name], model, pin, ns.n_prompt, ns.n_gen, ns.reps
                ).items():
                    samples.setdefault(model.name, {}).setdefault(name, {}).setdefault(
                        test, []
                    ).extend(values)
            rounds_done[model.name] = rnd + 1
            last_s, last_bytes = time.monotonic() - start, size
            write()
    if ns.serve:
        for _rnd, order in budgeted_rounds(ns.serve_rounds, serve_names, "serve", fits):
            for name in order:
                served.setdefault(name, []).append(
                    serve_once(builds[name], ns.serve, pin, ns.serve_requests, ns.serve_max_tokens)
                )
            write()
    write()
    for model, rows in summarise(samples).items():
        for key in ("plan_vs_avx2", "plan_vs_official"):
            if key in rows:
                print(model, key, {t: round(r, 3) for t, r in rows[key].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
