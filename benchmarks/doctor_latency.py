"""Wall time of `llmhost doctor --json` as a user runs it (a fresh process each time).

Target (Foundation issue): median <= 0.5 s on the CI machine. Writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.5


def measure(runs: int, args: list[str]) -> list[float]:
    cmd = [sys.executable, "-m", "llmhost.cli.main", "doctor", "--json", *args]
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache once
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"doctor exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("doctor_args", nargs="*", help="extra doctor arguments, after --")
    ns = parser.parse_args()
    times = measure(ns.runs, ns.doctor_args)
    result = {
        "benchmark": "doctor_latency",
        "host": platform.node(),
        "python": platform.python_version(),
        "runs": ns.runs,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "target_s": TARGET_S,
        "pass": statistics.median(times) <= TARGET_S,
        "times_s": times,
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "doctor_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"doctor --json: median {result['median_s']:.3f} s over {ns.runs} runs "
        f"(min {result['min_s']:.3f}, max {result['max_s']:.3f}); target {TARGET_S} s: "
        f"{'PASS' if result['pass'] else 'FAIL'}"
    )
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
