"""Model facts (issue 19, item 2): gguf.GGUFReader against llmhost.facts.gguf_header over
llama.cpp's vocab GGUFs, and `llmhost plan` / `doctor --json` wall time with such a model
configured.

Each CLI run is a fresh process, as a user runs it, with bytecode cached under a temporary
PYTHONPYCACHEPREFIX (as an installed package has it) whatever PYTHONDONTWRITEBYTECODE says.
"cold" runs remove the model's disk-cache entry first (the header is walked), "warm" runs keep it.
Target: median <= 0.5 s with any model configured. Writes benchmarks/results/model_facts.json.

    python3 benchmarks/model_facts.py [--runs 7] [--cli-models llama-spm llama-bpe qwen2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from llmhost.facts import gguf_header, model_cache
from llmhost.facts.models import read_model_header

TARGET_S = 0.5
REPO = Path(__file__).resolve().parents[1]  # the llmhost these processes run
CACHE = Path(os.environ.get("LLMHOST_CACHE") or Path.home() / ".cache" / "llmhost")
VOCAB_GLOBS = (
    "llama-src/*/llama.cpp/models/ggml-vocab-*.gguf",
    "sdist/*/vendor/llama.cpp/models/ggml-vocab-*.gguf",
)


def vocab_files() -> dict[str, Path]:
    """One file per vocabulary name (the first found)."""
    found: dict[str, Path] = {}
    for pattern in VOCAB_GLOBS:
        for path in sorted(CACHE.glob(pattern)):
            found.setdefault(path.stem.removeprefix("ggml-vocab-"), path)
    return found


def time_readers(path: Path, runs: int, with_gguf: bool) -> dict:
    row: dict = {"file": str(path), "bytes": path.stat().st_size}
    times = []
    for _ in range(runs):
        gguf_header._read_cached.cache_clear()
        start = time.perf_counter()
        gguf_header.read_gguf_header(path)
        times.append(time.perf_counter() - start)
    row["gguf_header_s"] = statistics.median(times)
    try:
        ours: object = read_model_header(path)
    except Exception as exc:  # reported, as the reference's failure is
        ours = f"{type(exc).__name__}: {exc}"
    if with_gguf:
        import gguf

        from llmhost.devtools.gguf_reference import reference_model_header

        start = time.perf_counter()
        reader = gguf.GGUFReader(path, "r")
        row["gguf_reader_s"] = time.perf_counter() - start
        row["speedup"] = row["gguf_reader_s"] / row["gguf_header_s"]
        try:
            reference: object = reference_model_header(path, reader)
        except Exception as exc:
            reference = f"{type(exc).__name__}: {exc}"
        both_refuse = isinstance(ours, str) and isinstance(reference, str)
        row["model_header_identical"] = ours == reference or both_refuse
        if ours != reference:
            row["ours"], row["reference"] = str(ours), str(reference)
    return row


def run_cli(
    args: list[str], env: dict[str, str], before: Callable[[], None] | None = None
) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh `llmhost` process."""
    if before is not None:
        before()
    cmd = [sys.executable, "-m", "llmhost.cli.main", *args]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # doctor exits 1 when a check fails
        raise SystemExit(
            f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[-300:]}"
        )
    return wall, (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)


def summary(samples: list[tuple[float, float]]) -> dict:
    walls = [w for w, _ in samples]
    return {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(c for _, c in samples),
        "times_s": walls,
    }


def time_cli(models: dict[str, Path], runs: int, workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    configs = {"none": workdir / "none.yaml"}
    configs["none"].write_text(f"models_dir: {workdir}\n")
    for name, path in models.items():
        configs[name] = workdir / f"{name}.yaml"
        configs[name].write_text(
            f"models_dir: {path.parent}\nservices:\n  llama-cpu:\n    model: {path.name}\n"
        )
    results: dict = {}
    for command in (["plan"], ["doctor", "--json"]):
        label = " ".join(command)
        run_cli(["--config", str(configs["none"]), *command], env)  # compile, warm page cache
        by_model: dict = {}
        for name, config in configs.items():
            args = ["--config", str(config), *command]
            modes = {"warm": None} if name == "none" else {"cold": models[name], "warm": None}
            for mode, cold_path in modes.items():

                def forget(path: Path | None = cold_path) -> None:
                    if path is not None:
                        model_cache._entry(model_cache._identity(path.resolve())).unlink(
                            missing_ok=True
                        )

                run_cli(args, env)  # the warm runs find the entry this leaves
                samples = [run_cli(args, env, forget) for _ in range(runs)]
                by_model[name if name == "none" else f"{name} ({mode})"] = summary(samples)
                print(f"{label:14} {name:12} {mode:5} median {summary(samples)['median_s']:.3f} s")
        results[label] = by_model
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="CLI runs per configuration")
    parser.add_argument("--reader-runs", type=int, default=5, help="gguf_header runs per file")
    parser.add_argument("--no-gguf-reader", action="store_true", help="skip the slow reference")
    parser.add_argument("--cli-models", nargs="*", default=["llama-spm", "llama-bpe", "qwen2"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ns = parser.parse_args()

    vocabs = vocab_files()
    if not vocabs:
        raise SystemExit(f"no ggml-vocab-*.gguf under {CACHE} ({', '.join(VOCAB_GLOBS)})")
    readers = {}
    for name, path in vocabs.items():
        readers[name] = time_readers(path, ns.reader_runs, not ns.no_gguf_reader)
        row = readers[name]
        print(
            f"{name:18} gguf_header {row['gguf_header_s'] * 1000:7.1f} ms"
            + (f"  GGUFReader {row['gguf_reader_s']:6.2f} s" if "gguf_reader_s" in row else "")
            + ("" if row.get("model_header_identical", True) else "  DIFFERENT")
        )
    with tempfile.TemporaryDirectory() as tmp:
        cli = time_cli({m: vocabs[m] for m in ns.cli_models if m in vocabs}, ns.runs, Path(tmp))
    with_model = [s["median_s"] for by in cli.values() for k, s in by.items() if k != "none"]
    load = os.getloadavg()
    result = {
        "benchmark": "model_facts",
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "readers": readers,
        "cli": cli,
        "target_s": TARGET_S,
        "worst_median_with_model_s": max(with_model),
        "pass": max(with_model) <= TARGET_S,
        "all_identical": all(r.get("model_header_identical", True) for r in readers.values()),
    }
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "model_facts.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"worst median with a model: {result['worst_median_with_model_s']:.3f} s; "
        f"target {TARGET_S} s: {'PASS' if result['pass'] else 'FAIL'} (load {load[0]:.1f})"
    )
    return 0 if result["pass"] and result["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
