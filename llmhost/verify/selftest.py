"""The self-test of a llama.cpp CPU image: its own llama-bench runs a prompt and a few generated
tokens of small synthetic models, once with the extra-buffer kernels (AMX, repacked weights) and
once without, so every CPU path the build compiled in is executed on this host's CPU.

A crash is named by its signal; when the kernel log is readable (root), also by the faulting
instruction and the ISA feature it belongs to, read from the library's own bytes. The verdict and
the parsers are pure; `run_selftest` is the one function that needs a Docker engine.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.cache import cache_dir
from llmhost.facts.isa import FEATURES as ISA_FEATURES

# One model per weight type whose kernels differ: q4_0 and q8_0 have AMX int8 and repacked
# kernels, f16 takes the F16C/AVX-512 paths. Tiny shapes (n_embd 128) reach every one of them.
MODEL_TYPES = ("q4_0", "q8_0", "f16")
SELFTEST_DIR = "/selftest"
# llama-bench: 32 prompt tokens (matrix-matrix: AMX tiles) and 4 generated (matrix-vector).
BENCH_ARGS = ("-p", "32", "-n", "4", "-r", "1", "-o", "csv")
# ISA feature -> what a plan leaves out after its kernels crashed here (llmhost.facts.isa's table).
LEAVE_OUT = {f.name: f.leave_out for f in ISA_FEATURES if f.leave_out}


@dataclass(frozen=True)
class Case:
    model: str  # weight type of the synthetic model
    repack: bool  # extra-buffer kernels (AMX, repacked weights) on
    exit_code: int
    output: str

    @property
    def signal(self) -> str | None:
        """SIGILL for exit 132 (a shell reports 128 + the signal that killed the process)."""
        if self.exit_code <= 128:
            return None
        try:
            return signal.Signals(self.exit_code - 128).name
        except ValueError:
            return None

    @property
    def name(self) -> str:
        return f"{self.model} {'with' if self.repack else 'without'} extra-buffer kernels"


@dataclass(frozen=True)
class Fault:
    """What the kernel logged about a crash: the library and the offset of the instruction."""

    kind: str  # "invalid opcode", "segfault", "general protection"
    library: str  # file name, as the kernel names it
    offset: int | None  # of the faulting instruction in the file, when known


@dataclass(frozen=True)
class Instruction:
    text: str  # "tilezero %tmm4", or an opcode description
    feature: str | None  # llmhost ISA name: "amx_tile", "avx512", ...


@dataclass(frozen=True)
class SelfTest:
    image: str
    cases: tuple[Case, ...]
    fault: Fault | None = None
    instruction: Instruction | None = None
    note: str | None = None  # why the instruction is unknown

    @property
    def crashed(self) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if c.exit_code != 0)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and not self.crashed

    def leave_out(self, plan_isa: tuple[str, ...]) -> str | None:
        """The ISA feature whose kernels crashed, when it is one a plan can do without."""
        if self.passed:
            return None
        if self.instruction and self.instruction.feature:
            return LEAVE_OUT.get(self.instruction.feature)
        # Unknown instruction: only the extra-buffer runs crashed, and AMX is what they add.
        if all(c.repack for c in self.crashed) and "amx_int8" in plan_isa:
            return "amx"
        return None

    def summary(self) -> str:
        if self.passed:
            return f"{len(self.cases)} runs of {self.image}'s llama-bench passed ({_names(self)})"
        first = self.crashed[0]
        how = first.signal or f"exit code {first.exit_code}"
        where = ""
        if self.instruction:
            where = f" at `{self.instruction.text}`"
        if self.fault:
            offset = f"+{self.fault.offset:#x}" if self.fault.offset is not None else ""
            where += f" in {self.fault.library}{offset}"
        crashed = ", ".join(c.name for c in self.crashed)
        text = f"llama-bench died with {how}{_describe(how)}{where} ({crashed})"
        return text + (f"; {self.note}" if self.note and not self.instruction else "")


def _names(test: SelfTest) -> str:
    return ", ".join(c.name for c in test.cases)


def _describe(sig: str) -> str:
    return {"SIGILL": " (illegal instruction)", "SIGSEGV": " (segmentation fault)"}.get(sig, "")


# ---------------------------------------------------------------- verdicts kept per image


def _verdicts_dir() -> Path:
    """Under llmhost's cache (as build's downloads): a verdict is a memo, not host state."""
    return cache_dir() / "selftest"


def remember(image_id: str, cpu_model: str, summary: str) -> None:
    """Record that `image_id` passed its self-test on this CPU (llmhost build, doctor)."""
    path = _verdicts_dir() / f"{image_id.removeprefix('sha256:')[:64]}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"image": image_id, "cpu": cpu_model, "summary": summary}))
    except OSError:
        pass  # a read-only state dir costs a repeated self-test, nothing else


def remembered(image_id: str, cpu_model: str) -> str | None:
    """The summary of this exact image's passed self-test on this CPU model, if one was run."""
    path = _verdicts_dir() / f"{image_id.removeprefix('sha256:')[:64]}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("summary") if data.get("cpu") == cpu_model else None


# ---------------------------------------------------------------- the run


def script(threads: int) -> str:
    """The shell script the container runs: every case, each followed by a marker and its code."""
    lines = []
    for model in MODEL_TYPES:
        for repack in (1, 0):
            model_path = f"{SELFTEST_DIR}/{model}.gguf"
            run = ["/app/llama-bench", "-m", model_path, *BENCH_ARGS]
            argv = " ".join([*run, "-t", str(threads), "--repack", str(repack)])
            lines.append(f'echo "@@case {model} {repack}"; {argv} 2>&1; echo "@@exit $?"')
    return "\n".join(lines) + "\n"


_CASE = re.compile(r"^@@case (\S+) (\d)$")
_EXIT = re.compile(r"^@@exit (\d+)$")


def parse_cases(output: str) -> tuple[Case, ...]:
    """The container's output -> one Case per `@@case` ... `@@exit N` block."""
    cases, current, lines = [], None, []
    for line in output.splitlines():
        if m := _CASE.match(line):
            current, lines = (m.group(1), m.group(2) == "1"), []
        elif (m := _EXIT.match(line)) and current:
            cases.append(Case(current[0], current[1], int(m.group(1)), "\n".join(lines[-20:])))
            current = None
        elif current:
            lines.append(line)
    return tuple(cases)


def write_models(directory: Path) -> dict[str, Path]:
    """The synthetic models, with llmhost's byte vocabulary (no download, no source tree)."""
    from llmhost.devtools.synthetic_gguf import write_llama_gguf

    return {t: write_llama_gguf(directory / f"{t}.gguf", None, tensor_type=t) for t in MODEL_TYPES}


def _models_tar(models: dict[str, Path]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(SELFTEST_DIR.strip("/"))
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for path in models.values():
            tar.add(path, f"{SELFTEST_DIR.strip('/')}/{path.name}")
    return out.getvalue()


def run_selftest(client: Any, image: str, threads: int = 2) -> SelfTest:
    """Run the self-test of `image` (a docker.APIClient); read the kernel log on a crash."""
    from llmhost.verify.image_checks import _copy_out

    before = kernel_log()
    with tempfile.TemporaryDirectory(prefix="llmhost-selftest-") as tmp:
        models = write_models(Path(tmp))
        box = client.create_container(
            image, command=["-c", script(threads)], entrypoint=["/bin/bash"], user="10001"
        )
        try:
            client.put_archive(box["Id"], "/", _models_tar(models))
            client.start(box["Id"])
            client.wait(box["Id"], timeout=600)
            output = client.logs(box["Id"], stdout=True, stderr=True).decode(errors="replace")
        finally:
            client.remove_container(box["Id"], force=True)
    cases = parse_cases(output)
    if not cases:
        return SelfTest(image, (Case("-", True, 1, output[-2000:]),), note="no run completed")
    test = SelfTest(image, cases)
    if test.passed:
        return test
    after = kernel_log()
    if after is None:
        return SelfTest(image, cases, note="the kernel log is not readable here (run as root)")
    fault = last_fault(after[len(before or "") :] if before and after.startswith(before) else after)
    if fault is None:
        return SelfTest(image, cases, note="the kernel logged no fault for it")
    instruction, note = None, None
    if fault.offset is not None:
        try:
            library = _library_bytes(_copy_out(client, image, f"/app/{fault.library}"))
            instruction = identify(library, fault.offset)
        except (OSError, KeyError, tarfile.TarError, ValueError, StopIteration) as exc:
            note = f"could not read {fault.library} from the image ({exc})"
    return SelfTest(image, cases, fault, instruction, note)


def _library_bytes(tar_bytes: bytes) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = next(m for m in tar.getmembers() if m.isfile())
        return tar.extractfile(member).read()  # type: ignore[union-attr]


def kernel_log() -> str | None:
    """`dmesg` as text, or None where it is restricted (kernel.dmesg_restrict, no root)."""
    if shutil.which("dmesg") is None:
        return None
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, check=False, timeout=10)
    return proc.stdout if proc.returncode == 0 else None


# ---------------------------------------------------------------- reading the crash

# Linux 6.x: "traps: llama-bench[123] trap invalid opcode ip:7f.. sp:7ff.. error:0
# in libggml-cpu.so[1f3a20,7f..+2e5000]" (the instruction's file offset first); older kernels
# print only [vm_start+size]. The " in ..." part is a continuation of the line: when threads trap
# at once, the kernel logs their heads first and each " in ..." on a line of its own.
_TRAP = re.compile(
    r"(?:traps: )?(?:llama-bench|ld-linux-x86-64)\[\d+\]:? "
    r"(?P<kind>trap invalid opcode|segfault|general protection)"
)
_WHERE = r" in (?P<lib>[^\s\[]+)\[(?:(?P<off>[0-9a-f]+),)?(?P<start>[0-9a-f]+)\+[0-9a-f]+\]"
_IN_LINE = re.compile(r".*?ip[: ](?P<ip>[0-9a-f]+).*?" + _WHERE)
_CONTINUED = re.compile(r"^(?:\[[^\]]*\])?\s*" + _WHERE.removeprefix(" "))


def last_fault(log: str) -> Fault | None:
    """The last fault of a llama-bench process in a kernel log."""
    found, waiting = None, []  # kinds of trap heads still waiting for their " in ..."
    for line in log.splitlines():
        if head := _TRAP.search(line):
            kind = head.group("kind").removeprefix("trap ")
            where = _IN_LINE.match(line, head.end())
            if where is None:
                waiting.append(kind)
                continue
        elif (where := _CONTINUED.match(line)) and waiting:
            kind = waiting.pop(0)
        else:
            continue
        offset = int(where.group("off"), 16) if where.group("off") else None
        found = Fault(kind, where.group("lib"), offset)
    return found


def _load_segments(elf: bytes) -> list[tuple[int, int, int]]:
    """(file offset, virtual address, size in the file) of each PT_LOAD of an ELF64 file."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise ValueError("not an ELF64 file")
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    out = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type == 1:
            out.append((p_offset, p_vaddr, p_filesz))
    return out


def _vaddr(elf: bytes, offset: int) -> int | None:
    """The virtual address of a file offset."""
    for p_offset, p_vaddr, size in _load_segments(elf):
        if p_offset <= offset < p_offset + size:
            return offset - p_offset + p_vaddr
    return None


def file_offset(elf: bytes, vaddr: int) -> int | None:
    """The file offset of a virtual address (a symbol's value)."""
    for p_offset, p_vaddr, size in _load_segments(elf):
        if p_vaddr <= vaddr < p_vaddr + size:
            return vaddr - p_vaddr + p_offset
    return None


def identify(library: bytes, offset: int) -> Instruction:
    """The instruction at `offset` of an ELF file: objdump's text when it is installed, else the
    ISA family read from its encoding."""
    if offset >= len(library):
        raise ValueError(f"offset {offset:#x} is past the end of the file")
    text = _objdump(library, offset)
    feature = classify(library[offset : offset + 16])
    if text is None:
        text = f"{library[offset : offset + 8].hex(' ')} ({feature or 'unknown encoding'})"
    return Instruction(text, feature)


def _objdump(library: bytes, offset: int) -> str | None:
    if shutil.which("objdump") is None:
        return None
    vaddr = _vaddr(library, offset)
    if vaddr is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".so") as tmp:
        tmp.write(library)
        tmp.flush()
        proc = subprocess.run(
            ["objdump", "-d", "--no-show-raw-insn", f"--start-address={vaddr:#x}",
             f"--stop-address={vaddr + 16:#x}", tmp.name],
            capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
    for line in proc.stdout.splitlines():
        m = re.match(r"\s*[0-9a-f]+:\s+(.+)$", line)
        if m:
            return " ".join(m.group(1).split())
    return None


# VEX map 2 (0F38) opcodes of AMX: (opcode, pp) -> feature; pp 0 none, 1 66, 2 F3, 3 F2.
_AMX = {
    (0x49, 0): "amx_tile", (0x49, 1): "amx_tile", (0x49, 3): "amx_tile",  # ldtilecfg, tilezero
    (0x4B, 1): "amx_tile", (0x4B, 2): "amx_tile", (0x4B, 3): "amx_tile",  # tileload/store
    (0x5E, 0): "amx_int8", (0x5E, 1): "amx_int8", (0x5E, 2): "amx_int8", (0x5E, 3): "amx_int8",
    (0x5C, 2): "amx_bf16",
}  # fmt: skip
# EVEX map 2 opcodes of AVX-512 extensions: (opcode, pp) -> feature.
_EVEX = {
    (0x50, 1): "avx512_vnni", (0x51, 1): "avx512_vnni", (0x52, 1): "avx512_vnni",
    (0x53, 1): "avx512_vnni", (0x52, 2): "avx512_bf16", (0x72, 2): "avx512_bf16",
    (0x72, 3): "avx512_bf16", (0x75, 1): "avx512_vbmi", (0x7D, 1): "avx512_vbmi",
    (0x8D, 1): "avx512_vbmi",
}  # fmt: skip


def classify(code: bytes) -> str | None:
    """The ISA feature of the instruction that starts `code` (prefix bytes 66/F2/F3 skipped for
    legacy encodings), from its VEX/EVEX encoding; None when it is none of those llmhost plans."""
    i = 0
    while i < len(code) and code[i] in (0x66, 0xF2, 0xF3, 0x67):
        i += 1
    code = code[i:]
    if len(code) >= 2 and code[0] == 0x0F and code[1] == 0x0B:
        return None  # ud2: a deliberate trap, no ISA feature
    if len(code) >= 4 and code[0] == 0xC4:
        mmmmm, pp, opcode = code[1] & 0x1F, code[2] & 0x03, code[3]
        if mmmmm == 2 and (opcode, pp) in _AMX:
            return _AMX[(opcode, pp)]
        if mmmmm == 2 and pp == 1 and opcode in (0x50, 0x51, 0x52, 0x53):
            return "avx_vnni"
        return "avx2"
    if len(code) >= 2 and code[0] == 0xC5:
        return "avx"
    if len(code) >= 5 and code[0] == 0x62:
        mmm, pp, opcode = code[1] & 0x07, code[2] & 0x03, code[4]
        if mmm == 2 and (opcode, pp) in _EVEX:
            return _EVEX[(opcode, pp)]
        return "avx512"
    return None
