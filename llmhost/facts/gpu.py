"""NVIDIA driver, CUDA driver version and each GPU, through NVML (live) or nvidia-smi (snapshot).

No driver or no GPU is a fact (`GpuFacts.error`, empty `gpus`), never an exception.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from typing import Any

from llmhost.facts.sources import Source

# Compute capability major (and minor where it matters) -> NVIDIA architecture name.
_ARCH_BY_CC: dict[tuple[int, int], str] = {
    (12, 1): "Blackwell",  # GB10 (DGX Spark)
    (12, 0): "Blackwell",  # RTX 50xx, RTX PRO 6000 Blackwell
    (11, 0): "Blackwell",  # Thor
    (10, 3): "Blackwell",  # B300
    (10, 0): "Blackwell",  # B200
    (9, 0): "Hopper",
    (8, 9): "Ada Lovelace",
    (8, 7): "Ampere",
    (8, 6): "Ampere",
    (8, 0): "Ampere",
    (7, 5): "Turing",
    (7, 2): "Volta",
    (7, 0): "Volta",
    (6, 1): "Pascal",
    (6, 0): "Pascal",
}


# NVML clock-event reasons that slow a GPU down (idle, application clocks and sync boost do not).
THROTTLE_REASONS: dict[int, str] = {
    0x4: "software power cap",
    0x8: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "power brake",
}
# The same, as nvidia-smi -q -x names them under clocks_event_reasons.
_XML_THROTTLE = {
    "clocks_event_reason_sw_power_cap": "software power cap",
    "clocks_event_reason_hw_slowdown": "hardware slowdown",
    "clocks_event_reason_sw_thermal_slowdown": "software thermal slowdown",
    "clocks_event_reason_hw_thermal_slowdown": "hardware thermal slowdown",
    "clocks_event_reason_hw_power_brake_slowdown": "power brake",
}


def architecture_for(cc: tuple[int, int] | None) -> str:
    if cc is None:
        return "unknown"
    return _ARCH_BY_CC.get(cc) or _ARCH_BY_CC.get((cc[0], 0), f"unknown (sm_{cc[0]}{cc[1]})")


def cuda_version_from_int(value: int) -> str:
    """NVML's 13000 -> "13.0", 12080 -> "12.8"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


@dataclass(frozen=True)
class GpuProcess:
    """A process holding memory on a GPU; `service` names the llmhost service it belongs to."""

    pid: int
    name: str
    used_mib: int
    service: str | None = None


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str
    architecture: str
    compute_capability: str | None
    memory_total_mib: int | None
    pcie_generation: int | None
    pcie_max_generation: int | None
    pcie_width: int | None
    persistence_mode: bool | None
    memory_used_mib: int | None = None  # the driver's count, reserved memory included
    processes: tuple[GpuProcess, ...] = ()
    pcie_max_width: int | None = None
    power_limit_w: float | None = None  # enforced
    default_power_limit_w: float | None = None
    throttle_reasons: tuple[str, ...] = ()  # active clock-event reasons that cost speed
    mig_enabled: bool | None = None

    @property
    def held_by_others_mib(self) -> int:
        """Memory taken by anything but llmhost's services: used memory minus what this GPU's
        llmhost processes hold (processes NVML cannot see, a display, count as others)."""
        ours = sum(p.used_mib for p in self.processes if p.service)
        return max(0, (self.memory_used_mib or 0) - ours)

    @property
    def cc_tuple(self) -> tuple[int, int] | None:
        if not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


@dataclass(frozen=True)
class GpuFacts:
    driver_version: str | None  # NVML's: the user-space library
    cuda_driver_version: str | None
    gpus: tuple[Gpu, ...]
    via: str
    error: str | None = None
    kernel_module: str | None = None  # "open" or "proprietary" (/proc/driver/nvidia/version)
    kernel_module_version: str | None = None
    uvm_device: bool | None = None  # /dev/nvidia-uvm, which CUDA needs for managed memory

    @property
    def present(self) -> bool:
        return bool(self.gpus)


def _nvml_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(call: Any, *args: Any) -> Any:
    """NVML calls some boards do not support return NOT_SUPPORTED: keep them as None."""
    try:
        return call(*args)
    except Exception:
        return None


def from_nvml(nvml: Any) -> GpuFacts:
    """Read through the pynvml API; every NVML failure becomes `error`."""
    try:
        nvml.nvmlInit()
    except Exception as exc:
        return GpuFacts(None, None, (), "nvml", error=_nvml_error_sentence(exc))
    try:
        driver = _nvml_str(nvml.nvmlSystemGetDriverVersion())
        cuda = cuda_version_from_int(int(nvml.nvmlSystemGetCudaDriverVersion()))
        gpus = []
        for index in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            cc = _optional(nvml.nvmlDeviceGetCudaComputeCapability, handle)
            mem = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
            persistence = _optional(nvml.nvmlDeviceGetPersistenceMode, handle)
            procs = [
                *(_optional(nvml.nvmlDeviceGetComputeRunningProcesses, handle) or ()),
                *(_optional(nvml.nvmlDeviceGetGraphicsRunningProcesses, handle) or ()),
            ]
            limit = _named(nvml, "nvmlDeviceGetEnforcedPowerLimit", handle)
            default = _named(nvml, "nvmlDeviceGetPowerManagementDefaultLimit", handle)
            reasons = (
                _named(nvml, "nvmlDeviceGetCurrentClocksEventReasons", handle)
                or _named(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)  # older name
                or 0
            )
            mig = _named(nvml, "nvmlDeviceGetMigMode", handle)
            cc_tuple = (int(cc[0]), int(cc[1])) if cc else None
            gpus.append(
                Gpu(
                    index=index,
                    name=_nvml_str(nvml.nvmlDeviceGetName(handle)),
                    uuid=_nvml_str(nvml.nvmlDeviceGetUUID(handle)),
                    architecture=architecture_for(cc_tuple),
                    compute_capability=f"{cc_tuple[0]}.{cc_tuple[1]}" if cc_tuple else None,
                    memory_total_mib=int(mem.total) // (1024 * 1024) if mem else None,
                    pcie_generation=_optional(nvml.nvmlDeviceGetCurrPcieLinkGeneration, handle),
                    pcie_max_generation=_optional(nvml.nvmlDeviceGetMaxPcieLinkGeneration, handle),
                    pcie_width=_optional(nvml.nvmlDeviceGetCurrPcieLinkWidth, handle),
                    persistence_mode=None if persistence is None else bool(persistence),
                    memory_used_mib=int(mem.used) // (1024 * 1024) if mem else None,
                    processes=tuple(_nvml_process(nvml, p) for p in procs),
                    pcie_max_width=_named(nvml, "nvmlDeviceGetMaxPcieLinkWidth", handle),
                    power_limit_w=limit / 1000 if limit else None,
                    default_power_limit_w=default / 1000 if default else None,
                    throttle_reasons=tuple(
                        name for bit, name in THROTTLE_REASONS.items() if int(reasons) & bit
                    ),
                    mig_enabled=bool(mig[0]) if mig else None,
                )
            )
        return GpuFacts(driver, cuda, tuple(gpus), "nvml")
    except Exception as exc:
        return GpuFacts(None, None, (), "nvml", error=_nvml_error_sentence(exc))
    finally:
        _optional(nvml.nvmlShutdown)


def _named(nvml: Any, name: str, *args: Any) -> Any:
    """An NVML call this pynvml may not have (older releases name some calls differently)."""
    call = getattr(nvml, name, None)
    return None if call is None else _optional(call, *args)


def _nvml_process(nvml: Any, proc: Any) -> GpuProcess:
    used = getattr(proc, "usedGpuMemory", None)  # None where the driver will not say
    name = _optional(nvml.nvmlSystemGetProcessName, proc.pid)
    return GpuProcess(
        pid=int(proc.pid),
        name=_nvml_str(name) if name else "?",
        used_mib=int(used) // (1024 * 1024) if used else 0,
    )


def _nvml_error_sentence(exc: Exception) -> str:
    text = str(exc)
    if "Library Not Found" in text or "libnvidia-ml" in text or "LibraryNotFound" in text:
        return "no NVIDIA driver: libnvidia-ml.so (NVML) is not installed"
    if "Driver Not Loaded" in text:
        return "the NVIDIA kernel driver is not loaded"
    return f"NVML failed: {text or type(exc).__name__}"


def _float_in(text: str | None) -> float | None:
    match = re.search(r"\d+(?:\.\d+)?", text or "")
    return float(match.group()) if match else None


def _power(node: ET.Element, field: str) -> str | None:
    """A power reading from either layout of nvidia-smi's XML (gpu_power_readings since 535)."""
    return node.findtext(f"gpu_power_readings/{field}") or node.findtext(f"power_readings/{field}")


def _int_in(text: str | None) -> int | None:
    match = re.search(r"\d+", text or "")
    return int(match.group()) if match else None


def parse_nvidia_smi(xml_text: str, csv_text: str | None) -> GpuFacts:
    """nvidia-smi -q -x plus the --query-gpu CSV (the XML carries no compute capability)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        return GpuFacts(None, None, (), "nvidia-smi", error=f"unreadable nvidia-smi XML: {exc}")
    caps: dict[str, str] = {}
    if csv_text:
        rows = list(csv.reader(io.StringIO(csv_text.strip())))
        for row in rows[1:]:
            cells = [c.strip() for c in row]
            if len(cells) >= 4:
                caps[cells[2]] = cells[3]
    gpus = []
    for index, node in enumerate(root.findall("gpu")):
        uuid = (node.findtext("uuid") or "").strip()
        cc_text = caps.get(uuid)
        cc = None
        if cc_text and re.fullmatch(r"\d+\.\d+", cc_text):
            major, minor = cc_text.split(".")
            cc = (int(major), int(minor))
        link = node.find("pci/pci_gpu_link_info")
        persistence = (node.findtext("persistence_mode") or "").strip()
        gpus.append(
            Gpu(
                index=index,
                name=(node.findtext("product_name") or "unknown").strip(),
                uuid=uuid,
                architecture=architecture_for(cc)
                if cc
                else (node.findtext("product_architecture") or "unknown").strip(),
                compute_capability=cc_text if cc else None,
                memory_total_mib=_int_in(node.findtext("fb_memory_usage/total")),
                pcie_generation=_int_in(
                    link.findtext("pcie_gen/current_link_gen") if link is not None else None
                ),
                pcie_max_generation=_int_in(
                    link.findtext("pcie_gen/max_link_gen") if link is not None else None
                ),
                pcie_width=_int_in(
                    link.findtext("link_widths/current_link_width") if link is not None else None
                ),
                persistence_mode={"Enabled": True, "Disabled": False}.get(persistence),
                memory_used_mib=_int_in(node.findtext("fb_memory_usage/used")),
                processes=tuple(
                    GpuProcess(
                        pid=_int_in(p.findtext("pid")) or 0,
                        name=(p.findtext("process_name") or "?").strip(),
                        used_mib=_int_in(p.findtext("used_memory")) or 0,
                    )
                    for p in node.findall("processes/process_info")
                ),
                pcie_max_width=_int_in(
                    link.findtext("link_widths/max_link_width") if link is not None else None
                ),
                power_limit_w=_float_in(_power(node, "current_power_limit")),
                default_power_limit_w=_float_in(_power(node, "default_power_limit")),
                throttle_reasons=tuple(
                    name
                    for tag, name in _XML_THROTTLE.items()
                    if (node.findtext(f"clocks_event_reasons/{tag}") or "").strip() == "Active"
                ),
                mig_enabled={"Enabled": True, "Disabled": False}.get(
                    (node.findtext("mig_mode/current_mig") or "").strip()
                ),
            )
        )
    return GpuFacts(
        driver_version=(root.findtext("driver_version") or "").strip() or None,
        cuda_driver_version=(root.findtext("cuda_version") or "").strip() or None,
        gpus=tuple(gpus),
        via="nvidia-smi",
    )


def attribute_processes(gpu: GpuFacts, service_pids: dict[int, str], source: Source) -> GpuFacts:
    """Name the llmhost service of each GPU process: its own PID or an ancestor's (vLLM's engine
    runs in a child of the API server) is a service's main PID, read from /proc/PID/stat."""
    if not service_pids or not gpu.gpus:
        return gpu

    def service_of(pid: int) -> str | None:
        for _ in range(16):
            if pid in service_pids:
                return service_pids[pid]
            stat = source.read_text(f"/proc/{pid}/stat") or ""
            fields = stat.rpartition(")")[2].split()
            if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) <= 1:
                return None
            pid = int(fields[1])
        return None

    gpus = tuple(
        replace(g, processes=tuple(replace(p, service=service_of(p.pid)) for p in g.processes))
        for g in gpu.gpus
    )
    return replace(gpu, gpus=gpus)


def parse_module_version(text: str | None) -> tuple[str | None, str | None]:
    """/proc/driver/nvidia/version -> ("open" | "proprietary", "580.95.05")."""
    first = (text or "").splitlines()[0] if text else ""
    match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?(\d+\.\d+(?:\.\d+)?)", first)
    if not match:
        return None, None
    return ("open" if "Open Kernel Module" in first else "proprietary"), match.group(1)


def _kernel_side(source: Source, facts: GpuFacts) -> GpuFacts:
    flavour, version = parse_module_version(source.read_text("/proc/driver/nvidia/version"))
    dev = source.list_dir("/dev")
    return replace(
        facts,
        kernel_module=flavour,
        kernel_module_version=version,
        uvm_device=None if dev is None else "nvidia-uvm" in dev,
    )


def gather_gpu(source: Source) -> GpuFacts:
    nvml = source.nvml()
    if nvml is not None:
        return _kernel_side(source, from_nvml(nvml))
    xml_out = source.command("nvidia-smi-xml")
    if not xml_out.ok:
        facts = GpuFacts(None, None, (), "nvidia-smi", error=f"no NVIDIA driver: {xml_out.error}")
        return _kernel_side(source, facts)
    csv_out = source.command("nvidia-smi-csv")
    facts = parse_nvidia_smi(xml_out.stdout, csv_out.stdout if csv_out.ok else None)
    return _kernel_side(source, facts)
