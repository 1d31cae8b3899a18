"""On an AMX host without Docker: the CPU image's self-test, natively, for each AMX variant that
benchmarks/device/amx_variants.py built, and AMX's speed against the same build without it.

Each variant runs through the Debian loader and libraries it was built against, so a binary from
the image's builder runs on any glibc. The self-test is llmhost.verify.selftest's own script
(llama-bench on the three synthetic models, with and without the extra-buffer kernels); a crash
is read back from the kernel log and the library's bytes as `llmhost build` would. The speed
rounds interleave `fixed` (AMX, source fix) and `noamx`, and are written in cpu_builds.py's
format as the variants `amx` and `noamx`, which benchmarks/evidence.py turns into the
cpu_build.amx record.

    python benchmarks/device/amx_check.py --variants .device/amx --out OUT [--model M.gguf ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from llmhost.facts import gather
from llmhost.facts.sources import LiveSource
from llmhost.plan.evidence import Hardware
from llmhost.verify import selftest

VARIANTS = ("unfixed", "fixed", "noamx")


def variant_dir(bundle: Path, variant: str, work: Path) -> Path:
    """bin/ with libggml-cpu.so* replaced by the variant's library."""
    out = work / variant
    if not out.exists():
        shutil.copytree(bundle / "bin", out)
        shutil.copy2(bundle / f"libggml-cpu.{variant}.so", out / "libggml-cpu.so.0")
    return out


def runner(bundle: Path, vdir: Path) -> str:
    """The command prefix that runs a variant's binary with its own loader and libraries."""
    sys_dir = (bundle / "sys").resolve()
    return f"{sys_dir}/ld-linux-x86-64.so.2 --library-path {vdir}:{sys_dir}"


def native_selftest(bundle: Path, vdir: Path, threads: int) -> selftest.SelfTest:
    before = selftest.kernel_log()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        selftest.write_models(models)
        script = selftest.script(threads)
        script = script.replace("/app/llama-bench", f"{runner(bundle, vdir)} {vdir}/llama-bench")
        script = script.replace(f"{selftest.SELFTEST_DIR}/", f"{models}/")
        proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    cases = selftest.parse_cases(proc.stdout + proc.stderr)
    test = selftest.SelfTest(str(vdir), cases)
    if test.passed:
        return test
    after = selftest.kernel_log() or ""
    fault = selftest.last_fault(after[len(before or "") :] if before else after)
    if fault is None or fault.offset is None:
        return selftest.SelfTest(str(vdir), cases, fault, note="no fault in the kernel log")
    library = (vdir / fault.library).read_bytes()
    return selftest.SelfTest(str(vdir), cases, fault, selftest.identify(library, fault.offset))


def bench(bundle: Path, vdir: Path, model: Path, threads: int, n_prompt: int, n_gen: int) -> dict:
    cmd = [
        *runner(bundle, vdir).split(), str(vdir / "llama-bench"), "-m", str(model),
        "-p", str(n_prompt), "-n", str(n_gen), "-r", "1", "-t", str(threads), "-o", "json",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    return {
        (f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"): r["avg_ts"] for r in rows
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=64)
    ns = parser.parse_args()
    ns.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="amx-variants-"))
    dirs = {v: variant_dir(ns.variants, v, work) for v in VARIANTS}
    facts = gather(LiveSource(), containers=False)
    built = json.loads((ns.variants / "variants.json").read_text())

    results = {}
    for variant, vdir in dirs.items():
        test = native_selftest(ns.variants, vdir, min(ns.threads, 4))
        results[variant] = {
            "passed": test.passed,
            "summary": test.summary(),
            "leave_out": test.leave_out(("amx_int8",)),
            "cases": [{"model": c.model, "repack": c.repack, "exit_code": c.exit_code,
                       "signal": c.signal, "tail": c.output[-400:]} for c in test.cases],
            "fault": test.fault.__dict__ if test.fault else None,
            "instruction": test.instruction.__dict__ if test.instruction else None,
        }  # fmt: skip
        print(f"self-test {variant}: {test.summary()}", flush=True)
    (ns.out / "amx-selftest.json").write_text(json.dumps({
        "benchmark": "amx_selftest", "cpu": facts.cpu.model_name,
        "microarchitecture": facts.cpu.microarchitecture, "built": built, "results": results,
    }, indent=2) + "\n")  # fmt: skip

    if not ns.model:
        return
    names = {"fixed": "amx", "noamx": "noamx"}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    for round_no in range(ns.rounds):
        order = ["fixed", "noamx"] if round_no % 2 == 0 else ["noamx", "fixed"]
        for model in ns.model:
            for variant in order:
                speeds = bench(ns.variants, dirs[variant], model, ns.threads, ns.n_prompt,
                               ns.n_gen)  # fmt: skip
                per = samples.setdefault(model.name, {}).setdefault(names[variant], {})
                for test, value in speeds.items():
                    per.setdefault(test, []).append(value)
                print(f"round {round_no + 1} {model.name} {variant}: {speeds}", flush=True)
    hardware = Hardware.from_facts(facts)
    (ns.out / f"cpu_builds-amx-{facts.hostname}.json").write_text(json.dumps({
        "benchmark": "cpu_builds", "host": facts.hostname, "cpu": facts.cpu.microarchitecture,
        "hardware": {**hardware.__dict__, "gpu_name": None, "gpu_architecture": None},
        "threads": ns.threads, "cpu_mask": None, "n_prompt": ns.n_prompt, "n_gen": ns.n_gen,
        "reps_per_round": 1, "rounds": ns.rounds, "created": time.strftime("%FT%TZ", time.gmtime()),
        "builds": {names[v]: {"flags": built["flags"][v], "compiler": built["compiler"],
                              "fixes": built["fixes"] if v == "fixed" else []}
                   for v in ("fixed", "noamx")},
        "samples": samples,
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
