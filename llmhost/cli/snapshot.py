"""`llmhost snapshot`: capture this host's raw inputs for offline analysis or a bug report."""

from __future__ import annotations

import platform
from pathlib import Path

import click

from llmhost import __version__
from llmhost.cli.app import App, pass_app
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
    """Record /proc, /sys, nvidia-smi and docker inputs at their real paths in a tarball."""
    recorder = RecordingSource(LiveSource())
    facts = gather(recorder)
    meta = {
        "llmhost_version": __version__,
        "hostname": facts.hostname,
        "machine": platform.machine(),
    }
    if redact_hostname:
        recorder.redact_hostname()
    path = recorder.write(Path(output), meta)
    click.echo(
        f"wrote {path}: {len(recorder.files)} files, {len(recorder.commands)} command outputs "
        f"({facts.cpu.microarchitecture}, {len(facts.gpu.gpus)} GPU(s))"
    )
