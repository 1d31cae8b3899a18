"""`llmhost.yaml`: profiles, ports, models, core count, thresholds — validated key by key.

Any unknown key or bad value is refused with one line naming the key, before anything runs.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmhost.errors import LlmhostError
from llmhost.facts.versions import tag_kind
from llmhost.plan.services import CORS_ANY, CORS_LOCALHOST, LLAMA_CPP, REGISTRY, SERVING_MODES, VLLM
from llmhost.plan.targets import parse_target
from llmhost.untrusted import shown

PROFILES = ("cpu", "gpu", "all")
SERVICE_PROFILES = {s.name: s.device for s in REGISTRY.values()}
CACHE_TYPES = ("f16", "bf16", "q8_0", "q4_0")
KV_CACHE_DTYPES = ("auto", "fp8")
CONFIG_ENV = "LLMHOST_CONFIG"
DEFAULT_CONFIG_PATHS = ("llmhost.yaml", "/etc/llmhost/llmhost.yaml")


@dataclass(frozen=True)
class ServiceConfig:
    """One service's settings; None means: the serving configuration's (or the plan's) choice."""

    port: int
    model: str | None = None  # file name under models_dir (GGUF) or a model directory (vLLM)
    ctx_size: int = 4096  # tokens one request may use (vLLM's max-model-len)
    serving: str | None = None  # latency | throughput (default: the service's)
    parallel: int | None = None  # llama.cpp slots / vLLM max-num-seqs
    kv_tokens: int | None = None  # llama.cpp: tokens of KV cache in all
    cache_type: str = "f16"  # llama.cpp KV cache type
    kv_cache_dtype: str = "auto"  # vLLM KV cache: the model's dtype, or fp8
    gpu_layers: int = 999
    flash_attn: bool | None = None
    cuda_graphs: bool | None = None
    gpu_memory_utilization: float | None = None  # vLLM: else the GPU memory plan's share
    tensor_parallel_size: int | None = None  # vLLM: else the smallest group the model fits
    api_servers: int | None = None  # vLLM front-end processes: else sized from its CPUs
    gpus: tuple[int, ...] | None = None  # GPU indices: else the GPU memory plan's placement
    memory_limit_gib: float | None = None  # the container's host RAM cap: else from the model
    mlock: bool | None = None  # llama-cpu: weights locked in RAM (else: where measured faster)
    targets: dict[str, float] = field(default_factory=dict)  # over the serving mode's gates


@dataclass(frozen=True)
class HugepagesConfig:
    enabled: bool = True
    headroom_pct: float = 10.0
    gib: float | None = None  # fixed size instead of sizing from the models
    boot_time: bool = False  # also reserve on the kernel command line


@dataclass(frozen=True)
class ImagesConfig:
    base_image: str = "debian:bookworm-slim"
    llama_ref: str = "b10864"
    cuda_version: str | None = None  # default: from the driver, capped at the newest we know
    vllm_version: str = "v0.33.0"


@dataclass(frozen=True)
class BenchConfig:
    requests: int = 8  # at least twice the concurrency are sent
    concurrency: int | None = None  # default: the concurrency each service's targets are set at
    max_tokens: int = 64
    warmup: int = 1


@dataclass(frozen=True)
class Config:
    profile: str | None = None  # None: gpu where an NVIDIA GPU is usable, else cpu
    inference_cores: int | None = None  # None: all cores but a quarter (CPU 0's among them)
    bind_address: str = "127.0.0.1"
    api_key: str | None = None
    cors_origin: str = CORS_LOCALHOST  # which web pages' scripts may call the services
    models_dir: str = "/srv/llmhost/models"
    project: str = "llmhost"
    services: dict[str, ServiceConfig] = field(
        default_factory=lambda: {
            name: ServiceConfig(port=spec.default_port) for name, spec in REGISTRY.items()
        }
    )
    hugepages: HugepagesConfig = field(default_factory=HugepagesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    source_path: str | None = None


def _fail(key: str, message: str, where: str = "config: ") -> LlmhostError:
    """One line naming the key; `where` says where the value came from (llmhost.yaml)."""
    return LlmhostError(f"{where}{key} {message}", exit_code=2)


def _check_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(key, f"must be an integer from {lo} to {hi} (got {value!r})")
    return value


def _check_float(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _fail(key, f"must be a number from {lo} to {hi} (got {value!r})")
    return float(value)


def _check_bool(key: str, value: Any) -> bool:
    # YAML's yes/on/1 are refused on purpose: only true/false is unambiguous.
    if not isinstance(value, bool):
        raise _fail(key, f"must be true or false (got {value!r})")
    return value


def _check_str(
    key: str, value: Any, choices: tuple[str, ...] | None = None, where: str = "config: "
) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, f"must be a non-empty string (got {value!r})", where)
    if choices and value not in choices:
        raise _fail(key, f"must be one of {', '.join(choices)} (got {value!r})", where)
    return value


# CORS: "localhost" (pages served from this machine, any port), "*" (any page), or one origin.
# One: llama-server sends the value as its Access-Control-Allow-Origin header, and a list there
# is not valid CORS (llama.cpp issue 26988).
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def _check_cors_origin(value: Any) -> str:
    origin = _check_str("cors_origin", value)
    if origin in (CORS_LOCALHOST, CORS_ANY) or _ORIGIN.fullmatch(origin):
        return origin
    raise _fail(
        "cors_origin",
        f"must be localhost, * or one origin such as http://192.168.1.5:3000 "
        f"(scheme://host[:port], no path; got {shown(origin)})",
    )


API_KEY_MIN = 32
# Printable ASCII but space, quotes, backslash and comma (llama-server splits its keys on commas;
# the env file quotes the key in single quotes, so that `$` reaches the server literally).
_API_KEY_CHARS = re.compile(r"[!#-&(-+\--\[\]-~]+")


def _check_api_key(value: Any) -> str:
    """A key strong enough to stand for a public bind; its value is never echoed."""
    if not isinstance(value, str):
        raise _fail("api_key", f"must be a string (got a {type(value).__name__})")
    if len(value) < API_KEY_MIN:
        raise _fail(
            "api_key",
            f"is too short ({len(value)} characters; at least {API_KEY_MIN}): "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' makes one",
        )
    if not _API_KEY_CHARS.fullmatch(value):
        raise _fail(
            "api_key",
            "may hold printable ASCII only, without spaces, quotes, backslashes or commas "
            "(llama-server splits keys on commas)",
        )
    return value


# What may reach a Dockerfile, a compose file or a path: strict shapes, no control characters.
PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "images.base_image": (
        re.compile(
            r"(?:[a-z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
            r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?"
            r"(?:@sha256:[0-9a-f]{64})?"
        ),
        "an image reference like debian:bookworm-slim or registry:5000/team/base@sha256:...",
    ),
    "images.vllm_version": (re.compile(r"v?\d+\.\d+\.\d+"), "a release like v0.33.0"),
    "images.llama_ref": (re.compile(r"b\d+"), "a llama.cpp release tag like b10864"),
    "images.cuda_version": (re.compile(r"\d+\.\d+\.\d+"), "a CUDA version like 13.0.1"),
    "project": (re.compile(r"[a-z0-9][a-z0-9_-]{0,62}"), "lower-case letters, digits, - and _"),
    "model": (
        re.compile(r"(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9_][A-Za-z0-9._+-]*(?:/[A-Za-z0-9._+-]+)*"),
        "a file or directory under models_dir (letters, digits, . _ - +; no .. and no $)",
    ),
    "models_dir": (re.compile(r"/[A-Za-z0-9._+/-]*"), "an absolute path without spaces or $"),
}


# Keys naming a release: a moving tag or a commit is said to be one (no floor can judge it).
VERSION_KEYS = ("images.vllm_version", "images.llama_ref", "images.cuda_version")


def check_value(key: str, value: Any, kind: str | None = None) -> str:
    """A command-line value for `key` (an option or argument, of shape `kind`, a PATTERNS key),
    refused in one line otherwise; not from llmhost.yaml, so the line does not say config."""
    return _check_pattern(key, value, kind, where="")


def _check_pattern(key: str, value: Any, kind: str | None = None, where: str = "config: ") -> str:
    pattern, shape = PATTERNS[kind or key]
    text = _check_str(key, value, where=where)
    if not pattern.fullmatch(text):
        tag = tag_kind(text) if (kind or key) in VERSION_KEYS else None
        got = f"{shape}{f', not {tag}' if tag else ''} (got {shown(text)!r})"
        raise _fail(key, f"must be {got}", where)
    return text


def _check_choice(key: str, value: Any, choices: tuple[int, ...]) -> int:
    if isinstance(value, bool) or value not in choices:
        raise _fail(key, f"must be one of {', '.join(map(str, choices))} (got {value!r})")
    return int(value)


def _check_gpus(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise _fail(key, f"must be a list of GPU indices like [0] or [1, 2] (got {value!r})")
    indices = tuple(_check_int(f"{key}[{i}]", v, 0, 63) for i, v in enumerate(value))
    if len(set(indices)) != len(indices):
        raise _fail(key, f"lists a GPU twice (got {list(indices)})")
    return indices


def _check_mapping(key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(key, f"must be a mapping (got {type(value).__name__})")
    for name in value:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise LlmhostError(f"config: unknown key {where!r}", exit_code=2)
    return value


def _names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


# Keys that mean something only to one engine or one device (the rest apply to every service).
ENGINE_ONLY = {
    "kv_tokens": LLAMA_CPP, "cache_type": LLAMA_CPP, "gpu_layers": LLAMA_CPP,
    "flash_attn": LLAMA_CPP, "kv_cache_dtype": VLLM, "gpu_memory_utilization": VLLM,
    "tensor_parallel_size": VLLM, "api_servers": VLLM, "mlock": LLAMA_CPP,
}  # fmt: skip
GPU_ONLY = ("gpu_layers", "cuda_graphs", "gpu_memory_utilization", "tensor_parallel_size", "gpus")
CPU_ONLY = ("mlock",)  # weights in host RAM


def _check_applies(key: str, name: str, data: dict[str, Any]) -> None:
    spec = REGISTRY.get(name)
    if spec is None:
        return
    for item in data:
        engine = ENGINE_ONLY.get(item)
        if engine and engine != spec.engine:
            raise _fail(f"{key}.{item}", f"is a {engine} setting; {name} runs {spec.engine}")
        if item in GPU_ONLY and spec.device != "gpu":
            raise _fail(f"{key}.{item}", f"is a GPU setting; {name} runs on the CPU")
        if item in CPU_ONLY and spec.device != "cpu":
            raise _fail(f"{key}.{item}", f"is a CPU setting; {name} keeps its weights on the GPU")


def _service(key: str, raw: Any, default: ServiceConfig | None) -> ServiceConfig:
    data = _check_mapping(key, raw, _names(ServiceConfig))
    _check_applies(key, key.removeprefix("services."), data)
    base = default or ServiceConfig(port=0)
    out: dict[str, Any] = {}
    if "port" in data or default is None:
        out["port"] = _check_int(f"{key}.port", data.get("port"), 1, 65535)
    if "model" in data:
        model = data["model"]
        out["model"] = None if model is None else _check_pattern(f"{key}.model", model, "model")
    if "ctx_size" in data:
        out["ctx_size"] = _check_int(f"{key}.ctx_size", data["ctx_size"], 128, 1 << 21)
    if "cache_type" in data:
        out["cache_type"] = _check_str(f"{key}.cache_type", data["cache_type"], CACHE_TYPES)
    if "kv_cache_dtype" in data:
        out["kv_cache_dtype"] = _check_str(
            f"{key}.kv_cache_dtype", data["kv_cache_dtype"], KV_CACHE_DTYPES
        )
    if "gpu_layers" in data:
        out["gpu_layers"] = _check_int(f"{key}.gpu_layers", data["gpu_layers"], 0, 10000)
    optional = {
        "serving": lambda k, v: _check_str(k, v, SERVING_MODES),
        "parallel": lambda k, v: _check_int(k, v, 1, 1024),
        "kv_tokens": lambda k, v: _check_int(k, v, 128, 1 << 24),
        "flash_attn": _check_bool,
        "cuda_graphs": _check_bool,
        "mlock": _check_bool,
        "gpu_memory_utilization": lambda k, v: _check_float(k, v, 0.05, 0.98),
        "tensor_parallel_size": lambda k, v: _check_choice(k, v, (1, 2, 4, 8)),
        "api_servers": lambda k, v: _check_int(k, v, 1, 32),
        "memory_limit_gib": lambda k, v: _check_float(k, v, 0.25, 65536),
        "gpus": _check_gpus,
    }
    for name, check in optional.items():
        if name in data:
            out[name] = None if data[name] is None else check(f"{key}.{name}", data[name])
    if "targets" in data:
        out["targets"] = _targets(f"{key}.targets", data["targets"])
    return replace(base, **out)


def _targets(key: str, raw: Any) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise _fail(key, f"must be a mapping (got {type(raw).__name__})")
    for name in raw:
        try:
            parse_target(str(name))
        except ValueError:
            raise LlmhostError(
                f"config: unknown key {key + '.' + str(name)!r} (targets look like ttft_p90_ms, "
                "itl_p99_ms, output_tok_s_min, failed_max)",
                exit_code=2,
            ) from None
    return {k: _check_float(f"{key}.{k}", v, 0, 1e9) for k, v in raw.items()}


def parse_config(data: Any, source_path: str | None = None) -> Config:
    """Validate a loaded YAML document into a Config."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = f"file {source_path}" if source_path else "document"
        raise _fail(where, f"must be a mapping of llmhost.yaml keys (got {type(data).__name__})")
    top = _check_mapping("", data, _names(Config) - {"source_path"})
    cfg = Config(source_path=source_path)
    out: dict[str, Any] = {}
    if "profile" in top:
        out["profile"] = _check_str("profile", top["profile"], PROFILES)
    if "inference_cores" in top:
        out["inference_cores"] = _check_int("inference_cores", top["inference_cores"], 1, 1024)
    if "bind_address" in top:
        addr = _check_str("bind_address", top["bind_address"])
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise _fail("bind_address", f"must be an IP address (got {addr!r})") from None
        out["bind_address"] = addr
    if "api_key" in top:
        out["api_key"] = None if top["api_key"] is None else _check_api_key(top["api_key"])
    if "cors_origin" in top:
        out["cors_origin"] = _check_cors_origin(top["cors_origin"])
    if "models_dir" in top:
        out["models_dir"] = _check_pattern("models_dir", top["models_dir"])
        if Path(out["models_dir"]).resolve() == Path("/"):
            raise _fail("models_dir", "must not be / (it is mounted into every service)")
    if "project" in top:
        out["project"] = _check_pattern("project", top["project"])
    if "services" in top:
        raw = _check_mapping("services", top["services"], set(SERVICE_PROFILES))
        services = dict(cfg.services)
        for name, svc in raw.items():
            services[name] = _service(f"services.{name}", svc, cfg.services.get(name))
        out["services"] = services
    if "hugepages" in top:
        raw = _check_mapping("hugepages", top["hugepages"], _names(HugepagesConfig))
        hp: dict[str, Any] = {}
        if "enabled" in raw:
            hp["enabled"] = _check_bool("hugepages.enabled", raw["enabled"])
        if "boot_time" in raw:
            hp["boot_time"] = _check_bool("hugepages.boot_time", raw["boot_time"])
        if "headroom_pct" in raw:
            hp["headroom_pct"] = _check_float("hugepages.headroom_pct", raw["headroom_pct"], 0, 200)
        if "gib" in raw:
            hp["gib"] = (
                None if raw["gib"] is None else _check_float("hugepages.gib", raw["gib"], 0, 4096)
            )
        out["hugepages"] = replace(cfg.hugepages, **hp)
    if "images" in top:
        raw = _check_mapping("images", top["images"], _names(ImagesConfig))
        img = {
            k: (None if v is None and k == "cuda_version" else _check_pattern(f"images.{k}", v))
            for k, v in raw.items()
        }
        out["images"] = replace(cfg.images, **img)
    if "bench" in top:
        raw = _check_mapping("bench", top["bench"], _names(BenchConfig))
        limits = {
            "requests": (1, 100000),
            "concurrency": (1, 1024),
            "max_tokens": (1, 65536),
            "warmup": (0, 100),
        }
        bench = {k: _check_int(f"bench.{k}", v, *limits[k]) for k, v in raw.items()}
        out["bench"] = replace(cfg.bench, **bench)
    cfg = replace(cfg, **out)
    if not ipaddress.ip_address(cfg.bind_address).is_loopback and not cfg.api_key:
        raise _fail(
            "api_key", f"is required when bind_address is {cfg.bind_address} (not loopback)"
        )
    ports = [s.port for s in cfg.services.values()]
    if len(set(ports)) != len(ports):
        raise _fail("services", f"ports must differ (got {sorted(ports)})")
    return cfg


def _strict_loader() -> type:
    """A SafeLoader where only true/false are booleans (YAML 1.2): yes/on/no stay strings,
    so the validator can refuse them instead of guessing."""
    import re

    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    StrictLoader.yaml_implicit_resolvers = {
        key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    return StrictLoader


STDIN_PATH = "-"  # `--config -`: the configuration on standard input (Ansible passes it so)


def load_config(path: str | None = None) -> Config:
    """Load the given file (`-`: standard input), else $LLMHOST_CONFIG, else ./llmhost.yaml or
    /etc; else defaults."""
    if path == STDIN_PATH:
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError:
            raise LlmhostError("config on stdin is not UTF-8 text", exit_code=2) from None
        return _parse_text(text, "config on stdin")
    candidates = [path] if path else [os.environ.get(CONFIG_ENV), *DEFAULT_CONFIG_PATHS]
    for candidate in candidates:
        if not candidate:
            continue
        file = Path(candidate)
        if not file.is_file():
            if path:
                raise LlmhostError(f"config file {file} does not exist", exit_code=2)
            continue
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            message = f"config file {file} cannot be read: {reason}"
            raise LlmhostError(message, exit_code=2) from None
        return _parse_text(text, f"config file {file}", str(file))
    return Config()


def _parse_text(text: str, what: str, source: str | None = None) -> Config:
    """YAML text -> Config; `what` names it in the one-line errors."""
    import yaml

    try:
        data = yaml.load(text, Loader=_strict_loader())
    except RecursionError:  # PyYAML composes nested collections recursively
        raise LlmhostError(f"{what} is not valid YAML: nested too deeply", exit_code=2) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LlmhostError(f"{what} is not valid YAML{where}", exit_code=2) from None
    return parse_config(data, source)
