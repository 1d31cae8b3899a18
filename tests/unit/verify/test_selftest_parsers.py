"""The self-test's pure parts (its script, case parsing, kernel-log faults, instruction
classification) and the amx-tile-config source fix, down to the code GCC emits for it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmhost.actions.source_fixes import AMX_TILE_CONFIG, apply_fix, fix_tree, fixes_for
from llmhost.verify import selftest

AMX_ON = ("-DGGML_AVX512_VNNI=ON", "-DGGML_AMX_INT8=ON", "-DGGML_AMX_TILE=ON")


def test_script_runs_every_model_with_and_without_extra_buffers():
    script = selftest.script(threads=3)
    for model in selftest.MODEL_TYPES:
        for repack in (1, 0):
            assert f'echo "@@case {model} {repack}"' in script
            assert f"-m /selftest/{model}.gguf" in script
    assert script.count("-t 3 --repack") == 6


def test_cases_parse_exit_codes_and_signals():
    out = "\n".join([
        "@@case q4_0 1", "| model | test |", "@@exit 132",
        "@@case q4_0 0", "ok", "@@exit 0",
        "@@case f16 1", "@@exit 139",
    ])  # fmt: skip
    cases = selftest.parse_cases(out)
    assert [(c.model, c.repack, c.exit_code) for c in cases] == [
        ("q4_0", True, 132), ("q4_0", False, 0), ("f16", True, 139)
    ]  # fmt: skip
    assert [c.signal for c in cases] == ["SIGILL", None, "SIGSEGV"]
    test = selftest.SelfTest("img", cases)
    assert not test.passed and test.crashed == (cases[0], cases[2])
    # Unknown instruction, only extra-buffer runs crashed: AMX if the build has it.
    assert test.leave_out(("avx2", "amx_int8")) == "amx"
    assert test.leave_out(("avx2",)) is None
    assert test.summary().startswith("llama-bench died with SIGILL (illegal instruction) (")


@pytest.mark.parametrize(
    ("line", "library", "offset"),
    [
        ("[ 725.2] traps: llama-bench[24117] trap invalid opcode ip:7f1d903ea100 sp:7ffe "
         "error:0 in libggml-cpu.so.0.25.3[1f3a20,7f1d903ea000+1000]",
         "libggml-cpu.so.0.25.3", 0x1F3A20),
        ("traps: ld-linux-x86-64[9] trap invalid opcode ip:7f sp:7f error:0 in "
         "libggml-cpu.so.0[21a0f0,7f00+3000]", "libggml-cpu.so.0", 0x21A0F0),
        ("llama-bench[99]: segfault at 0 ip 00007f12 sp 00007ffd error 4 in "
         "libggml-cpu.so[7f1d90000000+2e5000] likely on CPU 1", "libggml-cpu.so", None),
    ],
)  # fmt: skip
def test_kernel_log_faults(line, library, offset):
    fault = selftest.last_fault("unrelated line\n" + line + "\n")
    assert fault is not None and fault.library == library and fault.offset == offset


def test_threads_trapping_at_once_have_their_library_on_lines_of_their_own():
    """As dmesg shows two threads of one llama-bench trapping on the same instruction."""
    log = "\n".join([
        "[75925.977829] traps: llama-bench[17280] trap invalid opcode ip:7f948b098200 "
        "sp:7ffd777657d8 error:0",
        "[75925.977828] traps: llama-bench[17281] trap invalid opcode ip:7f948b098200 "
        "sp:7f948998bf48 error:0",
        "[75925.977842]  in libggml-cpu.so.0.25.3[3b200,7f948b070000+fd000]",
        "[75925.977841]  in libggml-cpu.so.0.25.3[3b200,7f948b070000+fd000]",
        "[75926.251821] docker0: port 1(veth408a57a) entered disabled state",
    ])  # fmt: skip
    fault = selftest.last_fault(log)
    assert fault == selftest.Fault("invalid opcode", "libggml-cpu.so.0.25.3", 0x3B200)
    # A stray continuation with no trap waiting for it is not a fault.
    assert selftest.last_fault(log.splitlines()[2]) is None


def test_other_programs_faults_are_not_ours():
    line = "traps: ill[1] trap invalid opcode ip:7f sp:7ff error:0 in libill.so[1100,7f0+1000]"
    assert selftest.last_fault(line) is None


@pytest.mark.parametrize(
    ("code", "feature"),
    [
        ("c4e27b49e0", "amx_tile"),  # tilezero %tmm4
        ("c4e27849400000", "amx_tile"),  # ldtilecfg
        ("c4e2735ec1", "amx_int8"),  # tdpbssd
        ("c4e2725cc1", "amx_bf16"),  # tdpbf16ps
        ("c4e2795093", "avx_vnni"),  # {vex} vpdpbusd
        ("62f27d4850c1", "avx512_vnni"),  # vpdpbusd zmm
        ("62f27e4852c1", "avx512_bf16"),  # vdpbf16ps zmm
        ("62f27d488dc1", "avx512_vbmi"),  # vpermb zmm
        ("62f17c4858c1", "avx512"),  # vaddps zmm
        ("c5fc58c1", "avx"),  # vaddps ymm
        ("0f0b", None),  # ud2
        ("4889c3", None),  # mov %rax,%rbx
    ],
)
def test_instruction_classes(code, feature):
    assert selftest.classify(bytes.fromhex(code)) == feature


@pytest.mark.skipif(not shutil.which("gcc") or not shutil.which("objdump"), reason="needs gcc")
def test_identify_reads_the_instruction_back_from_an_elf(tmp_path: Path):
    src = tmp_path / "t.c"
    src.write_text('void f(void) { __asm__ volatile (".byte 0xc4,0xe2,0x7b,0x49,0xe0"); }\n')
    lib = tmp_path / "libt.so"
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    data = lib.read_bytes()
    offset = data.index(bytes.fromhex("c4e27b49e0"))
    found = selftest.identify(data, offset)
    assert found.feature == "amx_tile"
    assert "tilezero" in found.text and "tmm4" in found.text


# ---------------------------------------------------------------- the source fix

FIXTURE_MMQ = """
struct tile_config_t{ uint8_t palette_id = 0; uint8_t start_row = 0; uint8_t reserved_0[14] = {0};
    uint16_t colsb[16] = {0}; uint8_t rows[16] = {0}; };
void ggml_tile_config_init(void) {  // not inline: emitted on its own
    static thread_local bool done = false;
    if (done) { return; }
    alignas(64) tile_config_t tc = {};
    tc.palette_id = 1;
    tc.start_row = 0;
    tc.rows[0] = 8;   tc.colsb[0] = 64;
    tc.rows[4] = 16;  tc.colsb[4] = 64;
    _tile_loadconfig(&tc);
    done = true;
}
"""


def test_fix_applies_only_where_the_defect_is_and_amx_is_compiled(tmp_path: Path):
    assert fixes_for(AMX_ON) == {AMX_TILE_CONFIG.path: AMX_TILE_CONFIG}
    assert fixes_for(("-DGGML_AVX512_VNNI=ON", "-DGGML_AMX_INT8=OFF")) == {}
    fixed = apply_fix(AMX_TILE_CONFIG, FIXTURE_MMQ)
    assert fixed is not None and "_tile_loadconfig(&tc);" not in fixed
    assert '__asm__ __volatile__("ldtilecfg %0" : : "m"(tc));' in fixed
    # A tree whose config is already static (older llama.cpp) or fixed upstream: untouched.
    assert (
        apply_fix(AMX_TILE_CONFIG, FIXTURE_MMQ.replace("alignas(64) tile_config_t tc", "x")) is None
    )
    tree = tmp_path / "llama.cpp"
    (tree / Path(AMX_TILE_CONFIG.path).parent).mkdir(parents=True)
    (tree / AMX_TILE_CONFIG.path).write_text(FIXTURE_MMQ)
    assert set(fix_tree(tree, AMX_ON)) == {AMX_TILE_CONFIG.path}
    assert fix_tree(tree, ("-DGGML_AVX2=ON",)) == {}
    assert (tree / AMX_TILE_CONFIG.path).read_text() == FIXTURE_MMQ  # the tree is never written


def _stores_before_ldtilecfg(source: str, tmp_path: Path) -> int:
    """Stores into the stack-local config before LDTILECFG, in the code GCC emits at -O3."""
    src = tmp_path / "mmq.cpp"
    src.write_text("#include <immintrin.h>\n#include <cstdint>\n" + source)
    asm = subprocess.run(
        ["g++", "-std=c++17", "-O3", "-mavx512f", "-mavx512vnni", "-mamx-tile", "-mamx-int8",
         "-S", "-o", "-", str(src)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    body = asm.split("ldtilecfg", 1)[0].rsplit("_Z21ggml_tile_config_initv:", 1)[-1]
    return len(re.findall(r"^\s+v?mov\w*\s+[^,]+,\s*-?\d*\(%r[sb]p\)", body, re.M))


@pytest.mark.skipif(not shutil.which("g++"), reason="needs g++")
def test_gcc_keeps_the_tile_shapes_only_with_the_fix(tmp_path: Path):
    """The root cause, shown on this compiler: GCC < 14 reads `_tile_loadconfig`'s operand as 8
    bytes, so without the fix only the zeroing and palette_id reach memory (rows/colsb are
    dropped: every tile 0 rows, TILEZERO raises #UD); with it, every field is stored."""
    fixed = _stores_before_ldtilecfg(apply_fix(AMX_TILE_CONFIG, FIXTURE_MMQ) or "", tmp_path)
    assert fixed >= 4, "the fixed config must be stored in full before LDTILECFG"
    version = subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True).stdout
    if int(version.split(".")[0]) < 14:
        assert _stores_before_ldtilecfg(FIXTURE_MMQ, tmp_path) <= 2
