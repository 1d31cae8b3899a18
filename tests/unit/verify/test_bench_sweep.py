"""Sweeps: rows, table and plot from real report dicts (to_dict + evidence), and the CLI paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from llmhost.cli.app import App
from llmhost.cli.main import cli
from llmhost.facts import HostFacts, gather
from llmhost.facts.sources import SnapshotSource
from llmhost.verify.bench.capacity import instant_sse_server
from llmhost.verify.bench.metrics import summarize
from llmhost.verify.bench.report import to_dict
from llmhost.verify.bench.runner import BenchConfig, BenchResult
from llmhost.verify.bench.sweep import (
    PlotUnavailable,
    ReportError,
    sweep_figure,
    sweep_of,
    table_lines,
    write_plot,
)
from llmhost.verify.validate import evidence, save
from tests.support import ZEN4_SNAPSHOT
from tests.unit.verify.test_bench_metrics import FAILED, ok

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_TRACEBACK = "Traceback"


@pytest.fixture(scope="module")
def facts() -> HostFacts:
    return gather(SnapshotSource(ZEN4_SNAPSHOT))


@pytest.fixture(autouse=True)
def _no_host_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "llmhost-empty.yaml"
    empty.write_text("")
    monkeypatch.setenv("LLMHOST_CONFIG", str(empty))


def level(concurrency: int, url: str = "http://127.0.0.1:8080") -> dict[str, Any]:
    """One run at `concurrency`: TTFT 0.1c and 0.2c s, 4 tokens each, one failure, 2/c s."""
    records = [
        ok(0.1 * concurrency, (0.01, 0.01, 0.01), tokens=4),
        ok(0.2 * concurrency, (0.02, 0.02, 0.02), tokens=4, start=0.1),
        FAILED,
    ]
    config = BenchConfig(
        url=url,
        model="tiny.gguf",
        mode="completions",
        concurrency=concurrency,
        requests=len(records),
        max_tokens=4,
        warmup=1,
        prompt="hi",
        timeout_s=30.0,
    )
    result = BenchResult(config, tuple(records), summarize(records, 2.0 / concurrency))
    return to_dict(result)


def report(facts: HostFacts, levels=(8, 1, 32), service: str | None = "llama-cpu") -> dict:
    runs = [level(c) for c in levels]
    data = evidence(runs, facts, service=service, labels={}, gates=[])
    return json.loads(json.dumps(data))  # exactly what a saved file holds


def test_rows_from_a_report_with_three_levels(facts: HostFacts) -> None:
    sweep = sweep_of(report(facts))
    assert (sweep.label, sweep.model) == ("llama-cpu", "tiny.gguf")
    assert [r.concurrency for r in sweep.rows] == [1, 8, 32]  # sorted
    for row in sweep.rows:
        c = row.concurrency
        assert row.output_tok_s == pytest.approx(4.0 * c)  # 8 tokens in 2/c s
        assert row.request_s == pytest.approx(1.0 * c)
        assert row.ttft_median_ms == pytest.approx(150.0 * c)
        assert row.ttft_p90_ms == pytest.approx(190.0 * c)
        assert row.ttft_p99_ms == pytest.approx(199.0 * c)
        assert row.tpot_median_ms == pytest.approx(15.0)  # 10 and 20 ms
        assert row.itl_p90_ms == pytest.approx(20.0)
        assert (row.completed, row.failed) == (2, 1)


def test_table_has_one_line_per_level(facts: HostFacts) -> None:
    lines = table_lines(sweep_of(report(facts)))
    assert lines[0].startswith("sweep llama-cpu · tiny.gguf · ")
    assert lines[1].split() == [
        *("conc", "out", "tok/s", "req/s", "TTFT", "med", "TTFT", "p90", "TTFT", "p99"),
        *("TPOT", "med", "ITL", "p90", "ok", "failed"),
    ]
    first = ["1", "4.0", "1.00", "150.0", "190.0", "199.0", "15.0", "20.0", "2", "1"]
    assert lines[2].split() == first
    assert lines[4].split()[:3] == ["32", "128.0", "32.00"]
    assert len(lines) == 5
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


def test_label_is_the_url_without_a_service(facts: HostFacts) -> None:
    assert sweep_of(report(facts, service=None)).label == "http://127.0.0.1:8080"


def test_plot_of_a_saved_report_is_a_png(facts: HostFacts, tmp_path: Path) -> None:
    image = pytest.importorskip("matplotlib.image")
    saved = save(report(facts), tmp_path, "llama-cpu")
    sweep = sweep_of(json.loads(saved.read_text()), str(saved))
    png = write_plot([sweep], saved.with_suffix(".png"))
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000  # two panels, ticks, legend: not an empty canvas
    height, width, _ = image.imread(png).shape
    assert (width, height) == (990, 770)  # 9 x 7 in at 110 dpi


def test_figure_draws_one_line_per_report(facts: HostFacts) -> None:
    pytest.importorskip("matplotlib")
    cpu = sweep_of(report(facts, levels=(1, 8, 32), service="llama-cpu"))
    gpu = sweep_of(report(facts, levels=(1, 4, 16, 64), service="vllm-gpu"))
    throughput, ttft = sweep_figure([cpu, gpu]).axes
    for axes in (throughput, ttft):
        labels = [line.get_label() for line in axes.get_lines()]
        assert [label.split(" · ")[0] for label in labels] == ["llama-cpu", "vllm-gpu"]
    assert ttft.get_xscale() == "log"
    assert [t.get_text() for t in ttft.get_xticklabels()] == ["1", "4", "8", "16", "32", "64"]
    assert list(ttft.get_lines()[1].get_ydata()) == pytest.approx([190, 760, 3040, 12160])
    assert "tiny.gguf" in throughput.get_legend().get_texts()[0].get_text()


def test_figure_without_matplotlib_says_how_to_get_it(
    facts: HostFacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotUnavailable, match=r"pip install 'llmhost\[bench\]'"):
        sweep_figure([sweep_of(report(facts))])


# --- the CLI -------------------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def one_line(result, code: int, text: str) -> None:
    assert result.exit_code == code, result.output
    assert NO_TRACEBACK not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert text in lines[0]


def test_cli_plots_two_services_in_one_figure(facts: HostFacts, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    cpu = save(report(facts, service="llama-cpu"), tmp_path / "a", "llama-cpu")
    gpu = save(report(facts, levels=(1, 4, 16), service="vllm-gpu"), tmp_path / "b", "vllm-gpu")
    out = tmp_path / "plots"
    result = run("bench", "--plot", str(cpu), str(gpu), "--out", str(out))
    assert result.exit_code == 0, result.output
    png = out / f"{cpu.stem}-vs-{gpu.stem}.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert result.output.count("sweep ") == 2
    assert "sweep llama-cpu" in result.output and "sweep vllm-gpu" in result.output
    assert result.output.strip().endswith(f"plot: {png}")


def test_cli_plot_json(facts: HostFacts, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    saved = save(report(facts), tmp_path, "llama-cpu")
    result = CliRunner().invoke(cli, ["bench", "--plot", str(saved), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["plot"] == str(saved.with_suffix(".png").resolve())
    assert [r["concurrency"] for r in data["sweeps"][0]["rows"]] == [1, 8, 32]


def test_cli_plot_without_matplotlib_prints_the_table_and_one_line(
    facts: HostFacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    saved = save(report(facts), tmp_path, "llama-cpu")
    result = run("bench", "--plot", str(saved))
    assert result.exit_code == 1  # the plot asked for was not drawn
    assert NO_TRACEBACK not in result.output
    assert "sweep llama-cpu" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "plot skipped: matplotlib is not installed (pip install 'llmhost[bench]')"
    assert not saved.with_suffix(".png").exists()


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "text"),
    [
        (lambda d, r: ["--plot", str(d / "missing.json")], "missing.json: no such file"),
        (lambda d, r: ["--plot", str(d)], "cannot read"),
        (lambda d, r: ["--plot", _write(d, "x.json", "{oops")], "not a bench report: not JSON"),
        (lambda d, r: ["--plot", _write(d, "x.json", "[1, 2]")], "JSON list, no object"),
        (
            lambda d, r: ["--plot", _write(d, "run.json", json.dumps(r["runs"][0]))],
            "schema 'llmhost.bench/1', expected 'llmhost.bench-report/1'",
        ),
        (
            lambda d, r: ["--plot", _write(d, "x.json", json.dumps({**r, "runs": []}))],
            "it has no runs",
        ),
        (
            lambda d, r: [
                "--plot",
                _write(
                    d,
                    "x.json",
                    json.dumps({**r, "runs": [{**r["runs"][0], "summary": {"completed": 1}}]}),
                ),
            ],
            "run 1 is malformed (KeyError('output_throughput'))",
        ),
        (lambda d, r: ["--plot"], "--plot needs at least one saved REPORT.json"),
        (lambda d, r: ["report.json"], "saved reports need --plot"),
        (
            lambda d, r: ["--plot", "--url", "http://127.0.0.1:1", "report.json"],
            "it takes no --service, --url",
        ),
    ],
    ids=[
        "missing",
        "directory",
        "not-json",
        "json-list",
        "single-run",
        "no-runs",
        "malformed-run",
        "no-files",
        "no-plot-flag",
        "with-url",
    ],
)
def test_cli_plot_bad_input_is_one_line_exit_2(
    facts: HostFacts, tmp_path: Path, make_args, text: str
) -> None:
    result = run("bench", *make_args(tmp_path, report(facts)))
    one_line(result, 2, text)


def test_report_error_is_a_usage_error() -> None:
    assert ReportError("x").exit_code == 2


# --- a real sweep, end to end, against the in-process instant SSE server ----------------------


@pytest.fixture
def snapshot_facts(facts: HostFacts, monkeypatch: pytest.MonkeyPatch) -> None:
    """Host facts from a recorded host, so the sweep never asks this host's Docker engine."""
    monkeypatch.setattr(App, "facts", lambda self, snapshot=None, containers=True: facts)


def sweep_args(url: str, out: Path) -> list[str]:
    sizes = ["--requests", "4", "--max-tokens", "8"]
    return [
        "bench",
        "--url",
        url,
        "--concurrency",
        "1",
        "--concurrency",
        "2",
        *sizes,
        "--out",
        str(out),
    ]


@pytest.mark.usefixtures("snapshot_facts")
def test_sweep_ends_in_a_table_and_a_plot_next_to_the_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    with instant_sse_server() as url:
        result = run(*sweep_args(url, tmp_path))
    assert result.exit_code == 0, result.output
    (saved,) = tmp_path.glob("url-*.json")
    data = json.loads(saved.read_text())
    assert data["plot"] == str(saved.with_suffix(".png").resolve())
    assert saved.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"sweep {url} · capacity"))
    details = [i for i, line in enumerate(lines) if line.startswith(f"{url}  model capacity")]
    assert len(details) == 2 and details[-1] < start  # after the per-level details
    assert [line.split()[0] for line in lines[start + 2 : start + 4]] == ["1", "2"]
    assert [line.split()[-2:] for line in lines[start + 2 : start + 4]] == [["4", "0"]] * 2
    assert lines[start + 4] == f"plot: {saved.with_suffix('.png')}"
    assert lines[-1].startswith("verdict: PASS")


@pytest.mark.usefixtures("snapshot_facts")
def test_sweep_without_matplotlib_saves_the_report_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with instant_sse_server() as url:
        result = run(*sweep_args(url, tmp_path))
    assert result.exit_code == 0, result.output
    assert NO_TRACEBACK not in result.output
    assert "plot skipped: matplotlib is not installed (pip install 'llmhost[bench]')" in (
        result.output
    )
    (saved,) = tmp_path.glob("url-*.json")
    assert json.loads(saved.read_text())["plot"] is None
    assert not list(tmp_path.glob("*.png"))
