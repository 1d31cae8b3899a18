"""`llmhost snapshot`: capture this host's raw inputs for offline analysis or a bug report."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from llmhost import __version__
from llmhost.cli.app import App, pass_app
from llmhost.errors import LlmhostError
from llmhost.facts import gather
from llmhost.facts.sources import REDACTED_HOSTNAME, LiveSource, RecordingSource


@click.command("snapshot")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help="Where to write the .tar.gz (mode 0600).",
)
@click.option(
    "--redact-hostname",
    is_flag=True,
    help=f"Record the hostname as {REDACTED_HOSTNAME!r} (for a snapshot you share).",
)
@pass_app
def command(app: App, output: str, redact_hostname: bool) -> None:
    """Record /proc, /sys, nvidia-smi and docker inputs at their real paths in a tarball, and the
    configured models' facts (not the models), so the snapshot plans as this host does."""
    from llmhost.plan.planner import model_paths

    try:
        wanted, no_models = model_paths(app.config()), ""
    except LlmhostError as exc:  # a snapshot is for bug reports: a broken config is one of them
        wanted, no_models = {}, f"; no model facts: {exc}"
    recorder = RecordingSource(LiveSource())
    facts = gather(recorder, models=wanted)
    meta = {
        "llmhost_version": __version__,
        "hostname": facts.hostname,
        "machine": platform.machine(),
    }
    if redact_hostname:
        recorder.redact_hostname()
    path = recorder.write(Path(output), meta)
    click.echo(
        f"wrote {path}: {len(recorder.files)} files, {len(recorder.commands)} command outputs, "
        f"{len(recorder.models)} model(s) ({facts.cpu.microarchitecture}, "
        f"{len(facts.gpu.gpus)} GPU(s)){no_models}"
    )
