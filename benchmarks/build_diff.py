"""What really differs between two llama.cpp CPU builds: the compiler flags of the CPU backend's
translation units (from each build's compile_commands.json) and its machine code, function by
function (objdump, addresses and PLT slots normalised away).

    python benchmarks/build_diff.py plan=BUILD_DIR \
        official=BUILD_DIR:libggml-cpu-sapphirerapids.so --out build-diff.json

A build is NAME=BUILD_DIR[:LIBRARY]; LIBRARY (default libggml-cpu.so) lies in BUILD_DIR/bin.
Configure both with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON. Each function of the first library
is "identical", "encoding" (the same instructions once VEX/EVEX prefixes and register numbers
are set aside: encodings and register allocation only) or "different" in the second.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

# The kernels a llama Q8_0/Q4_0 model spends its time in: dot products (decode), llamafile's
# tinyBLAS and the AMX path (prompt processing).
HOT = ("ggml_vec_dot_q8_0_q8_0", "ggml_vec_dot_q4_0_q8_0", "tinyBLAS_Q0_AVX<block_q8_0",
       "tinyBLAS_Q0_AVX<block_q4_0", "ggml::cpu::amx", "tinygemm_kernel", "ggml_backend_amx",
       "ggml_compute_forward_mul_mat")  # fmt: skip
FLAG_PREFIXES = ("-m", "-O", "-D", "-f", "-std", "-g")
_FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_RIP = re.compile(r"-?0x[0-9a-f]+\(%rip\)")
_BRANCH = re.compile(r"^(j\w+|call|jmp)\s+[0-9a-f]+\b.*$")
_VREG = re.compile(r"%[xyz]mm\d+")
_GREG = re.compile(r"%r\w+|%e\w+")


def parse_build(text: str) -> tuple[str, Path, str]:
    name, sep, rest = text.partition("=")
    if not sep or not re.fullmatch(r"[a-z0-9_]+", name):
        raise SystemExit(f"{text!r}: give NAME=BUILD_DIR[:LIBRARY]")
    folder, _, lib = rest.partition(":")
    return name, Path(folder), lib or "libggml-cpu.so"


def cpu_flags(build: Path, lib: str) -> dict[str, list[str]]:
    """Source file (under ggml-cpu/) -> the code-generation flags it was compiled with."""
    target = lib.removeprefix("lib").removesuffix(".so") + ".dir"
    out = {}
    for entry in json.loads((build / "compile_commands.json").read_text()):
        args = shlex.split(entry["command"]) if "command" in entry else entry["arguments"]
        if "-o" not in args or f"/{target}/" not in args[args.index("-o") + 1]:
            continue
        flags = [a for a in args if a.startswith(FLAG_PREFIXES) and not a.endswith("_EXPORTS")]
        out[entry["file"].split("ggml-cpu/", 1)[-1]] = flags
    return out


def functions(library: Path) -> dict[str, list[str]]:
    """Function -> its instructions, addresses and PLT targets normalised away."""
    dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", str(library)],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    out: dict[str, list[str]] = {}
    body: list[str] | None = None
    for line in dump.splitlines():
        head = _FUNC.match(line)
        if head:
            name = head.group(1)
            skip = name.endswith("@plt") or name.startswith(".")  # PLT slots, sections
            body = None if skip else out.setdefault(name, [])
        elif body is not None and "\t" in line:
            ins = line.split("\t", 1)[1].split("#", 1)[0].strip()
            body.append(_RIP.sub("R", re.sub(r"<.*>", "", _BRANCH.sub(r"\1 A", ins))))
    return out


_PADDING = ("nop", "cs nop", "data16", "xchg   %ax,%ax")


def _loose(body: list[str]) -> list[str]:
    """The instructions without encoding prefixes, register numbers and alignment padding."""
    bare = (i.replace("{vex} ", "").replace("{evex} ", "") for i in body)
    return [_GREG.sub("%r", _VREG.sub("%v", i)) for i in bare if not i.startswith(_PADDING)]


def compare_code(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, str]:
    out = {}
    for name, body in a.items():
        if name not in b:
            out[name] = "missing"
        elif body == b[name]:
            out[name] = "identical"
        else:
            out[name] = "encoding" if _loose(body) == _loose(b[name]) else "different"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs=2, metavar="NAME=BUILD_DIR[:LIBRARY]")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    args = parser.parse_args(argv)
    (na, da, la), (nb, db, lb) = (parse_build(b) for b in args.builds)
    for folder, lib in ((da, la), (db, lb)):
        for need in (folder / "compile_commands.json", folder / "bin" / lib):
            if not need.is_file():
                print(f"{need}: no such file (a build configured with "
                      "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON, built)", file=sys.stderr)  # fmt: skip
                return 2
    fa, fb = cpu_flags(da, la), cpu_flags(db, lb)
    if not fa or not fb:
        print(f"no CPU-backend sources in {da if not fa else db}/compile_commands.json "
              "(configure with -DCMAKE_EXPORT_COMPILE_COMMANDS=ON)", file=sys.stderr)  # fmt: skip
        return 2
    shared = sorted(set(fa) & set(fb))
    only_a = sorted({f for s in shared for f in set(fa[s]) - set(fb[s])})
    only_b = sorted({f for s in shared for f in set(fb[s]) - set(fa[s])})
    code = compare_code(functions(da / "bin" / la), functions(db / "bin" / lb))
    hot = {pattern: dict(Counter(v for k, v in code.items() if pattern in k)) for pattern in HOT}
    different = sorted(k for k, v in code.items() if v == "different")
    report = {
        "builds": {na: {"dir": str(da), "library": la}, nb: {"dir": str(db), "library": lb}},
        "flags": {
            "translation_units": len(shared),
            "sources_only_in": {na: sorted(set(fa) - set(fb)), nb: sorted(set(fb) - set(fa))},
            f"only_{na}": only_a,
            f"only_{nb}": only_b,
            "same_in_every_unit": all(
                set(fa[s]) - set(only_a) == set(fb[s]) - set(only_b) for s in shared
            ),
        },
        "code": {
            "functions": len(code),
            "by_status": dict(Counter(code.values())),
            "hot_kernels": hot,
            "different": different[:60],
        },
    }
    text = json.dumps(report, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text if not args.out else f"{args.out}: {report['code']['by_status']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
