"""`llmhost logs SERVICE`: a deployed service's recent log lines."""

from __future__ import annotations

import click

from llmhost.cli.app import App, pass_app
from llmhost.config import SERVICE_PROFILES
from llmhost.deploy import compose, compose_path
from llmhost.errors import LlmhostError


@click.command("logs")
@click.argument("service", type=click.Choice(sorted(SERVICE_PROFILES)))
@click.option("-n", "--tail", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@pass_app
def command(app: App, service: str, tail: int, follow: bool) -> None:
    """Print SERVICE's log lines (llama-cpu, llama-gpu or vllm-gpu)."""
    project = app.config().project
    if not compose_path(project).exists():
        raise LlmhostError(f"nothing deployed in project {project!r}: run `llmhost deploy`")
    args = ["logs", "--no-color", "--tail", str(tail), *(["--follow"] if follow else []), service]
    if follow:
        compose(project, *args, capture=False, timeout=10**9)
    else:
        click.echo(compose(project, *args), nl=False)
