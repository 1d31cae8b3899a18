"""`llmhost down`: stop and remove the deployed services."""

from __future__ import annotations

import click

from llmhost.actions.deploy import down, service_states
from llmhost.cli.app import App, pass_app


@click.command("down")
@pass_app
def command(app: App) -> None:
    """Stop and remove every container of the llmhost compose project."""
    project = app.config().project
    down(project)
    left = [s.container for s in service_states(project)]
    if left:
        from llmhost.errors import LlmhostError

        raise LlmhostError(f"containers still present after down: {', '.join(left)}")
    click.echo(f"project {project!r}: no containers left")
