"""The llama-cpu tuning knobs measured on this host: unpinned vs pinned vs pinned + hugetlb weights
(exactly the plan's GLIBC_TUNABLES) vs pinned + THP weights, with llama-bench, interleaved rounds.

The threads and CPU mask are the plan's (`inference_cores`, capped to this host). The hugetlb run
needs a free 2 MiB pool of the model's size (`sysctl -w vm.nr_hugepages=N`) and fails unless it
really drew pages from it. Writes benchmarks/results/cpu_knobs-<host>.json; then run
`python benchmarks/evidence.py` to feed it into llmhost's evidence.

    python benchmarks/cpu_knobs.py --llama-bench PATH/llama-bench --model M.gguf [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
from pathlib import Path

from llmhost.config import Config
from llmhost.cpulist import cpumask_hex
from llmhost.evidence import Hardware
from llmhost.facts import gather, to_jsonable
from llmhost.plan import HUGETLB_ENV, choose_cores
from llmhost.sources import LiveSource

THP_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def configurations(mask: str, threads: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Names as benchmarks/evidence.py compares them: (llama-bench arguments, environment)."""
    pinned = ["-t", str(threads), "-C", mask, "--cpu-strict", "1"]
    return {
        "unpinned": (["-t", str(threads)], {}),
        "pinned": (pinned, {}),
        "pinned_hugetlb": ([*pinned, "-lm", "none"], dict(HUGETLB_ENV)),
        "pinned_thp": ([*pinned, "-lm", "none"], THP_ENV),
    }


def free_hugepages() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("HugePages_Free:"):
            return int(line.split()[1])
    return 0


def run(cmd: list[str], env: dict[str, str]) -> tuple[list[dict], int]:
    """llama-bench's JSON rows, and the fewest free 2 MiB pages seen while it ran."""
    lowest = [free_hugepages()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            lowest[0] = min(lowest[0], free_hugepages())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr[-1500:]}")
    return json.loads(proc.stdout), lowest[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-bench", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2, help="llama-bench -r per round")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--cores", type=int, default=None, help="default: the config's, capped")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ns = parser.parse_args()
    facts = gather(LiveSource(), containers=False)
    count = ns.cores or min(Config().inference_cores, facts.cpu.physical_cores - 1)
    cores = choose_cores(facts.cpu, count)
    mask, threads = cpumask_hex(cores.compute_cpus), len(cores.compute_cpus)
    need = ns.model.stat().st_size // (2 << 20) + 1
    if free_hugepages() < need:
        raise SystemExit(
            f"the hugetlb run needs {need} free 2 MiB pages: sysctl -w vm.nr_hugepages={need + 64}"
        )
    size = f"-p {ns.prompt} -n {ns.gen} -r {ns.reps} -o json".split()
    base = [str(ns.llama_bench), "-m", str(ns.model), *size]
    runs: dict[str, dict[str, list[float]]] = {}
    model_type = ns.model.name
    for rnd in range(ns.rounds):
        for name, (args, env) in configurations(mask, threads).items():
            before = free_hugepages()
            rows, lowest = run([*base, *args], env)
            if name == "pinned_hugetlb" and lowest >= before:
                raise SystemExit("the hugetlb run took no pages from the pool: glibc too old?")
            for row in rows:
                test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
                runs.setdefault(name, {}).setdefault(test, []).extend(row["samples_ts"])
                model_type = row.get("model_type", model_type)
            print(f"round {rnd + 1} {name} done", flush=True)
    result = {
        "benchmark": "cpu_knobs",
        "host": platform.node(),
        "hardware": to_jsonable(Hardware.from_facts(facts)),
        "model_type": model_type,
        "threads": threads,
        "cpu_mask": mask,
        "rounds": ns.rounds,
        "configurations": {
            n: {"args": a, "env": e} for n, (a, e) in configurations(mask, threads).items()
        },
        "runs": runs,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    path = ns.out / f"cpu_knobs-{platform.node()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}; now: python benchmarks/evidence.py")


if __name__ == "__main__":
    main()
