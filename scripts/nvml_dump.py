"""Dump what NVML returns on this host (types included) to ground the test doubles in reality."""

from __future__ import annotations

import json
import sys

import pynvml


def main() -> None:
    out: dict[str, object] = {}
    pynvml.nvmlInit()
    out["driver"] = repr(pynvml.nvmlSystemGetDriverVersion())
    out["cuda"] = repr(pynvml.nvmlSystemGetCudaDriverVersion())
    gpus = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        row: dict[str, str] = {}
        for name in (
            "nvmlDeviceGetName",
            "nvmlDeviceGetUUID",
            "nvmlDeviceGetCudaComputeCapability",
            "nvmlDeviceGetMemoryInfo",
            "nvmlDeviceGetCurrPcieLinkGeneration",
            "nvmlDeviceGetMaxPcieLinkGeneration",
            "nvmlDeviceGetCurrPcieLinkWidth",
            "nvmlDeviceGetPersistenceMode",
            "nvmlDeviceGetArchitecture",
        ):
            try:
                value = getattr(pynvml, name)(h)
                row[name] = repr(getattr(value, "total", value))
            except pynvml.NVMLError as exc:
                row[name] = f"NVMLError: {exc}"
        gpus.append(row)
    out["gpus"] = gpus
    pynvml.nvmlShutdown()
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
