"""`llmhost bench`: measure a served endpoint the way `vllm bench serve` does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from llmhost.cli.app import JSON_OPTION, QUIET_OPTION, App, pass_app
from llmhost.cli.render import echo_json
from llmhost.errors import LlmhostError
from llmhost.facts import to_jsonable
from llmhost.plan.config import SERVICE_PROFILES

if TYPE_CHECKING:
    from llmhost.verify.bench.sweep import Sweep


@click.command("bench")
@click.option(
    "--service",
    type=click.Choice(sorted(SERVICE_PROFILES)),
    default=None,
    help="A deployed service (its URL, targets and image labels come from the plan).",
)
@click.option("--url", default=None, help="Any OpenAI-compatible base URL instead.")
@click.option(
    "--send-key",
    is_flag=True,
    help="Send the configured api_key to --url too (it goes to --service endpoints only).",
)
@click.option(
    "--concurrency",
    "concurrency",
    type=click.IntRange(1, 1024),
    multiple=True,
    help="Concurrent requests; repeat for a sweep (default: the config's).",
)
@click.option("--requests", "n_requests", type=click.IntRange(1, 100000), default=None)
@click.option("--max-tokens", type=click.IntRange(1, 65536), default=None)
@click.option("--mode", type=click.Choice(["completions", "chat"]), default="completions")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Directory for the JSON result (default: the llmhost state dir).",
)
@click.option(
    "--compare",
    "compare_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="An earlier result JSON to compare against.",
)
@click.option(
    "--plot",
    "replot",
    is_flag=True,
    help="Redraw the table and plot of saved REPORT.json files (one line each) instead.",
)
@click.argument("reports", nargs=-1, metavar="[REPORT.json]...")
@JSON_OPTION
@QUIET_OPTION
@pass_app
def command(
    app: App,
    service: str | None,
    url: str | None,
    send_key: bool,
    concurrency: tuple[int, ...],
    n_requests: int | None,
    max_tokens: int | None,
    mode: str,
    out_dir: str | None,
    compare_file: str | None,
    replot: bool,
    reports: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Stream requests, report TTFT/ITL/TPOT/E2E percentiles and tok/s, gate against targets.

    A sweep (several --concurrency) ends in one table and a PNG next to the saved JSON;
    `--plot REPORT.json ...` redraws saved reports, one line per report, in one figure.
    """
    if replot or reports:
        bench_options = (service, url, concurrency, n_requests, max_tokens, compare_file)
        _replot(reports, out_dir, as_json, benching=any(bench_options), replot=replot)
        return
    from llmhost.verify.bench.report import compare, gate, to_dict
    from llmhost.verify.bench.runner import run_bench
    from llmhost.verify.validate import (
        default_out_dir,
        evidence,
        image_labels,
        save,
        service_url,
        write_report,
    )

    if bool(service) == bool(url):
        raise LlmhostError("give exactly one of --service NAME or --url URL", exit_code=2)
    if send_key and not url:
        raise LlmhostError("--send-key is for --url (a --service gets the key anyway)", exit_code=2)
    config = app.config()
    facts = app.facts()
    targets: dict[str, float] = {}
    labels: dict[str, str] = {}
    gated_at = None
    if service:
        profile = SERVICE_PROFILES[service]
        _, plan = app.plan("all" if profile == "gpu" else "cpu", facts=facts)
        svc = plan.service(service)
        assert svc is not None
        url, targets, labels = service_url(svc), svc.targets, image_labels(facts, svc.image)
        gated_at = svc.bench_concurrency
    runs, checks = [], []
    for level in concurrency or (config.bench.concurrency or gated_at or 1,):
        n = n_requests or max(config.bench.requests, 2 * level)
        tokens = max_tokens or config.bench.max_tokens
        if not quiet:  # on stderr: --json keeps stdout to the report
            click.echo(f"{url}: {level} user(s), {n} requests of {tokens} tokens", err=True)
        result = run_bench(
            url,
            mode=mode,
            concurrency=level,  # type: ignore[arg-type]
            requests=n,
            max_tokens=tokens,
            warmup=config.bench.warmup,
            api_key=key_for(config.api_key, service=service, send_key=send_key),
        )
        runs.append(to_dict(result))
        if gated_at in (None, level):  # a service's targets hold at its serving concurrency
            checks += gate(result, targets)
    report = evidence(runs, facts, service=service, labels=labels, gates=checks)
    if compare_file:
        try:
            old = json.loads(Path(compare_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LlmhostError(f"cannot read {compare_file}: {exc}") from None
        old_runs = old.get("runs", [old])
        report["compare"] = to_jsonable(
            [compare(o, n) for o, n in zip(old_runs, runs, strict=False)]
        )
    path = save(report, Path(out_dir) if out_dir else default_out_dir(), service or "url")
    sweep, plot_line = None, ""
    if len(runs) > 1:
        from llmhost.verify.bench.sweep import sweep_of

        sweep = sweep_of(report, str(path))
        png, plot_line = _plot([sweep], path.with_suffix(".png"))
        report["plot"] = str(png.resolve()) if png else None
        write_report(report, path)
    if as_json:
        echo_json(report)
        if plot_line:
            click.echo(plot_line, err=True)
    else:
        _render(report, path, sweep, plot_line)
    raise SystemExit(0 if report["passed"] else 1)


def _replot(
    reports: tuple[str, ...], out_dir: str | None, as_json: bool, *, benching: bool, replot: bool
) -> None:
    """`--plot`: tables and one figure from saved reports; exit 1 when the plot was skipped."""
    from llmhost.verify.bench.sweep import plot_name, read_report, sweep_of, table_lines

    if not replot:
        raise LlmhostError(f"unexpected argument {reports[0]!r}; saved reports need --plot", 2)
    if not reports:
        raise LlmhostError("--plot needs at least one saved REPORT.json", exit_code=2)
    if benching:
        raise LlmhostError(
            "--plot redraws saved reports; it takes no --service, --url, --concurrency, "
            "--requests, --max-tokens or --compare",
            exit_code=2,
        )
    paths = [Path(r) for r in reports]
    sweeps = [sweep_of(read_report(p), str(p)) for p in paths]
    png = Path(out_dir or paths[0].parent) / plot_name(paths)
    written, plot_line = _plot(sweeps, png)
    if as_json:
        echo_json({"sweeps": sweeps, "plot": str(written.resolve()) if written else None})
    else:
        click.echo("\n\n".join("\n".join(table_lines(sweep)) for sweep in sweeps))
    click.echo(plot_line, err=as_json)
    raise SystemExit(0 if written else 1)


def _plot(sweeps: list[Sweep], png: Path) -> tuple[Path | None, str]:
    """Write the figure; the line to print says where, or why it was skipped."""
    from llmhost.verify.bench.sweep import PlotUnavailable, write_plot

    try:
        written = write_plot(sweeps, png)
    except PlotUnavailable as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"plot skipped: cannot write {png}: {exc.strerror or exc}"
    return written, f"plot: {written}"


def _render(report: dict, path: Path, sweep: Sweep | None, plot_line: str) -> None:
    for run in report["runs"]:
        s, c = run["summary"], run["config"]
        click.echo(
            f"{c['url']}  model {c['model']}  concurrency {c['concurrency']}  "
            f"{s['completed']} ok / {s['failed']} failed in {s['duration']:.2f} s"
        )
        click.echo(
            f"  output {s['output_throughput']:.1f} tok/s, {s['request_throughput']:.2f} req/s"
        )
        click.echo(f"  {'ms':<6}{'mean':>10}{'median':>10}{'p90':>10}{'p99':>10}")
        for metric in ("ttft", "tpot", "itl", "e2el"):
            cells = [s[f"{stat}_{metric}_ms"] for stat in ("mean", "median", "p90", "p99")]
            click.echo(f"  {metric:<6}" + "".join(f"{v:10.1f}" for v in cells))
    for rows in report.get("compare", []):
        click.echo("  change vs earlier run:")
        for row in rows:
            if row["metric"] in (
                "output_throughput",
                "median_ttft_ms",
                "median_itl_ms",
                "p99_ttft_ms",
                "median_tpot_ms",
            ):
                ratio = f"x{row['ratio']:.2f}" if row["ratio"] else "-"
                click.echo(
                    f"    {row['metric']:<20} {row['old']:10.1f} -> {row['new']:10.1f}  "
                    f"{ratio}  {row['verdict']}"
                )
    if sweep is not None:
        from llmhost.verify.bench.sweep import table_lines

        click.echo("\n".join(table_lines(sweep)))
        click.echo(plot_line)
    for check in report["gates"]:
        mark = "PASS" if check["passed"] else "FAIL"
        click.echo(f"  gate {check['target']}: {check['actual']} (limit {check['limit']}) {mark}")
    click.echo(f"verdict: {'PASS' if report['passed'] else 'FAIL'}  (saved {path})")


def key_for(api_key: str | None, *, service: str | None, send_key: bool) -> str | None:
    """The API key goes to llmhost's own services; another URL gets it only when asked, so a
    typo or a third-party endpoint never receives it."""
    return api_key if service or send_key else None
