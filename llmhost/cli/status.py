"""`llmhost status`: the deployed services as Docker sees them."""

from __future__ import annotations

import click

from llmhost.cli.app import JSON_OPTION, App, pass_app
from llmhost.cli.render import echo_json
from llmhost.deploy import service_states


@click.command("status")
@JSON_OPTION
@pass_app
def command(app: App, as_json: bool) -> None:
    """Show each service's container state and health; exit 1 if any is not healthy."""
    config = app.config()
    states = service_states(config.project)
    if as_json:
        echo_json(states)
    elif not states:
        click.echo(f"nothing deployed in project {config.project!r}")
    for s in [] if as_json else states:
        click.echo(
            f"{s.service:<10} {s.state:<8} {s.health or '-':<10} "
            f"{'port ' + str(s.port) if s.port else ''}  ({s.container})"
        )
    bad = [s for s in states if s.state != "running" or s.health not in (None, "healthy")]
    raise SystemExit(1 if bad else 0)
