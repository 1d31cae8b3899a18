"""The one ISA table (llmhost.facts.isa) and what is derived from it: what leaving a group out turns
off, which features a CPU gets, and the self-test's leave-out names."""

from __future__ import annotations

from llmhost.facts.isa import CPUINFO_FLAGS, FEATURES, LEAVE_OUT_GROUPS, REQUIRES, enabled
from llmhost.verify import selftest

AMX = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
EMERALD_RAPIDS = {"avx", "avx2", "fma", "f16c", "bmi2", "avx_vnni", "avx512f", "avx512bw",
                  "avx512vl", "avx512dq", "avx512cd", "avx512_vbmi", "avx512_vnni",
                  "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}  # fmt: skip


def test_leaving_a_group_out_takes_what_builds_on_it() -> None:
    avx512 = ("GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", *AMX)
    want = {
        "avx_vnni": ("GGML_AVX_VNNI",),
        "avx512": avx512,
        "avx512_vbmi": ("GGML_AVX512_VBMI",),
        "avx512_vnni": ("GGML_AVX512_VNNI", *AMX),
        "avx512_bf16": ("GGML_AVX512_BF16",),
        "amx": AMX,
    }
    assert want == LEAVE_OUT_GROUPS


def test_a_cpu_gets_what_its_flags_and_bases_allow() -> None:
    assert enabled(EMERALD_RAPIDS) == [f.name for f in FEATURES]
    assert "amx_int8" not in enabled(EMERALD_RAPIDS, ("amx",))
    no_vnni = enabled(EMERALD_RAPIDS, ("avx512_vnni",))
    assert "avx512_bf16" in no_vnni and not {"avx512_vnni", "amx_tile"} & set(no_vnni)
    # An AVX-512 extension without the whole base (F, BW, VL, DQ, CD) is not built.
    assert "avx512_vnni" not in enabled({"avx2", "avx512f", "avx512_vnni"})
    assert enabled({"avx2", "fma"}) == ["avx2", "fma"]


def test_the_derived_names_agree() -> None:
    assert selftest.LEAVE_OUT["amx_int8"] == "amx" and selftest.LEAVE_OUT["avx512"] == "avx512"
    assert set(selftest.LEAVE_OUT.values()) == set(LEAVE_OUT_GROUPS)
    assert CPUINFO_FLAGS[:2] == ("sse3", "ssse3") and len(set(CPUINFO_FLAGS)) == len(CPUINFO_FLAGS)
    assert REQUIRES["avx512"] == ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")
