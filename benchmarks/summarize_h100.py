"""Summarise the H100 run (benchmarks/gpu/h100_driver.sh): medians, spreads, ratios, roofline,
and a plot. Reads benchmarks/results/h100-<date>/, writes summary.json and performance.png there.

    python benchmarks/summarize_h100.py benchmarks/results/h100-2026-11-23
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HBM_BYTES_PER_S = 3.35e12  # H100 SXM5 80 GB HBM3, NVIDIA's datasheet figure


def bytes_per_token(model_size: int, n_vocab: int = 32000, n_embd: int = 4096) -> float:
    """Weights read once per decoded token; the token-embedding matrix is a lookup (one row).
    Q4_0 stores 4.5 bits per weight; KV-cache reads at these short contexts are < 1 %."""
    embd_bytes = n_vocab * n_embd * 4.5 / 8
    return model_size - embd_bytes + embd_bytes / n_vocab


def gpu_matrix(root: Path) -> dict:
    rows = {}
    for graphs in ("on", "off"):
        for r in json.loads((root / f"llama-bench-graphs-{graphs}.json").read_text()):
            test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
            key = f"fa={'on' if r['flash_attn'] else 'off'},graphs={graphs}"
            rows.setdefault(key, {})[test] = {
                "tok_s": r["avg_ts"],
                "stddev": r["stddev_ts"],
                "samples": r["samples_ts"],
            }
            rows[key]["model_size"] = r["model_size"]
    return rows


def cpu_matrix(root: Path) -> dict:
    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((root / "cpu").glob("cpu-*-r*.json")):
        name = path.name.removeprefix("cpu-").rsplit("-r", 1)[0]
        for r in json.loads(path.read_text()):
            test = "pp512" if r["n_prompt"] else "tg128"
            runs[name][test].extend(r["samples_ts"])
    return {
        name: {
            t: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
            for t, v in tests.items()
        }
        for name, tests in runs.items()
    }


def main(root: Path) -> None:
    gpu = gpu_matrix(root)
    best = gpu["fa=on,graphs=on"]
    per_token = bytes_per_token(best["model_size"])
    roofline = HBM_BYTES_PER_S / per_token
    served = {
        c: json.loads((root / f"bench-c{c}.json").read_text())["runs"][0]["summary"] for c in (1, 4)
    }
    cpu = cpu_matrix(root)
    base = cpu["threads8"]
    summary = {
        "gpu": {
            "llama_bench": gpu,
            "roofline_tok_s": roofline,
            "bytes_per_token": per_token,
            "decode_fraction_of_roofline": {
                k: v["tg128"]["tok_s"] / roofline for k, v in gpu.items()
            },
            "served": {
                f"concurrency_{c}": {
                    k: s[k]
                    for k in ("output_throughput", "median_ttft_ms", "median_tpot_ms", "p99_itl_ms")
                }
                for c, s in served.items()
            },
        },
        "cpu_emerald_rapids_16c_1b_q4_0": {
            "runs": cpu,
            "ratios_vs_threads8_unpinned": {
                name: {t: cpu[name][t]["median"] / base[t]["median"] for t in ("pp512", "tg128")}
                for name in cpu
            },
        },
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(root, gpu, roofline, cpu)
    print(json.dumps({k: v for k, v in summary["gpu"].items() if k != "llama_bench"}, indent=2))
    print(
        json.dumps(
            summary["cpu_emerald_rapids_16c_1b_q4_0"]["ratios_vs_threads8_unpinned"], indent=2
        )
    )


def plot(root: Path, gpu: dict, roofline: float, cpu: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    names = list(gpu)
    values = [gpu[n]["tg128"]["tok_s"] for n in names]
    errors = [gpu[n]["tg128"]["stddev"] for n in names]
    ax1.bar(names, values, yerr=errors, color=["#888", "#4a7", "#aaa", "#7b9"][: len(names)])
    ax1.axhline(roofline, color="crimson", linestyle="--", label=f"HBM roofline {roofline:.0f}")
    ax1.axhline(0.7 * roofline, color="orange", linestyle=":", label="70 % target")
    for i, v in enumerate(values):
        ax1.text(i, v + 10, f"{v:.0f}\n({v / roofline:.0%})", ha="center", fontsize=9)
    ax1.set_title("H100: Llama-2-7B Q4_0 decode (llama-bench tg128)")
    ax1.set_ylabel("tokens/s")
    ax1.legend(loc="upper left", fontsize=8)
    ax1.tick_params(axis="x", labelsize=8)

    order = ["default", "threads8", "pinned8", "pinned8_nommap", "pinned8_thp", "pinned8_hugetlb"]
    order = [o for o in order if o in cpu]
    x = range(len(order))
    for offset, test, color in ((-0.2, "pp512", "#47a"), (0.2, "tg128", "#a74")):
        med = [cpu[o][test]["median"] / cpu["threads8"][test]["median"] for o in order]
        lo = [
            m - cpu[o][test]["min"] / cpu["threads8"][test]["median"]
            for m, o in zip(med, order, strict=True)
        ]
        hi = [
            cpu[o][test]["max"] / cpu["threads8"][test]["median"] - m
            for m, o in zip(med, order, strict=True)
        ]
        ax2.bar([i + offset for i in x], med, width=0.4, yerr=[lo, hi], color=color, label=test)
    ax2.axhline(1.0, color="black", linewidth=0.8)
    ax2.set_xticks(list(x), order, rotation=20, fontsize=8)
    ax2.set_ylim(0.7, 1.3)
    ax2.set_title("Xeon (Emerald Rapids, 16 vCPU), 1B Q4_0 on CPU: vs 8 unpinned threads")
    ax2.set_ylabel("ratio (median, min-max bars)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "performance.png", dpi=110)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
