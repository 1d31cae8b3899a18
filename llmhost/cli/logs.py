"""`llmhost logs [SERVICE...]`: the deployed services' recent log lines."""

from __future__ import annotations

import click

from llmhost.actions.deploy import compose, compose_path
from llmhost.cli.app import App, pass_app
from llmhost.errors import LlmhostError
from llmhost.plan.config import SERVICE_PROFILES


@click.command("logs")
@click.argument("services", nargs=-1, type=click.Choice(sorted(SERVICE_PROFILES)))
@click.option("-n", "--tail", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@pass_app
def command(app: App, services: tuple[str, ...], tail: int, follow: bool) -> None:
    """Print the log lines of SERVICES (llama-cpu, llama-gpu, vllm-gpu), or of every deployed
    service, each line prefixed with its service, in time order."""
    project = app.config().project
    if not compose_path(project).exists():
        raise LlmhostError(f"nothing deployed in project {project!r}: run `llmhost deploy`")
    args = ["logs", "--no-color", "--tail", str(tail), *(["--follow"] if follow else [])]
    args += ["--timestamps"] if len(services) != 1 else []
    args += list(services)
    if follow:
        compose(project, *args, capture=False, timeout=10**9)
    else:
        click.echo(compose(project, *args), nl=False)
