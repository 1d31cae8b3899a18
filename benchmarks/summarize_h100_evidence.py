"""Summarise the H100-host evidence run (benchmarks/gpu/h100_evidence.sh) and, beside it, the CI
VM's cpu_builds run: medians, spreads, ratios against the issue's targets, the GPU decode
account (time per token = per-layer cost + weight bytes / bandwidth), and one plot.

    python benchmarks/summarize_h100_evidence.py benchmarks/results/h100-evidence-2026-11-23 \\
        [--ci-vm benchmarks/results/cpu_builds-vm.json] [--plot docs/performance-evidence.png]

Writes summary.json and performance.png into the results folder (and --plot, if given).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from _results import merge_cpu_runs  # beside this script, first on sys.path

HBM_DATASHEET_B_S = 3.35e12  # H100 SXM5 80 GB HBM3, NVIDIA's datasheet figure
ROOFLINE_TARGET = 0.70  # the Evidence issue's decode target, fraction of the roofline
GPU_MODELS = ("tiny-q4_0", "1b-q4_0", "1b-q8_0", "7b-q4_0", "7b-q8_0")


# ---------------------------------------------------------------- CPU builds


def served_summary(path: Path) -> dict:
    data = json.loads(path.read_text())["served"]
    out = {k: data[k] for k in ("model", "requests", "max_tokens", "server_args")}
    out["runs"] = data["runs"]
    out["summary"] = data["summary"]
    plan, avx2 = data["summary"]["plan"], data["summary"]["avx2"]
    out["plan_vs_avx2"] = {
        "output_throughput": plan["output_throughput"]["median"]
        / avx2["output_throughput"]["median"],
        "median_tpot_ms_avx2_over_plan": avx2["median_tpot_ms"]["median"]
        / plan["median_tpot_ms"]["median"],
        "median_ttft_ms_avx2_over_plan": avx2["median_ttft_ms"]["median"]
        / plan["median_ttft_ms"]["median"],
    }
    return out


# ---------------------------------------------------------------- GPU


def weight_bytes_per_token(m: dict) -> float:
    """Weights read once per decoded token. The token-embedding matrix is a one-row lookup,
    unless the embeddings are tied: then it is also the output matrix, read whole."""
    if m["tied_embeddings"]:
        return float(m["tensor_bytes"])
    embd = m["token_embd_bytes"]
    return m["tensor_bytes"] - embd + embd / m["n_vocab"]


def kv_bytes_per_token(m: dict, n_gen: int) -> float:
    """f16 K and V read by attention, averaged over positions 0..n_gen-1; not in the roofline."""
    kv_dim = m["n_embd"] // m["n_head"] * m["n_head_kv"]
    return 2 * kv_dim * 2 * m["n_layer"] * (n_gen + 1) / 2


def llama_bench(path: Path) -> dict[str, dict]:
    out = {}
    for r in json.loads(path.read_text()):
        test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        out[test] = {
            "tok_s": r["avg_ts"],
            "stddev": r["stddev_ts"],
            "samples": r["samples_ts"],
            "flash_attn": r["flash_attn"],
            "n_gpu_layers": r["n_gpu_layers"],
        }
    return out


def ncu_summary(path: Path, tokens: int) -> dict:
    rows = list(csv.DictReader(path.open()))[1:]  # the second row holds the units (ns, byte)

    def num(s: str) -> float:
        return float(s.replace(",", "")) if s else 0.0

    by_kernel: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows:
        k = by_kernel[r["Kernel Name"]]
        k[0] += 1
        k[1] += num(r["gpu__time_duration.sum"])
        k[2] += num(r["dram__bytes_read.sum"])
    total_ns = sum(k[1] for k in by_kernel.values())
    return {
        "tokens": tokens,
        "kernels_per_token": len(rows) / tokens,
        "kernel_time_ms_per_token": total_ns / tokens / 1e6,
        "dram_read_bytes_per_token": sum(k[2] for k in by_kernel.values()) / tokens,
        "by_kernel": {
            name: {
                "launches_per_token": k[0] / tokens,
                "share_of_kernel_time": k[1] / total_ns,
                "dram_read_bytes_per_token": k[2] / tokens,
            }
            for name, k in sorted(by_kernel.items(), key=lambda kv: -kv[1][1])
        },
    }


def gpu_summary(root: Path) -> dict:
    gpu = root / "gpu"
    facts = json.loads((gpu / "models.json").read_text())
    hbm = json.loads((gpu / "hbm.json").read_text())
    read_bw = hbm["read_kernel_B_s"]["best"]
    models = {}
    for name in GPU_MODELS:
        m = facts[name]
        bench = llama_bench(gpu / f"bench-{name}.json")
        nographs = llama_bench(gpu / f"bench-{name}-nographs.json")
        tg = bench["tg128"]["tok_s"]
        weights = weight_bytes_per_token(m)
        models[name] = {
            "n_layer": m["n_layer"],
            "weight_bytes_per_token": weights,
            "kv_bytes_per_token_mean_tg128": kv_bytes_per_token(m, 128),
            "llama_bench": bench,
            "tg128_tok_s": tg,
            "ms_per_token": 1e3 / tg,
            "tg128_tok_s_cuda_graphs_off": nographs["tg128"]["tok_s"],
            "ms_per_token_cuda_graphs_off": 1e3 / nographs["tg128"]["tok_s"],
            "cuda_graphs_save_ms_per_token": 1e3 / nographs["tg128"]["tok_s"] - 1e3 / tg,
            "roofline_datasheet_tok_s": HBM_DATASHEET_B_S / weights,
            "fraction_of_datasheet_roofline": tg * weights / HBM_DATASHEET_B_S,
            "roofline_measured_read_tok_s": read_bw / weights,
            "fraction_of_measured_roofline": tg * weights / read_bw,
            "effective_B_s": tg * weights,
        }
    # time per token = per_layer * n_layer + weight_bytes / bandwidth, least squares over the
    # four real shapes (the tiny model is printed beside it as a check, not fitted)
    fitted = [n for n in GPU_MODELS if n != "tiny-q4_0"]
    a = np.array([[models[n]["n_layer"], models[n]["weight_bytes_per_token"]] for n in fitted])
    y = np.array([models[n]["ms_per_token"] / 1e3 for n in fitted])
    (per_layer_s, s_per_byte), *_ = np.linalg.lstsq(a, y, rcond=None)
    a1 = np.column_stack([np.ones(len(fitted)), a[:, 1]])
    (fixed_s, s_per_byte_1), *_ = np.linalg.lstsq(a1, y, rcond=None)
    fit = {
        "model": "ms_per_token = per_layer_us * n_layer / 1000 + weight_bytes / bandwidth",
        "fitted_on": fitted,
        "per_layer_us": per_layer_s * 1e6,
        "bandwidth_B_s": 1 / s_per_byte,
        "bandwidth_fraction_of_measured_read": (1 / s_per_byte) / read_bw,
        "residual_ms": {
            n: float((a[i] @ [per_layer_s, s_per_byte] - y[i]) * 1e3) for i, n in enumerate(fitted)
        },
        "predicted_ms_tiny": (
            models["tiny-q4_0"]["n_layer"] * per_layer_s
            + models["tiny-q4_0"]["weight_bytes_per_token"] * s_per_byte
        )
        * 1e3,
        "alternative_one_fixed_cost": {
            "fixed_ms": fixed_s * 1e3,
            "bandwidth_B_s": 1 / s_per_byte_1,
            "residual_ms": {
                n: float((a1[i] @ [fixed_s, s_per_byte_1] - y[i]) * 1e3)
                for i, n in enumerate(fitted)
            },
        },
    }
    m7 = models["7b-q4_0"]
    layer_ms = m7["n_layer"] * per_layer_s * 1e3
    target_ms = 1e3 / (ROOFLINE_TARGET * m7["roofline_datasheet_tok_s"])
    account = {
        "ms_per_token": m7["ms_per_token"],
        "per_layer_cost_ms": layer_ms,
        "per_layer_cost_share": layer_ms / m7["ms_per_token"],
        "weight_stream_ms_at_fitted_bandwidth": m7["weight_bytes_per_token"] * s_per_byte * 1e3,
        "weight_stream_ms_at_measured_read": m7["weight_bytes_per_token"] / read_bw * 1e3,
        "weight_stream_ms_at_datasheet": m7["weight_bytes_per_token"] / HBM_DATASHEET_B_S * 1e3,
        "target_fraction": ROOFLINE_TARGET,
        "target_ms_per_token": target_ms,
        "target_tok_s": 1e3 / target_ms,
        "per_layer_budget_us_for_target_at_fitted_bandwidth": (
            target_ms - m7["weight_bytes_per_token"] * s_per_byte * 1e3
        )
        / m7["n_layer"]
        * 1e3,
    }
    ncu = {
        n: ncu_summary(gpu / f"ncu-{n}.csv", 2) for n in fitted if (gpu / f"ncu-{n}.csv").exists()
    }
    for n, s in ncu.items():
        mmv = s["by_kernel"].get("mul_mat_vec_q", {}).get("dram_read_bytes_per_token", 0.0)
        s["mul_mat_vec_read_over_weight_bytes"] = mmv / models[n]["weight_bytes_per_token"]
        s["wall_ms_per_token_llama_bench"] = models[n]["ms_per_token"]
        s["kernels_per_layer"] = s["kernels_per_token"] / models[n]["n_layer"]
    return {
        "hbm_datasheet_B_s": HBM_DATASHEET_B_S,
        "hbm_measured": hbm,
        "hbm_read_fraction_of_datasheet": read_bw / HBM_DATASHEET_B_S,
        "models": models,
        "fit": fit,
        "account_7b_q4_0": account,
        "ncu": ncu,
    }


# ---------------------------------------------------------------- plot


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(19, 10))

    def ratio_panel(ax, run: dict, title: str) -> None:
        models = list(run["models"])
        bars = [
            ("plan_vs_avx2", "pp", "#36a"),
            ("plan_vs_avx2", "tg", "#8ad"),
            ("plan_vs_official", "pp", "#a63"),
            ("plan_vs_official", "tg", "#dba"),
        ]
        width = 0.2
        for j, (key, kind, color) in enumerate(bars):
            xs, meds, lo, hi = [], [], [], []
            for i, model in enumerate(models):
                row = run["models"][model]
                test = next(t for t in row.get(key, {}) if t.startswith(kind))
                r = row[key][test]
                rng = row[f"{key}_paired_range"][test]
                xs.append(i + (j - 1.5) * width)
                meds.append(r)
                lo.append(max(r - rng["min"], 0))
                hi.append(max(rng["max"] - r, 0))
            label = f"{kind} {key.replace('_', ' ')}"
            ax.bar(xs, meds, width, yerr=[lo, hi], color=color, label=label, capsize=2)
            for x, v, h in zip(xs, meds, hi, strict=True):
                ax.text(x, v + h + 0.03, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, max(2.6, ax.get_ylim()[1] * 1.15))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.axhline(2.0, color="#36a", linestyle=":", linewidth=1, label="pp vs AVX2 target 2.0")
        labels = [f"{m.removesuffix('.gguf')}\n{run['models'][m]['rounds']} rounds" for m in models]
        ax.set_xticks(range(len(models)), labels, fontsize=8)
        ax.set_ylabel("plan / other, median (bars: per-round min-max)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")

    xeon = summary["cpu_builds"]["h100_host_xeon"]
    ratio_panel(
        axes[0][0],
        xeon,
        f"CPU builds, {xeon['cpu']} 16 vCPU, {xeon['threads']} pinned "
        "threads: llama-bench pp512/tg128",
    )
    if "ci_vm" in summary["cpu_builds"]:
        vm = summary["cpu_builds"]["ci_vm"]
        ratio_panel(
            axes[0][1],
            vm,
            f"CPU builds, CI VM {vm['cpu']} 2 vCPU, {vm['threads']} "
            f"threads: pp{vm['n_prompt'] or 512}/tg{vm['n_gen'] or 64}",
        )
    else:
        axes[0][1].axis("off")

    ax = axes[0][2]
    served = summary["served_1b_q4_0"]["summary"]
    names = list(served)
    for i, (metric, color) in enumerate(
        (("output_throughput", "#4a7"), ("median_tpot_ms", "#a47"))
    ):
        s = [served[n][metric] for n in names]
        xs = [k + (i - 0.5) * 0.38 for k in range(len(names))]
        ax.bar(
            xs,
            [v["median"] for v in s],
            0.38,
            color=color,
            label=metric,
            capsize=3,
            yerr=[[v["median"] - v["min"] for v in s], [v["max"] - v["median"] for v in s]],
        )
        for x, v in zip(xs, s, strict=True):
            ax.text(x, v["max"] + 1, f"{v['median']:.1f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), [f"llama-server\n{n} build" for n in names])
    ax.set_title("Served 1B Q4_0 on the Xeon, `llmhost bench` c=1 (tok/s, TPOT ms)", fontsize=10)
    ax.legend(fontsize=8)

    gpu = summary["gpu"]
    fit = gpu["fit"]
    ax = axes[1][0]
    gb = np.linspace(0, 7.5, 50)
    for layers, style in ((16, "--"), (32, "-")):
        ax.plot(
            gb,
            layers * fit["per_layer_us"] / 1e3 + gb * 1e9 / fit["bandwidth_B_s"] * 1e3,
            style,
            color="#555",
            linewidth=1,
            label=f"fit, {layers} layers: {fit['per_layer_us']:.0f} µs/layer + "
            f"bytes / {fit['bandwidth_B_s'] / 1e12:.2f} TB/s",
        )
    read_bw = gpu["hbm_measured"]["read_kernel_B_s"]["best"]
    ax.plot(
        gb,
        gb * 1e9 / read_bw * 1e3,
        ":",
        color="crimson",
        label=f"bytes / measured HBM read {read_bw / 1e12:.2f} TB/s",
    )
    for name, m in gpu["models"].items():
        x = m["weight_bytes_per_token"] / 1e9
        ax.plot(x, m["ms_per_token"], "o", color="#36a")
        ax.annotate(
            f"{name}\n{m['tg128_tok_s']:.0f} tok/s",
            (x, m["ms_per_token"]),
            fontsize=7,
            xytext=(4, -14),
            textcoords="offset points",
        )
    ax.set_xlabel("weight bytes read per token (GB)")
    ax.set_ylabel("ms per decoded token (llama-bench tg128)")
    ax.set_title("H100 decode: time per token vs bytes per token", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1][1]
    acc = gpu["account_7b_q4_0"]
    parts = [
        ("per-layer cost\n(fit)", acc["per_layer_cost_ms"], "#a74"),
        ("weights at fitted\nbandwidth", acc["weight_stream_ms_at_fitted_bandwidth"], "#47a"),
    ]
    bottom = 0.0
    for label, v, color in parts:
        ax.bar(
            [0], [v], bottom=bottom, color=color, label=f"{label.replace(chr(10), ' ')}: {v:.2f} ms"
        )
        bottom += v
    refs = [
        ("measured", acc["ms_per_token"]),
        ("weights @ HBM read", acc["weight_stream_ms_at_measured_read"]),
        ("weights @ datasheet", acc["weight_stream_ms_at_datasheet"]),
        (f"{acc['target_fraction']:.0%} target", acc["target_ms_per_token"]),
    ]
    for i, (_label, v) in enumerate(refs, start=1):
        ax.bar([i], [v], color="#bbb")
        ax.text(i, v + 0.03, f"{v:.2f}", ha="center", fontsize=8)
    ticks = ["fit"] + [r[0].replace(" @ ", "\n@ ") for r in refs]
    ax.set_xticks(range(len(refs) + 1), ticks, fontsize=8)
    ax.set_ylabel("ms per token")
    ax.set_title("Llama-2-7B Q4_0 decode on the H100: where the time goes", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1][2]
    names = [n for n in ("1b-q4_0", "7b-q4_0", "7b-q8_0") if n in gpu["ncu"]]
    kernels = [
        "mul_mat_vec_q",
        "quantize_q8_1",
        "rms_norm_f32",
        "flash_attn_ext_vec",
        "rope_norm",
        "flash_attn_combine_results",
        "k_set_rows",
    ]
    bottom = np.zeros(len(names))
    for k in [*kernels, "other"]:
        vals = []
        for n in names:
            by = gpu["ncu"][n]["by_kernel"]
            if k == "other":
                vals.append(1 - sum(by.get(x, {}).get("share_of_kernel_time", 0) for x in kernels))
            else:
                vals.append(by.get(k, {}).get("share_of_kernel_time", 0))
        ax.bar(names, vals, bottom=bottom, label=k)
        bottom += np.array(vals)
    ax.set_ylim(0, 1.45)
    ax.set_ylabel("share of GPU kernel time per token (ncu)")
    ax.set_title("Decode kernels by share of kernel time (ncu, 2 tokens)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3)

    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _spread(d: dict, fmt: str) -> str:
    return f"{d['median']:{fmt}} ({d['min']:{fmt}}-{d['max']:{fmt}})"


def markdown(summary: dict) -> str:
    """The tables docs/performance.md quotes, so its numbers are copied, never retyped."""
    out = []
    for where, run in summary["cpu_builds"].items():
        out.append(f"\n{where}: {run['cpu']}, {run['threads']} threads, mask {run['cpu_mask']}")
        out.append(
            "| model | rounds x reps | test | plan | AVX2 | official | plan/AVX2 | plan/official |"
        )
        out.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for model, row in run["models"].items():
            for test in row["plan"]:
                cells = [_spread(row[v][test], ".1f") for v in ("plan", "avx2", "official")]
                for key in ("plan_vs_avx2", "plan_vs_official"):
                    paired = row[f"{key}_paired_range"][test]
                    miss = "" if row[f"{key}_met"][test] else " miss"
                    cells.append(
                        f"**{row[key][test]:.2f}**{miss} ({paired['min']:.2f}-{paired['max']:.2f})"
                    )
                head = f"{model.removesuffix('.gguf')} | {row['rounds']} x {row['reps_per_round']}"
                out.append(f"| {head} | {test} | " + " | ".join(cells) + " |")
    served = summary["served_1b_q4_0"]
    out.append("\n| llama-server build | output tok/s | median TTFT ms | median TPOT ms |")
    out.append("| --- | --- | --- | --- |")
    for name, s in served["summary"].items():
        cells = [
            _spread(s["output_throughput"], ".1f"),
            _spread(s["median_ttft_ms"], ".1f"),
            _spread(s["median_tpot_ms"], ".2f"),
        ]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out.append("served: " + json.dumps({k: round(v, 2) for k, v in served["plan_vs_avx2"].items()}))
    gpu = summary["gpu"]
    out.append(
        "\n| model | layers | weight GB/token | pp512 tok/s | tg128 tok/s | ms/token | "
        "ms/token, graphs off | datasheet roofline tok/s | of datasheet | of measured read |"
    )
    out.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, m in gpu["models"].items():
        out.append(
            f"| {name} | {m['n_layer']} | {m['weight_bytes_per_token'] / 1e9:.3f} | "
            f"{m['llama_bench']['pp512']['tok_s']:.0f} | {m['tg128_tok_s']:.1f} | "
            f"{m['ms_per_token']:.3f} | {m['ms_per_token_cuda_graphs_off']:.3f} | "
            f"{m['roofline_datasheet_tok_s']:.0f} | {m['fraction_of_datasheet_roofline']:.1%} | "
            f"{m['fraction_of_measured_roofline']:.1%} |"
        )
    hbm = {k: v["best"] / 1e12 for k, v in gpu["hbm_measured"].items() if k.endswith("_B_s")}
    out.append("HBM TB/s, best of 20: " + json.dumps({k: round(v, 2) for k, v in hbm.items()}))
    for key in ("fit", "account_7b_q4_0"):
        out.append(f"{key}: " + json.dumps(_rounded(gpu[key])))
    for name, n in gpu["ncu"].items():
        shares = {
            k: [v["launches_per_token"], round(v["share_of_kernel_time"], 3)]
            for k, v in n["by_kernel"].items()
        }
        head = {k: round(v, 3) for k, v in n.items() if isinstance(v, float)}
        out.append(f"ncu {name}: {json.dumps(head)} {json.dumps(shares)}")
    return "\n".join(out)


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4) if abs(value) < 1e6 else float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--ci-vm", type=Path, help="cpu_builds-<host>.json of the CI VM")
    parser.add_argument("--plot", type=Path, help="also copy the plot here")
    ns = parser.parse_args()
    root: Path = ns.root
    host = root / "host"
    cpu_runs = sorted((root / "cpu").glob("cpu_builds-*.json"))
    summary = {
        "host": {
            "plan_cpu_isa": json.loads((host / "plan-cpu.json").read_text())["build"]["cpu_isa"],
            "nvidia_smi": (host / "nvidia-smi.csv").read_text().splitlines(),
        },
        "cpu_builds": {"h100_host_xeon": merge_cpu_runs(cpu_runs)},
        "served_1b_q4_0": served_summary(next((root / "cpu").glob("served-*.json"))),
        "gpu": gpu_summary(root),
    }
    if ns.ci_vm:
        summary["cpu_builds"]["ci_vm"] = merge_cpu_runs([ns.ci_vm])
        summary["cpu_builds"]["ci_vm"]["file"] = str(ns.ci_vm)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary, root / "performance.png")
    if ns.plot:
        shutil.copyfile(root / "performance.png", ns.plot)
    print(markdown(summary))


if __name__ == "__main__":
    main()
