"""`llmhost plan`: what llmhost will do on this host, and why."""

from __future__ import annotations

import click

from llmhost.cli.app import FROM_OPTION, JSON_OPTION, PROFILE_OPTION, App, pass_app
from llmhost.cli.layout import terminal_width
from llmhost.cli.render import echo_json, render_plan


@click.command("plan")
@PROFILE_OPTION
@JSON_OPTION
@FROM_OPTION
@click.option(
    "--host-files",
    is_flag=True,
    help="Print the drop-in files llmhost owns for this plan, as JSON {path: content}.",
)
@pass_app
def command(
    app: App,
    profile: str | None,
    as_json: bool,
    snapshot: str | None,
    host_files: bool,
) -> None:
    """Derive inference cores, hugepages, build flags and services from the host's facts."""
    _, plan = app.plan(profile, snapshot)
    if host_files:
        from llmhost.actions.host_files import host_files as render_host_files

        echo_json(render_host_files(plan))
    elif as_json:
        echo_json(plan)
    else:
        render_plan(plan, terminal_width())
