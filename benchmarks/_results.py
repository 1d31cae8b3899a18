"""benchmarks/cpu_builds.py result files pooled per model, for the script that judges them
(evidence.py; the retired summarize_h100_evidence.py summarised them too), so a run split over
several files (one per device call) reads as one run.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

# The Evidence issue's targets for the plan's build, per llama-bench test kind (pp, tg).
CPU_TARGETS = {"plan_vs_avx2": {"pp": 2.0, "tg": 1.0}, "plan_vs_official": {"pp": 1.0, "tg": 1.0}}


def rotation(names: list[str], round_index: int) -> list[str]:
    """Round r runs the names starting from the r-th, so no configuration always runs first."""
    k = round_index % len(names)
    return names[k:] + names[:k]


def budgeted_rounds(
    rounds: int,
    names: list[str],
    label: str,
    fits: Callable[[float], bool],
    estimate: Callable[[int, float], float] = lambda _rnd, last_s: last_s,
) -> Iterator[tuple[int, list[str]]]:
    """Yield (round, rotated names) while the next round, estimated from the last one's
    duration, still fits the time budget; the caller runs the round in the loop body."""
    last_s = 0.0
    for rnd in range(rounds):
        if not fits(estimate(rnd, last_s)):
            print(f"time budget: stopping before {label} round {rnd + 1}", flush=True)
            return
        start, order = time.monotonic(), rotation(names, rnd)
        yield rnd, order
        last_s = time.monotonic() - start
        print(f"{label} round {rnd + 1} {order} done in {last_s:.0f} s", flush=True)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _ratio_range(plan: list[float], other: list[float]) -> dict[str, float]:
    """Same index = same round (and rep), so paired ratios cancel drift between rounds; when the
    counts differ (files that ran different variants) no pairing holds: the widest range."""
    if len(plan) == len(other):
        pairs = [p / o for p, o in zip(plan, other, strict=True)]
        return {"min": min(pairs), "max": max(pairs)}
    return {"min": min(plan) / max(other), "max": max(plan) / min(other)}


def merge_cpu_runs(paths: list[Path]) -> dict:
    """Samples of every file for the same model, concatenated (each file: interleaved rounds).
    The files should come from one host; its description is taken from the last file."""
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    rounds: dict[str, int] = defaultdict(int)
    reps: dict[str, int] = {}
    sources: dict[str, list[str]] = defaultdict(list)
    meta: dict = {}
    for path in paths:
        data = json.loads(path.read_text())
        meta = {k: data.get(k) for k in ("host", "cpu", "threads", "cpu_mask", "n_prompt", "n_gen")}
        if "hardware" in data:
            meta["hardware"] = data["hardware"]
        meta["cpu_backend"] = {n: b.get("cpu_backend") for n, b in data.get("builds", {}).items()}
        for model, by_build in data["samples"].items():
            done = data.get("rounds_done", {}).get(model, data.get("rounds", 0))
            rounds[model] += done
            reps[model] = data.get("reps_per_round", 1)
            sources[model].append(path.name)
            for name, tests in by_build.items():
                for test, values in tests.items():
                    samples.setdefault(model, {}).setdefault(name, {}).setdefault(test, [])
                    samples[model][name][test].extend(values)
    models = {}
    for model, by_build in samples.items():
        row: dict = {
            "rounds": rounds[model],
            "reps_per_round": reps[model],
            "files": sources[model],
        }
        row.update({n: {t: stats(v) for t, v in tests.items()} for n, tests in by_build.items()})
        for key, limits in CPU_TARGETS.items():
            other = key.removeprefix("plan_vs_")
            if "plan" not in by_build or other not in by_build:
                continue
            ratios, paired, met = {}, {}, {}
            for test, plan_values in by_build["plan"].items():
                if test not in by_build[other]:
                    continue
                ratios[test] = row["plan"][test]["median"] / row[other][test]["median"]
                paired[test] = _ratio_range(plan_values, by_build[other][test])
                met[test] = ratios[test] >= limits[test[:2]]
            row[key] = ratios
            row[f"{key}_paired_range"] = paired
            row[f"{key}_target"] = {t: limits[t[:2]] for t in ratios}
            row[f"{key}_met"] = met
        models[model] = row
    return {**meta, "models": models}
