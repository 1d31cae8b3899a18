"""`llmhost bench`: measure a served endpoint the way `vllm bench serve` does."""

from __future__ import annotations

import json
from pathlib import Path

import click

from llmhost.cli.app import JSON_OPTION, App, pass_app
from llmhost.cli.render import echo_json
from llmhost.config import SERVICE_PROFILES
from llmhost.errors import LlmhostError
from llmhost.facts import to_jsonable


@click.command("bench")
@click.option(
    "--service",
    type=click.Choice(sorted(SERVICE_PROFILES)),
    default=None,
    help="A deployed service (its URL, targets and image labels come from the plan).",
)
@click.option("--url", default=None, help="Any OpenAI-compatible base URL instead.")
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
@JSON_OPTION
@pass_app
def command(
    app: App,
    service: str | None,
    url: str | None,
    concurrency: tuple[int, ...],
    n_requests: int | None,
    max_tokens: int | None,
    mode: str,
    out_dir: str | None,
    compare_file: str | None,
    as_json: bool,
) -> None:
    """Stream requests, report TTFT/ITL/TPOT/E2E percentiles and tok/s, gate against targets."""
    from llmhost.bench.report import compare, gate, to_dict
    from llmhost.bench.runner import run_bench
    from llmhost.plan import make_plan
    from llmhost.validate import default_out_dir, evidence, image_labels, save, service_url

    if bool(service) == bool(url):
        raise LlmhostError("give exactly one of --service NAME or --url URL", exit_code=2)
    config = app.config()
    facts = app.facts()
    targets: dict[str, float] = {}
    labels: dict[str, str] = {}
    if service:
        profile = SERVICE_PROFILES[service]
        plan = make_plan(facts, config, "all" if profile == "gpu" else "cpu", headers={})
        svc = plan.service(service)
        assert svc is not None
        url, targets, labels = service_url(svc), svc.targets, image_labels(facts, svc.image)
    runs, checks = [], []
    for level in concurrency or (config.bench.concurrency,):
        result = run_bench(
            url,
            mode=mode,
            concurrency=level,  # type: ignore[arg-type]
            requests=n_requests or config.bench.requests,
            max_tokens=max_tokens or config.bench.max_tokens,
            warmup=config.bench.warmup,
            api_key=config.api_key,
        )
        runs.append(to_dict(result))
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
    if as_json:
        echo_json(report)
    else:
        _render(report, path)
    raise SystemExit(0 if report["passed"] else 1)


def _render(report: dict, path: Path) -> None:
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
    for check in report["gates"]:
        mark = "PASS" if check["passed"] else "FAIL"
        click.echo(f"  gate {check['target']}: {check['actual']} (limit {check['limit']}) {mark}")
    click.echo(f"verdict: {'PASS' if report['passed'] else 'FAIL'}  (saved {path})")
