"""`llmhost deploy`: the plan's services up, healthy, and smoke-benchmarked."""

from __future__ import annotations

import click

from llmhost.actions import deploy as deploy_lib
from llmhost.cli.app import PROFILE_OPTION, QUIET_OPTION, App, pass_app


@click.command("deploy")
@PROFILE_OPTION
@click.option(
    "--timeout",
    "timeout_s",
    type=click.IntRange(10, 7200),
    default=600,
    show_default=True,
    help="Seconds to wait for every service to become healthy.",
)
@click.option(
    "--bench/--no-bench",
    default=True,
    show_default=True,
    help="Run the smoke benchmark once healthy.",
)
@click.option(
    "--no-hugepages",
    is_flag=True,
    help="Start even if the hugepage pool is short (weights on normal pages).",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the compose project and the GPU memory table; touch neither Docker nor the host.",
)
@QUIET_OPTION
@pass_app
def command(
    app: App,
    profile: str | None,
    timeout_s: int,
    bench: bool,
    no_hugepages: bool,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Render the compose project from the plan, start it and wait until healthy."""
    config = app.config()
    if dry_run:
        from llmhost.cli.render import gpu_memory_lines

        _, plan = app.plan(profile)
        click.echo(deploy_lib.render_compose(plan, config), nl=False)
        for line in gpu_memory_lines(plan):
            click.echo(f"#{line}")
        return
    from llmhost.progress import quiet as silent

    facts, plan = app.plan(profile)
    progress = silent if quiet else click.echo
    progress(f"deploying {', '.join(s.name for s in plan.services)} (profile {plan.profile})")
    deploy_lib.up(
        plan,
        config,
        facts,
        progress=progress,
        timeout_s=timeout_s,
        allow_no_hugepages=no_hugepages,
    )
    for svc in plan.services:
        click.echo(f"  {svc.name:<10} healthy on http://{svc.bind_address}:{svc.port}/v1")
    if bench:
        from llmhost.verify.validate import smoke_all

        if not smoke_all(plan, config, facts, echo=click.echo):
            raise SystemExit(1)
