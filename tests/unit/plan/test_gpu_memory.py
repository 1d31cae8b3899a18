"""The GPU memory plan: placement, the split between llama-gpu and vllm-gpu, refusals with
numbers. Model facts are given as the readers would return them (a 7B GGUF is 3.8 GB)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from llmhost.actions.deploy import render_compose
from llmhost.cli.render import render_plan
from llmhost.errors import LlmhostError
from llmhost.facts import gather
from llmhost.facts.models import HfModel, ModelHeader
from llmhost.facts.sources import LiveSource
from llmhost.plan.config import Config, ServiceConfig, parse_config
from llmhost.plan.gpu_memory import GIB, MIB, RESERVE_MIB, GpuMemoryError
from llmhost.plan.planner import make_plan, vllm_api_servers
from llmhost.plan.services import LlamaKnobs, VllmKnobs
from tests.support import (
    CPUINFO,
    RTX_5090,
    FakeGpu,
    FakeNvml,
    with_model_files,
    with_models,
    write_host_tree,
)

# Llama-2-7B shapes: Q4_0 GGUF (what llama-gpu serves) and bf16 safetensors (what vLLM serves).
LLAMA2_7B_Q4_0 = ModelHeader(
    path="/srv/models/llama-2-7b.Q4_0.gguf", architecture="llama", n_layer=32, n_embd=4096,
    n_head=32, n_head_kv=32, head_dim_k=128, head_dim_v=128, n_ff=11008, n_vocab=32000,
    context_length=4096, weights_bytes=3_825_065_984, file_bytes=3_825_806_912,
    embedding_bytes=73_728_000,
)  # fmt: skip
LLAMA2_7B_BF16 = HfModel(
    path="/srv/models/Llama-2-7b-hf", architecture="LlamaForCausalLM", n_layer=32,
    hidden_size=4096, n_head=32, n_head_kv=32, head_dim=128, intermediate_size=11008,
    vocab_size=32000, max_position_embeddings=4096, dtype="bfloat16",
    weights_bytes=13_476_839_424,
)  # fmt: skip
LLAMA2_70B_BF16 = replace(
    LLAMA2_7B_BF16, n_layer=80, hidden_size=8192, n_head=64, n_head_kv=8,
    intermediate_size=28672, weights_bytes=137_953_316_864,
)  # fmt: skip
H200 = FakeGpu("NVIDIA H200", "GPU-h200", (9, 0), 150_754_820_096)
H100 = FakeGpu("NVIDIA H100 80GB HBM3", "GPU-h100", (9, 0), 85_520_809_984)
MODELS = {"llama-gpu": LLAMA2_7B_Q4_0, "vllm-gpu": LLAMA2_7B_BF16}
RTX_3050 = FakeGpu("NVIDIA GeForce RTX 3050", "GPU-3050", (8, 6), 8 * GIB)


def host(tmp_path, *gpus: FakeGpu):
    cpuinfo = (CPUINFO / "ryzen9-9950x.txt").read_text()
    write_host_tree(tmp_path, cpuinfo, cores=16, threads_per_core=2, cores_per_l3=8)
    return gather(LiveSource(str(tmp_path), nvml_module=FakeNvml(gpus=list(gpus))))


def config(**services: dict) -> Config:
    data = {"services": {"llama-gpu": {"model": "m.gguf"}, "vllm-gpu": {"model": "m-hf"}}}
    for name, extra in services.items():
        data["services"].setdefault(name.replace("_", "-"), {}).update(extra)
    return parse_config(data)


def plan_for(facts, cfg: Config | None = None, models=MODELS, profile: str = "gpu"):
    cfg = cfg or config()
    return make_plan(with_models(facts, cfg, models), cfg, profile)


def test_rtx5090_holds_both_engines(tmp_path):
    """The reference box: one 32 GB card, llama-gpu (latency) beside vLLM (throughput)."""
    plan = plan_for(host(tmp_path, RTX_5090))
    memory = plan.gpu_memory
    llama, vllm = memory.placements["llama-gpu"], memory.placements["vllm-gpu"]
    assert llama.gpus == vllm.gpus == (0,)
    # llama-gpu: weights without the input embedding, KV for 2 slots x 4096 at f16.
    assert llama.parts["weights"] == LLAMA2_7B_Q4_0.weights_bytes - 73_728_000
    assert llama.parts["kv_cache"] == 2 * 4096 * 32 * 32 * 256 * 2
    total = RTX_5090.memory_bytes // MIB
    assert vllm.utilization == pytest.approx(
        (total - RESERVE_MIB - llama.need_bytes / MIB) / total, abs=1e-3
    )
    row = memory.rows[0]
    assert sum(row.planned_mib.values()) <= total - RESERVE_MIB
    assert row.free_mib >= RESERVE_MIB - 1
    # vLLM's KV holds at least one full sequence; max-num-seqs follows from it.
    assert vllm.kv_tokens >= 4096 and 1 <= vllm.max_num_seqs <= 256
    knobs = plan.service("vllm-gpu").knobs
    assert isinstance(knobs, VllmKnobs) and knobs.max_num_seqs == vllm.max_num_seqs
    args = plan.service("vllm-gpu").args
    assert args[args.index("--gpu-memory-utilization") + 1] == f"{vllm.utilization:.3f}"
    assert "--enable-chunked-prefill" in args and "--enable-prefix-caching" in args
    assert "--enforce-eager" not in args  # CUDA graphs on
    llama_args = plan.service("llama-gpu").args
    assert llama_args[llama_args.index("--parallel") + 1] == "2"
    assert llama_args[llama_args.index("--flash-attn") + 1] == "on"


def test_h200_throughput_batches_for_32_users(tmp_path):
    plan = plan_for(host(tmp_path, H200), config(llama_gpu={"serving": "throughput"}))
    vllm = plan.gpu_memory.placements["vllm-gpu"]
    assert vllm.max_num_seqs >= 32
    llama = plan.service("llama-gpu")
    assert isinstance(llama.knobs, LlamaKnobs)
    assert llama.knobs.parallel == 32 and llama.knobs.kv_unified
    assert "--kv-unified" in llama.args and llama.knobs.ctx_size == 8 * 4096
    assert llama.args[llama.args.index("--cache-ram") + 1] == "0"  # no prompt cache churn
    assert llama.targets["output_tok_s_min"] == 1000 and llama.bench_concurrency == 32
    assert plan.service("vllm-gpu").targets["output_tok_s_min"] == 4000


def test_two_gpus_one_each(tmp_path):
    plan = plan_for(host(tmp_path, H100, H100))
    memory = plan.gpu_memory
    assert memory.placements["llama-gpu"].gpus == (0,)
    assert memory.placements["vllm-gpu"].gpus == (1,)
    assert memory.placements["vllm-gpu"].tensor_parallel_size == 1
    assert memory.placements["vllm-gpu"].utilization == 0.95  # the whole card, capped
    assert plan.service("vllm-gpu").gpus == (1,)


def test_a_model_too_big_for_one_gpu_spans_two(tmp_path):
    plan = plan_for(host(tmp_path, H100, H100), models={**MODELS, "vllm-gpu": LLAMA2_70B_BF16})
    vllm = plan.gpu_memory.placements["vllm-gpu"]
    assert vllm.tensor_parallel_size == 2 and vllm.gpus == (0, 1)
    assert "--tensor-parallel-size" in plan.service("vllm-gpu").args
    args = plan.service("vllm-gpu").args
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    # GPU 0 is shared with llama-gpu: vLLM's share is what GPU 0 has left.
    row0 = plan.gpu_memory.rows[0]
    assert set(row0.planned_mib) == {"llama-gpu", "vllm-gpu"}


def test_other_processes_memory_is_subtracted(tmp_path):
    busy = replace(
        RTX_5090, used_bytes=3 * GIB, processes=((4242, "Xorg", 1 * GIB), (4343, "app", 2 * GIB))
    )
    facts = host(tmp_path, busy)
    assert facts.gpu.gpus[0].held_by_others_mib == 3 * 1024
    assert [p.name for p in facts.gpu.gpus[0].processes] == ["Xorg", "app"]
    free_plan = plan_for(host(tmp_path / "b", RTX_5090))
    busy_plan = plan_for(facts)
    assert busy_plan.gpu_memory.rows[0].others_mib == 3 * 1024
    assert busy_plan.gpu_memory.placements["vllm-gpu"].utilization == pytest.approx(
        free_plan.gpu_memory.placements["vllm-gpu"].utilization - 3 * GIB / RTX_5090.memory_bytes,
        abs=1e-3,
    )
    # Twice that and vLLM no longer fits beside llama-gpu: refused, with the numbers.
    busier = replace(busy, used_bytes=6 * GIB, processes=((4242, "Xorg", 6 * GIB),))
    with pytest.raises(GpuMemoryError, match=r"vllm-gpu does not fit .* needs at least 17.2 GiB"):
        plan_for(host(tmp_path / "c", busier))


def test_llama_gpu_too_big_is_refused_with_numbers(tmp_path):
    cfg = config(llama_gpu={"ctx_size": 131072, "parallel": 4})
    with pytest.raises(GpuMemoryError) as exc:
        plan_for(host(tmp_path, RTX_5090), cfg)
    text = str(exc.value)
    assert text.startswith("llama-gpu does not fit on GPU 0 (NVIDIA GeForce RTX 5090")
    assert "needs 260.4 GiB" in text and "has 30.8 GiB" in text and "524288 tokens at f16" in text
    assert "cache_type: q8_0" in exc.value.fix and exc.value.exit_code == 1


def test_vllm_beside_llama_too_big_is_refused_with_numbers(tmp_path):
    cfg = config(llama_gpu={"ctx_size": 16384}, vllm_gpu={"ctx_size": 131072})
    with pytest.raises(GpuMemoryError) as exc:
        plan_for(host(tmp_path, RTX_5090), cfg)
    text = str(exc.value)
    assert text.startswith("vllm-gpu does not fit on GPU 0 (NVIDIA GeForce RTX 5090")
    assert "beside llama-gpu" in text and "131072-token sequence" in text
    assert "kv_cache_dtype: fp8" in exc.value.fix


def test_fp8_kv_cache_doubles_vllm_capacity(tmp_path):
    facts = host(tmp_path, H200)
    auto = plan_for(facts).gpu_memory.placements["vllm-gpu"]
    fp8 = plan_for(facts, config(vllm_gpu={"kv_cache_dtype": "fp8"})).gpu_memory
    assert fp8.placements["vllm-gpu"].kv_tokens == pytest.approx(2 * auto.kv_tokens, rel=1e-3)


def test_explicit_gpus_and_utilization_are_honoured(tmp_path):
    cfg = config(llama_gpu={"gpus": [1]}, vllm_gpu={"gpus": [0], "gpu_memory_utilization": 0.8})
    plan = plan_for(host(tmp_path, H100, H100), cfg)
    assert plan.service("llama-gpu").gpus == (1,) and plan.service("vllm-gpu").gpus == (0,)
    assert plan.gpu_memory.placements["vllm-gpu"].utilization == 0.8


def test_a_gpu_that_is_not_there_is_a_usage_error(tmp_path):
    with pytest.raises(GpuMemoryError, match=r"services.llama-gpu.gpus: GPU \[3\] not on") as exc:
        plan_for(host(tmp_path, RTX_5090), config(llama_gpu={"gpus": [3]}))
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("services", "message"),
    [
        ({"llama-gpu": {"serving": "fast"}}, "services.llama-gpu.serving must be one of"),
        ({"vllm-gpu": {"kv_cache_dtype": "int4"}}, "services.vllm-gpu.kv_cache_dtype must be"),
        ({"vllm-gpu": {"tensor_parallel_size": 3}}, "tensor_parallel_size must be one of"),
        ({"vllm-gpu": {"gpu_memory_utilization": 1.5}}, "gpu_memory_utilization must be"),
        ({"vllm-gpu": {"gpus": [0, 0]}}, "services.vllm-gpu.gpus lists a GPU twice"),
        ({"llama-gpu": {"flash_attn": "yes"}}, "services.llama-gpu.flash_attn must be true"),
    ],
)
def test_bad_serving_config_is_one_line(services, message):
    from llmhost.errors import LlmhostError

    with pytest.raises(LlmhostError, match=message) as exc:
        parse_config({"services": services})
    assert exc.value.exit_code == 2


def test_unreadable_model_names_the_service(tmp_path):
    models = tmp_path / "models"
    (models / "m-hf").mkdir(parents=True)
    (models / "m-hf" / "config.json").write_text("{not json")
    cfg = replace(config(), models_dir=str(models))
    cfg = replace(cfg, services={**cfg.services, "llama-gpu": ServiceConfig(port=8004)})
    from llmhost.plan.planner import PlanError

    with pytest.raises(PlanError, match=r"^vllm-gpu: model .*config.json is unreadable"):
        make_plan(with_model_files(host(tmp_path, RTX_5090), cfg), cfg, "gpu")


def test_deploy_dry_run_prints_compose_and_memory_table(tmp_path, monkeypatch):
    """Through the CLI on a snapshot-free fake host: the rendered project and the table, and no
    Docker call (the compose file is not written)."""
    from click.testing import CliRunner

    from llmhost.cli import app as app_module
    from llmhost.cli.main import cli

    facts = host(tmp_path, RTX_5090)
    def host_facts(self, snapshot=None, *, models=False, **_):
        return with_model_files(facts, self.config()) if models else facts

    monkeypatch.setattr(app_module.App, "facts", host_facts)
    models_dir = tmp_path / "models"
    (models_dir / "m-hf").mkdir(parents=True)
    (models_dir / "m-hf" / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 32, "intermediate_size": 11008,
        "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "bfloat16",
    }))  # fmt: skip
    (models_dir / "m-hf" / "model.safetensors").write_bytes(b"\0" * 4096)
    from llmhost.devtools.synthetic_gguf import write_llama_gguf

    write_llama_gguf(models_dir / "m.gguf", None, tensor_type="q4_0")
    cfg_file = tmp_path / "llmhost.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "models_dir": str(models_dir),
        "services": {"llama-gpu": {"model": "m.gguf"}, "vllm-gpu": {"model": "m-hf"}},
    }))  # fmt: skip
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(
        cli, ["--config", str(cfg_file), "deploy", "--profile", "gpu", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    body, _, table = result.output.partition("#  GPU memory")
    compose = yaml.safe_load(body)
    assert set(compose["services"]) == {"llama-gpu", "vllm-gpu"}
    assert "--gpu-memory-utilization" in compose["services"]["vllm-gpu"]["command"]
    assert "NVIDIA GeForce RTX 5090" in table and "--gpu-memory-utilization" in table
    assert not (tmp_path / "state").exists()


def _cli_on(tmp_path, monkeypatch, facts, config_text: str, *args: str):
    from click.testing import CliRunner

    from llmhost.cli import app as app_module
    from llmhost.cli.main import cli

    def host_facts(self, snapshot=None, *, models=False, **_):
        return with_model_files(facts, self.config()) if models else facts

    monkeypatch.setattr(app_module.App, "facts", host_facts)
    monkeypatch.setenv("LLMHOST_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text(config_text)
    return CliRunner().invoke(cli, ["--config", str(cfg), *args])


def _models(tmp_path) -> Path:
    from llmhost.devtools.synthetic_gguf import write_llama_gguf

    models = tmp_path / "models"
    (models / "m-hf").mkdir(parents=True)
    (models / "m-hf" / "config.json").write_text(json.dumps({
        "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
        "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
        "torch_dtype": "bfloat16",
    }))  # fmt: skip
    (models / "m-hf" / "model.safetensors").write_bytes(b"\0" * 4096)
    write_llama_gguf(models / "m.gguf", None, tensor_type="q4_0")
    return models


@pytest.mark.parametrize(
    ("services", "exit_code", "starts"),
    [
        # A GPU too small for what is asked (the tiny GGUF with a 16M-token KV pool).
        ("llama-gpu: {model: m.gguf, kv_tokens: 16000000}\n  vllm-gpu: {model: m-hf}", 1,
         "llama-gpu does not fit on GPU 0 (NVIDIA GeForce RTX 3050, 8.0 GiB): needs 8.4 GiB"),
        # Two services one GPU cannot hold: vLLM's 4096-token sequence beside llama-gpu's pool.
        ("llama-gpu: {model: m.gguf, kv_tokens: 4000000}\n  vllm-gpu: {model: m-hf}", 1,
         "vllm-gpu does not fit on GPU 0 (NVIDIA GeForce RTX 3050, 8.0 GiB) beside llama-gpu"),
        ("llama-gpu: {model: m.gguf, gpu_memory_utilization: 0.5}\n  vllm-gpu: {model: m-hf}", 2,
         "config: services.llama-gpu.gpu_memory_utilization is a vllm setting"),
        ("llama-gpu: {model: m.gguf, serving: turbo}\n  vllm-gpu: {model: m-hf}", 2,
         "config: services.llama-gpu.serving must be one of latency, throughput"),
        ("llama-gpu: {model: absent.gguf}\n  vllm-gpu: {model: m-hf}", 1,
         "llama-gpu: model "),
        ("llama-gpu: {model: m.gguf}\n  vllm-gpu: {model: m.gguf}", 1,
         "vllm-gpu: model "),
    ],
)  # fmt: skip
def test_bad_gpu_input_is_one_line_and_nothing_starts(tmp_path, monkeypatch, services, exit_code,
                                                      starts):  # fmt: skip
    models = _models(tmp_path)
    text = f"models_dir: {models}\nservices:\n  {services}\n"
    for command in (("plan", "--profile", "gpu"), ("deploy", "--profile", "gpu")):
        result = _cli_on(tmp_path, monkeypatch, host(tmp_path / "h", RTX_3050), text, *command)
        assert result.exit_code == exit_code, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"llmhost: {starts}"), result.output
        assert "Traceback" not in result.output
        assert not (tmp_path / "state").exists()  # nothing rendered, nothing started


def test_vllm_front_ends_are_sized_from_its_cpus(tmp_path, capsys):
    """vLLM's HTTP front end is one process unless the plan gives it more: with the gpu profile
    the 9950X's cores are free for it (4 front ends); beside llama-cpu's isolated cores it has
    few (1); tensor parallelism keeps a CPU per GPU worker; llmhost.yaml can say how many."""
    facts = host(tmp_path, RTX_5090)
    gpu_plan = plan_for(facts).service("vllm-gpu")
    assert isinstance(gpu_plan.knobs, VllmKnobs) and gpu_plan.knobs.api_servers == 4
    assert gpu_plan.args[gpu_plan.args.index("--api-server-count") + 1] == "4"
    all_plan = plan_for(facts, profile="all").service("vllm-gpu")
    assert all_plan.knobs.api_servers == 1 and "--api-server-count" not in all_plan.args
    render_plan(plan_for(facts, profile="all"), width=200)
    assert "cpuset 6-7,22-23  api servers 1  GPU 0" in capsys.readouterr().out
    fixed = plan_for(facts, config(vllm_gpu={"api_servers": 2})).service("vllm-gpu")
    assert fixed.args[fixed.args.index("--api-server-count") + 1] == "2"
    assert [vllm_api_servers(n, 1) for n in (1, 2, 4, 6, 8, 12, 64)] == [1, 1, 1, 2, 3, 4, 4]
    assert [vllm_api_servers(n, 2) for n in (4, 6, 8, 12)] == [1, 1, 2, 4]


def test_api_servers_is_a_vllm_setting(tmp_path):
    with pytest.raises(LlmhostError, match=r"services.llama-gpu.api_servers.*vllm setting"):
        config(llama_gpu={"api_servers": 2})
    with pytest.raises(LlmhostError, match=r"services.vllm-gpu.api_servers"):
        config(vllm_gpu={"api_servers": 0})


def test_memory_limits_from_the_models(tmp_path, capsys):
    """Each container's host RAM cap: the model's host-side bytes plus the engine's processes,
    +25 %. llama-gpu keeps weights' page cache only (KV on the GPU); vLLM adds 2 GiB per API
    server; llama-cpu holds weights, KV and compute buffers."""
    facts = host(tmp_path, RTX_5090)
    models = {**MODELS, "llama-cpu": LLAMA2_7B_Q4_0}
    plan = plan_for(facts, config(llama_cpu={"model": "m.gguf"}), models=models, profile="all")
    mib = 2**20
    llama_gpu, vllm, llama_cpu = (plan.service(n) for n in ("llama-gpu", "vllm-gpu", "llama-cpu"))
    weights = LLAMA2_7B_Q4_0.weights_bytes / mib
    assert llama_gpu.memory_limit_mib == math.ceil((weights + 2048) * 1.25)
    assert vllm.knobs.api_servers == 1
    assert vllm.memory_limit_mib == math.ceil((LLAMA2_7B_BF16.weights_bytes / mib + 10240) * 1.25)
    kv = 2 * 4096 * 32 * 32 * 256 * 2 / 2  # latency: 1 slot of 4096 on the CPU, f16
    assert llama_cpu.memory_limit_mib >= math.ceil((weights + kv / mib + 1024) * 1.25)
    assert llama_cpu.memory_limit_mib < math.ceil((weights + kv / mib + 1024) * 1.25) + 400
    doc = yaml.safe_load(render_compose(plan, plan_config := config(llama_cpu={"model": "m.gguf"})))
    assert plan_config.services["llama-gpu"].memory_limit_gib is None
    for name in ("llama-gpu", "vllm-gpu", "llama-cpu"):
        assert doc["services"][name]["mem_limit"] == f"{plan.service(name).memory_limit_mib}m"
    render_plan(plan, width=300)
    assert f"memory ≤ {vllm.memory_limit_mib / 1024:.1f} GiB" in capsys.readouterr().out
    # Four API servers: 3 x 2 GiB more. llmhost.yaml can set the cap; no model read: no cap.
    four = plan_for(facts).service("vllm-gpu")
    assert four.memory_limit_mib == vllm.memory_limit_mib + math.ceil(3 * 2048 * 1.25)
    fixed = plan_for(facts, config(llama_gpu={"memory_limit_gib": 6})).service("llama-gpu")
    assert fixed.memory_limit_mib == 6144
    bare = plan_for(facts, models={})
    assert all(s.memory_limit_mib is None for s in bare.services)
    assert "mem_limit" not in render_compose(bare, config())


def test_tensor_parallel_all_reduce_buffers_stay_outside_vllms_share(tmp_path):
    """On two H200s beside llama-gpu, vLLM 0.26 held 1.7 GiB over its --gpu-memory-utilization
    share (all-reduce buffers) and ran out of memory on the shared GPU (2026-11-30): the plan
    leaves VLLM_TP_OUTSIDE beside the share on every GPU of the group, and shows it."""
    from llmhost.plan.gpu_memory import VLLM_TP_OUTSIDE

    plan = plan_for(host(tmp_path, H200, H200), config(vllm_gpu={"tensor_parallel_size": 2}))
    vllm, llama = plan.gpu_memory.placements["vllm-gpu"], plan.gpu_memory.placements["llama-gpu"]
    assert vllm.tensor_parallel_size == 2 and vllm.parts["all_reduce"] == VLLM_TP_OUTSIDE
    total = H200.memory_bytes // MIB
    share = vllm.utilization * total * MIB
    # GPU 0 holds llama-gpu, vLLM's share and its all-reduce buffers, and the reserve.
    assert llama.need_bytes + share + VLLM_TP_OUTSIDE <= (total - RESERVE_MIB) * MIB
    row0 = plan.gpu_memory.rows[0]
    assert row0.planned_mib["vllm-gpu"] == int(vllm.utilization * total) + VLLM_TP_OUTSIDE // MIB
    assert row0.free_mib >= RESERVE_MIB - 1
    # One GPU, no tensor parallelism: nothing is held back.
    single = plan_for(host(tmp_path, H200)).gpu_memory.placements["vllm-gpu"]
    assert "all_reduce" not in single.parts
