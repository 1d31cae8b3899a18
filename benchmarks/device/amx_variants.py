"""Build the AMX variants of llama.cpp's CPU backend for a host described by a snapshot, here, with
this host's compiler (Debian 12's GCC 12, the CPU image's builder), to run them where AMX is.

One build directory, three libggml-cpu.so: the plan's full ISA with AMX from the tree as it is
(`unfixed`), the same after llmhost's source fix (`fixed`), and the plan without AMX (`noamx`,
the evidence baseline). llama-bench and the other libraries are ISA-independent and shared. The
result is a self-contained folder (Debian's loader and libraries included) for
benchmarks/device/amx_run.sh on the device machine.

    python benchmarks/device/amx_variants.py --source TREE --snapshot SNAP --out .device/amx
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

from llmhost.actions.source_fixes import fix_tree
from llmhost.facts import gather
from llmhost.facts.sources import SnapshotSource
from llmhost.plan.planner import cpu_cmake_flags

COMMON = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DGGML_CCACHE=OFF", "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON",
]  # fmt: skip
# llama-bench's own libraries, by the names the loader looks for (their DT_NEEDED sonames).
BENCH_LIBS = ("libllama-bench-impl.so", "libllama-common.so.0", "libllama.so.0", "libggml.so.0",
              "libggml-base.so.0", "libggml-cpu.so.0")  # fmt: skip
# What the binaries need beyond themselves, from this (Debian 12) host.
SYSTEM_LIBS = ("libstdc++.so.6", "libgomp.so.1", "libgcc_s.so.1", "libm.so.6", "libc.so.6")
LOADER = "/lib64/ld-linux-x86-64.so.2"


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)


def lib_path(name: str) -> Path:
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.strip().startswith(name + " ") and "x86-64" in line:
            return Path(line.rsplit("=>", 1)[1].strip()).resolve()
    raise SystemExit(f"{name} not found by ldconfig")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="llama.cpp tree (not modified)")
    parser.add_argument(
        "--snapshot", type=Path, required=True, help="`llmhost snapshot` of the AMX host"
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/llmhost/amx-variants")
    parser.add_argument("--jobs", type=int, default=2)
    ns = parser.parse_args()

    cpu = gather(SnapshotSource(ns.snapshot), containers=False).cpu
    with_amx, isa = cpu_cmake_flags(cpu)
    without_amx, _ = cpu_cmake_flags(cpu, ["amx"])
    if "amx_int8" not in isa:
        raise SystemExit(f"{cpu.model_name} has no AMX")
    tree = ns.work / "llama.cpp"
    if not tree.exists():
        shutil.copytree(ns.source, tree, symlinks=True)
    build, out, log = ns.work / "build", ns.out, ns.out / "build.log"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bin").mkdir(exist_ok=True)

    def configure_and_build(flags: tuple[str, ...], *targets: str) -> None:
        run(["cmake", "-S", str(tree), "-B", str(build), *COMMON, *flags], log)
        run(["cmake", "--build", str(build), "-j", str(ns.jobs), "--target", *targets], log)

    # 1. The tree as it is, AMX on: what the CPU image built on Intel until now.
    mmq = tree / "ggml/src/ggml-cpu/amx/mmq.cpp"
    original = (ns.source / "ggml/src/ggml-cpu/amx/mmq.cpp").read_bytes()
    mmq.write_bytes(original)
    configure_and_build(with_amx, "llama-bench")
    for name in ("llama-bench", *BENCH_LIBS):
        shutil.copy2(build / "bin" / name, out / "bin" / name, follow_symlinks=True)
    shutil.copy2(build / "bin/libggml-cpu.so", out / "libggml-cpu.unfixed.so")
    # 2. llmhost's source fix applied, AMX on: what `llmhost build` builds now.
    fixed = fix_tree(ns.source, with_amx)
    for rel, f in fixed.items():
        (tree / rel).write_bytes(f.data)
    configure_and_build(with_amx, "ggml-cpu")
    shutil.copy2(build / "bin/libggml-cpu.so", out / "libggml-cpu.fixed.so")
    # 3. The same plan without AMX: the baseline AMX is measured against.
    configure_and_build(without_amx, "ggml-cpu")
    shutil.copy2(build / "bin/libggml-cpu.so", out / "libggml-cpu.noamx.so")
    mmq.write_bytes(original)
    # Stripped like the image's binaries (the code and its offsets are unchanged).
    run(
        ["strip", "--strip-unneeded", *map(str, out.glob("bin/*")), *map(str, out.glob("*.so"))],
        log,
    )

    (out / "sys").mkdir(exist_ok=True)
    for name in SYSTEM_LIBS:
        shutil.copy2(lib_path(name), out / "sys" / name)
    shutil.copy2(Path(LOADER).resolve(), out / "sys" / "ld-linux-x86-64.so.2")
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[
        0
    ]
    (out / "variants.json").write_text(json.dumps({
        "cpu": cpu.model_name, "microarchitecture": cpu.microarchitecture, "compiler": gcc,
        "source": str(ns.source), "fixes": sorted(f.fix.id for f in fixed.values()),
        "flags": {"unfixed": with_amx, "fixed": with_amx, "noamx": without_amx},
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
