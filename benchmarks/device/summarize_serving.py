"""Summarise the GPU serving run (benchmarks/device/gpu_serving.sh) into summary.json and a
markdown table: per engine and concurrency, throughput and TTFT against the serving
configuration's targets (llmhost.plan.services.TARGETS), the memory the plan gave each engine
against what nvidia-smi saw, and single-stream decode against the HBM roofline.

    python benchmarks/device/summarize_serving.py benchmarks/results/h200-2026-11-29
    python benchmarks/device/summarize_serving.py benchmarks/results/h200x2-2026-11-30
    python benchmarks/device/summarize_serving.py benchmarks/results/h200x2-tp-2026-11-30
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from llmhost.plan.services import LLAMA_CPP, TARGETS, VLLM

# Device-to-device copy on the H200 test machine (reads + writes), KINDS.md, 2026-11-04.
HBM_BYTES_PER_S = 4.3e12
RUNS = {  # report file -> (service, engine, serving configuration, plan)
    "bench-llama-gpu-latency.json": ("llama-gpu", LLAMA_CPP, "latency", "A"),
    "bench-vllm-gpu-throughput.json": ("vllm-gpu", VLLM, "throughput", "A"),
    "bench-vllm-gpu-throughput-1api.json": ("vllm-gpu", VLLM, "throughput", "A1"),
    "bench-llama-gpu-throughput.json": ("llama-gpu", LLAMA_CPP, "throughput", "B"),
    "bench-llama-gpu-throughput-steady.json": ("llama-gpu", LLAMA_CPP, "throughput", "B"),
    "bench-vllm-gpu-tp2.json": ("vllm-gpu", VLLM, "throughput", "C"),
}


def decode_bytes(plan: dict, service: str) -> int:
    """Bytes one decoded token reads on each GPU: the weights there (llama.cpp's input embedding
    is a host-side lookup; vLLM's is one row of it, so neither reads the matrix). With tensor
    parallelism each GPU holds and reads its shard, embedding included, in parallel."""
    place = plan["gpu_memory"]["placements"][service]
    weights = place["parts"]["weights"]
    if service == "vllm-gpu":  # the embedding matrix of a Llama-2-7B: 32000 x 4096 x bf16
        weights -= 32000 * 4096 * 2 // place.get("tensor_parallel_size", 1)
    return weights


def main(root: Path) -> None:
    plans = {
        p: json.loads((root / f"plan-{p}.json").read_text())
        for p in ("A", "A1", "B", "C")
        if (root / f"plan-{p}.json").exists()
    }
    rows, out = [], {"runs": [], "memory": {}}
    for name, (service, engine, serving, plan) in RUNS.items():
        path = root / name
        if not path.exists():
            continue
        report = json.loads(path.read_text())
        at, targets = TARGETS[(engine, "gpu", serving)]
        for run in report["runs"]:
            s, c = run["summary"], run["config"]
            level = c["concurrency"]
            checks = {}
            if level == at:
                for target, limit in targets.items():
                    value = {"ttft_p90_ms": s["p90_ttft_ms"], "output_tok_s_min":
                             s["output_throughput"], "failed_max": s["failed"]}[target]  # fmt: skip
                    ok = value >= limit if target.endswith("_min") else value <= limit
                    checks[target] = {"limit": limit, "value": round(value, 1), "met": ok}
            entry = {
                "report": name, "service": service, "serving": serving, "plan": plan,
                "concurrency": level, "requests": c["requests"], "max_tokens": c["max_tokens"],
                "output_tok_s": round(s["output_throughput"], 1),
                "ttft_p90_ms": round(s["p90_ttft_ms"], 1),
                "tpot_median_ms": round(s["median_tpot_ms"], 2),
                "failed": s["failed"], "targets": checks,
            }  # fmt: skip
            if level == 1:
                bytes_per_token = decode_bytes(plans[plan], service)
                roofline = HBM_BYTES_PER_S / bytes_per_token
                entry["decode_roofline_tok_s"] = round(roofline, 1)
                entry["decode_share_of_roofline"] = round(1000 / s["median_tpot_ms"] / roofline, 3)
            out["runs"].append(entry)
            verdict = " ".join(
                f"{k} {'met' if v['met'] else 'MISSED'} ({v['value']} vs {v['limit']})"
                for k, v in checks.items()
            )
            many = f", {c['requests']} requests" if c["requests"] != 64 else ""
            rows.append(
                f"| {service} | {serving} (plan {plan}{many}) "
                f"| {level} | {entry['output_tok_s']} | {entry['ttft_p90_ms']} "
                f"| {entry['tpot_median_ms']} | {verdict or '-'} |"
            )
    for p, plan in plans.items():
        if not (root / f"gpu-memory-{p}.csv").exists():
            continue
        seen = (root / f"gpu-memory-{p}.csv").read_text()
        apps = list(csv.DictReader(io.StringIO(seen.split("pid,", 1)[-1].join(["pid,", ""]))))
        out["memory"][p] = {
            "planned_mib": {
                str(row["index"]): row["planned_mib"] for row in plan["gpu_memory"]["rows"]
            },
            "nvidia_smi": [{k.strip(): v.strip() for k, v in a.items()} for a in apps],
        }
    (root / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
    print("| service | serving | users | output tok/s | TTFT p90 ms | TPOT median ms | targets |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    for entry in out["runs"]:
        if "decode_share_of_roofline" in entry:
            print(f"{entry['service']} ({entry['serving']}) 1 user: "
                  f"{entry['decode_share_of_roofline']:.0%} of {entry['decode_roofline_tok_s']} "
                  "tok/s decode roofline")  # fmt: skip
    print(json.dumps(out["memory"], indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
