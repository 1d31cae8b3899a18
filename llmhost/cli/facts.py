"""`llmhost facts`: the raw detected facts, for scripts and bug reports."""

from __future__ import annotations

import click

from llmhost.cli.app import FROM_OPTION, App, pass_app
from llmhost.cli.render import echo_json


@click.command("facts")
@FROM_OPTION
@pass_app
def command(app: App, snapshot: str | None) -> None:
    """Print every detected fact as JSON."""
    echo_json(app.facts(snapshot))
