"""Test helpers: a sysfs tree for a given topology, and an NVML double shaped like pynvml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]  # the checkout
FIXTURES = Path(__file__).parent / "fixtures"
SNAPSHOTS = FIXTURES / "snapshots"
CPUINFO = FIXTURES / "cpuinfo"
ZEN4_SNAPSHOT = SNAPSHOTS / "epyc-zen4-nogpu.tar.gz"
H100_SNAPSHOT = SNAPSHOTS / "h100-emerald-rapids.tar.gz"
# A CI machine kind: an AMX Xeon VM whose CPU model says Rocket Lake (family 6 model 0xa7).
XEON_VM_SNAPSHOT = SNAPSHOTS / "xeon-amx-vm-model167.tar.gz"


def _write(root: Path, path: str, text: str) -> None:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def write_host_tree(
    root: Path,
    cpuinfo: str,
    *,
    cores: int,
    threads_per_core: int = 1,
    cores_per_l3: int | None = None,
    meminfo_kb: int = 128 * 1024 * 1024,
    hugepages_2m: tuple[int, int] = (0, 0),
    cmdline: str = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet",
    isolated: str = "",
    files: dict[str, str] | None = None,
) -> Path:
    """A /proc + /sys tree like Linux lays out for `cores` x `threads_per_core` (Linux numbering:
    CPU n and n+cores are SMT siblings), L3 domains of `cores_per_l3` cores."""
    per_l3 = cores_per_l3 or cores
    n_cpus = cores * threads_per_core
    _write(root, "/proc/cpuinfo", cpuinfo)
    _write(root, "/sys/devices/system/cpu/online", f"0-{n_cpus - 1}\n")
    for cpu in range(n_cpus):
        core = cpu % cores
        siblings = ",".join(str(core + t * cores) for t in range(threads_per_core))
        base = f"/sys/devices/system/cpu/cpu{cpu}"
        _write(root, f"{base}/topology/core_cpus_list", siblings + "\n")
        l3 = core // per_l3
        members = [
            c + t * cores
            for t in range(threads_per_core)
            for c in range(l3 * per_l3, min((l3 + 1) * per_l3, cores))
        ]
        _write(root, f"{base}/cache/index3/level", "3\n")
        _write(root, f"{base}/cache/index3/id", f"{l3}\n")
        _write(root, f"{base}/cache/index3/size", "32768K\n")
        _write(root, f"{base}/cache/index3/shared_cpu_list", ",".join(map(str, sorted(members))))
    _write(root, "/sys/devices/system/node/node0/cpulist", f"0-{n_cpus - 1}\n")
    _write(
        root,
        "/proc/meminfo",
        f"MemTotal: {meminfo_kb} kB\nMemAvailable: {meminfo_kb // 2} kB\n"
        f"Hugepagesize:       2048 kB\n",
    )
    hp = "/sys/kernel/mm/hugepages/hugepages-2048kB"
    _write(root, f"{hp}/nr_hugepages", f"{hugepages_2m[0]}\n")
    _write(root, f"{hp}/free_hugepages", f"{hugepages_2m[1]}\n")
    _write(root, f"{hp}/resv_hugepages", "0\n")
    _write(root, f"{hp}/surplus_hugepages", "0\n")
    _write(root, "/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    _write(root, "/proc/cmdline", cmdline + "\n")
    _write(root, "/proc/sys/kernel/osrelease", "6.12.0-test\n")
    _write(root, "/proc/sys/kernel/hostname", "testhost\n")
    _write(root, "/sys/devices/system/cpu/isolated", isolated + "\n")
    for path, text in (files or {}).items():
        _write(root, path, text)
    return root


class NVMLError(Exception):
    """Same str() as pynvml.NVMLError for the codes we meet."""


@dataclass
class _Memory:
    total: int
    used: int = 0


@dataclass
class _Process:
    pid: int
    usedGpuMemory: int | None


@dataclass
class FakeGpu:
    name: str
    uuid: str
    cc: tuple[int, int]
    memory_bytes: int
    pcie_gen: int = 5
    pcie_width: int = 16
    persistence: int = 1
    used_bytes: int = 0
    processes: tuple[tuple[int, str, int], ...] = ()  # (pid, name, bytes held)
    max_width: int = 16
    power_mw: int = 575000
    default_power_mw: int = 575000
    clock_reasons: int = 0x1  # idle
    mig: int = 0


@dataclass
class FakeNvml:
    """The pynvml calls llmhost makes, returning the types real NVML returned on the H100
    (see fixtures/device/h100-nvml.json): str versions, int CUDA version, tuple capability."""

    driver: str = "580.159.04"
    cuda: int = 13000
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: str | None = None

    def nvmlInit(self) -> None:
        if self.init_error:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        return None

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return h.cc

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return _Memory(h.memory_bytes, h.used_bytes)

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[_Process]:
        return [_Process(pid, held) for pid, _, held in h.processes]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: FakeGpu) -> list[_Process]:
        return []

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        return next(n for g in self.gpus for p, n, _ in g.processes if p == pid)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeGpu) -> int:
        return h.pcie_gen

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: FakeGpu) -> int:
        return h.pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeGpu) -> int:
        return h.pcie_width

    def nvmlDeviceGetPersistenceMode(self, h: FakeGpu) -> int:
        return h.persistence

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: FakeGpu) -> int:
        return h.max_width

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return h.power_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGpu) -> int:
        return h.default_power_mw

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        return h.clock_reasons

    def nvmlDeviceGetMigMode(self, h: FakeGpu) -> tuple[int, int]:
        return (h.mig, h.mig)


RTX_5090 = FakeGpu("NVIDIA GeForce RTX 5090", "GPU-5090", (12, 0), 34190917632)
H100 = FakeGpu(
    "NVIDIA H100 80GB HBM3", "GPU-d41b29f6-66f2-5eee-b31f-feb01abb4d58", (9, 0), 85520809984
)
# pynvml's own message for NVML_ERROR_LIBRARY_NOT_FOUND.
NO_DRIVER = "NVML Shared Library Not Found"


class FakeEngine:
    """A Docker engine's API on a real Unix socket, answering GETs from `routes` (path ->
    JSON, the query string ignored); `requests` records every path with its query."""

    def __init__(self, socket_path: Path, routes: dict[str, Any]) -> None:
        import http.server
        import socketserver
        import threading

        engine = self
        self.routes, self.requests = routes, []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                import json
                import re

                engine.requests.append(self.path)
                route = re.sub(r"^/v[0-9.]+/", "/", self.path.split("?")[0])  # /v1.46/info too
                found = route in engine.routes
                answer = engine.routes[route] if found else {"message": "no such"}
                body = json.dumps(answer).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

            def address_string(self) -> str:  # a Unix socket has no client address
                return "unix"

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(str(socket_path), Handler)
        self.url = f"unix://{socket_path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def with_models(facts: Any, config: Any, models: dict[str, Any]) -> Any:
    """`facts` with `models` (service -> ModelHeader / HfModel) as the facts of the paths the
    config gives those services: what `gather(..., models=model_paths(config))` would read."""
    import dataclasses

    found = dict(facts.models)
    for name, model in models.items():
        path = str(Path(config.models_dir) / config.services[name].model)
        found[path] = dataclasses.replace(model, path=path)
    return dataclasses.replace(facts, models=found)


def with_model_files(facts: Any, config: Any) -> Any:
    """`facts` with the configured models read from their files, as `llmhost plan` reads them."""
    import dataclasses

    from llmhost.facts.models import gather_models
    from llmhost.facts.sources import LiveSource
    from llmhost.plan.planner import model_paths

    return dataclasses.replace(facts, models=gather_models(LiveSource(), model_paths(config)))
