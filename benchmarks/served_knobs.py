"""The llama-cpu knobs on the served endpoint: llama-server as llama.cpp runs it by default vs
pinned vs pinned + mmap+mlock vs pinned + hugetlb weights (the plan's) vs pinned + THP weights,
each measured with `llmhost bench` (concurrency 1), interleaved rounds with a rotating order.

Each run also records what the kernel shows of the running server, so a knob that silently did
not take effect is caught: VmLck (mlock), Private_Hugetlb and AnonHugePages (smaps_rollup).
Writes benchmarks/results/served_knobs-<host>.json.

    python benchmarks/served_knobs.py --server PATH/llama-server --model M.gguf [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

from _results import rotation
from _serve import serve_and_bench

from llmhost.cpulist import cpumask_hex
from llmhost.facts import gather, to_jsonable
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config
from llmhost.plan.evidence import Hardware
from llmhost.plan.planner import choose_cores
from llmhost.plan.services import LlamaKnobs
from llmhost.verify.tune.knobs import SETUP

METRICS = ("output_throughput", "median_ttft_ms", "median_tpot_ms")


def weights_env(name: str) -> dict[str, str]:
    """The environment `llmhost tune`'s setup `name` runs with (glibc's hugetlb tunables)."""
    knobs = LlamaKnobs(port=0, model=None, ctx_size=0, parallel=1, kv_unified=False,
                       cache_type="f16", threads=1)  # fmt: skip
    return SETUP[name].bench_env(knobs, None)  # type: ignore[arg-type]  (no siblings: unused)


def configurations(mask: str, threads: int, ctx: int) -> dict[str, tuple[list[str], dict]]:
    base = ["--threads", str(threads), "--threads-batch", str(threads), "--ctx-size", str(ctx)]
    pinned = [*base, "--cpu-mask", mask, "--cpu-strict", "1"]
    return {
        "default": (base, {}),
        "pinned": (pinned, {}),
        "pinned_mlock": ([*pinned, "--load-mode", "mmap+mlock"], {}),  # --mlock is gone
        "pinned_hugetlb": ([*pinned, "--load-mode", "none"], weights_env("pinned_hugetlb")),
        "pinned_thp": ([*pinned, "--load-mode", "none"], weights_env("pinned_thp")),
    }


def kernel_view(pid: int) -> dict[str, int]:
    """kB locked, on hugetlb pages and on transparent hugepages, for the server process."""
    seen = {"vm_lck_kb": 0, "private_hugetlb_kb": 0, "anon_huge_kb": 0}
    fields = {"VmLck:": "vm_lck_kb", "Private_Hugetlb:": "private_hugetlb_kb",
              "AnonHugePages:": "anon_huge_kb"}  # fmt: skip
    for name in ("status", "smaps_rollup"):
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            key = line.split(":", 1)[0] + ":"
            if key in fields:
                seen[fields[key]] = int(line.split()[1])
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", type=Path, required=True, help="llama-server binary")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ns = parser.parse_args()
    facts = gather(LiveSource(), containers=False)
    cores = choose_cores(facts.cpu, min(Config().inference_cores, facts.cpu.physical_cores - 1))
    mask, threads = cpumask_hex(cores.compute_cpus), len(cores.compute_cpus)
    configs = configurations(mask, threads, ns.ctx_size)
    names = list(configs)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(ns.rounds):
        order = rotation(names, rnd)
        for name in order:
            args, env = configs[name]
            result = serve_and_bench(ns.server, ns.model, args, env=env, probe=kernel_view,
                                     requests=ns.requests, max_tokens=ns.max_tokens)  # fmt: skip
            if name == "pinned_mlock" and result["vm_lck_kb"] == 0:
                raise SystemExit("mmap+mlock locked nothing (VmLck 0): raise the memlock ulimit")
            if name == "pinned_hugetlb" and result["private_hugetlb_kb"] == 0:
                raise SystemExit("no hugetlb pages mapped: reserve a pool (vm.nr_hugepages)")
            runs[name].append(result)
            print(f"round {rnd + 1} {name}: {result['output_throughput']:.1f} tok/s", flush=True)
    summary: dict[str, dict] = {}
    for name, results in runs.items():
        summary[name] = {}
        for metric in METRICS:
            values = [r[metric] for r in results]
            base = statistics.median(r[metric] for r in runs["default"])
            summary[name][metric] = {
                "median": statistics.median(values), "min": min(values), "max": max(values),
                "vs_default": statistics.median(values) / base,
            }  # fmt: skip
    out = {
        "benchmark": "served_knobs",
        "host": platform.node(),
        "hardware": to_jsonable(Hardware.from_facts(facts)),
        "model": ns.model.name,
        "threads": threads,
        "cpu_mask": mask,
        "rounds": ns.rounds,
        "requests": ns.requests,
        "max_tokens": ns.max_tokens,
        "configurations": {n: {"args": a, "env": e} for n, (a, e) in configs.items()},
        "runs": runs,
        "summary": summary,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    path = ns.out / f"served_knobs-{platform.node()}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    for name, metrics in summary.items():
        print(name, {m: round(v["vs_default"], 3) for m, v in metrics.items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
