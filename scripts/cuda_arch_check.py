#!/usr/bin/env python3
"""Is a GPU architecture present as machine code in a CUDA library, or only as PTX?

    python3 scripts/cuda_arch_check.py LIB --arch 90 [--cuobjdump PATH] [--json]

Runs `cuobjdump --list-elf` and `--list-ptx` on LIB (e.g. libggml-cuda.so from a llama.cpp
build) and judges them with llmhost.verify.image_checks.machine_code_check: exit 0 when sm_<arch>
machine code is there, 1 when only PTX (a JIT at first start) or compatible code is, 2 when the
GPU cannot run the library at all, 3 when cuobjdump could not read it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmhost.verdict import Status
from llmhost.verify.image_checks import (
    CuobjdumpError,
    machine_code_check,
    parse_cuobjdump,
)

EXIT = {Status.OK: 0, Status.WARN: 1, Status.FAIL: 2}


def cuobjdump(tool: str, mode: str, library: str) -> str:
    proc = subprocess.run([tool, mode, library], capture_output=True, text=True, check=False)
    return proc.stdout + proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library")
    parser.add_argument("--arch", required=True, help='compute capability digits: "90", "120"')
    parser.add_argument("--cuobjdump", default=shutil.which("cuobjdump") or "cuobjdump")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    digits = args.arch.removeprefix("sm_").rstrip("af")
    cc = (int(digits[:-1]), int(digits[-1]))
    elf_text = cuobjdump(args.cuobjdump, "--list-elf", args.library)
    ptx_text = cuobjdump(args.cuobjdump, "--list-ptx", args.library)
    try:
        sass, ptx = parse_cuobjdump(elf_text), parse_cuobjdump(ptx_text)
    except CuobjdumpError as exc:
        print(f"cuobjdump could not read {args.library}: {exc}", file=sys.stderr)
        return 3
    verdict = machine_code_check(sass, ptx, cc, Path(args.library).name)
    if args.json:
        print(
            json.dumps(
                {
                    "library": args.library,
                    "arch": f"sm_{cc[0]}{cc[1]}",
                    "sass": list(sass),
                    "ptx": list(ptx),
                    "level": verdict.level.value,
                    "detail": verdict.detail,
                },
                indent=1,
            )
        )
    else:
        print("--- cuobjdump --list-elf\n" + elf_text.rstrip())
        print("--- cuobjdump --list-ptx\n" + ptx_text.rstrip())
        print(f"{verdict.level.value}: {verdict.detail}")
    return EXIT[verdict.level]


if __name__ == "__main__":
    raise SystemExit(main())
