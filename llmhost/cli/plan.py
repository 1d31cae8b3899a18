"""`llmhost plan`: what llmhost will do on this host, and why."""

from __future__ import annotations

from pathlib import Path

import click

from llmhost.cli.app import FROM_OPTION, JSON_OPTION, PROFILE_OPTION, App, pass_app
from llmhost.cli.layout import terminal_width
from llmhost.cli.render import echo_json, render_plan
from llmhost.inventory import write_host_vars


@click.command("plan")
@PROFILE_OPTION
@JSON_OPTION
@FROM_OPTION
@click.option(
    "--write-inventory",
    type=click.Path(),
    default=None,
    help="Write Ansible host_vars for this host (a .yml file, or a host_vars directory).",
)
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
    write_inventory: str | None,
    host_files: bool,
) -> None:
    """Derive inference cores, hugepages, build flags and services from the host's facts."""
    _, plan = app.plan(profile, snapshot)
    if write_inventory:
        path = write_host_vars(plan, Path(write_inventory))
        if not as_json:
            click.echo(f"wrote {path}")
    if host_files:
        from llmhost.host_files import host_files as render_host_files

        echo_json(render_host_files(plan))
    elif as_json:
        echo_json(plan)
    else:
        render_plan(plan, terminal_width())
