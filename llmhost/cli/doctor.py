"""`llmhost doctor`: is this host ready, and what exactly fixes it."""

from __future__ import annotations

import click

from llmhost.cli.app import FROM_OPTION, JSON_OPTION, PROFILE_OPTION, App, pass_app
from llmhost.cli.layout import terminal_width
from llmhost.cli.render import echo_json, render_doctor
from llmhost.doctor import run_doctor


@click.command("doctor")
@PROFILE_OPTION
@JSON_OPTION
@FROM_OPTION
@pass_app
def command(app: App, profile: str | None, as_json: bool, snapshot: str | None) -> None:
    """Check CPU, GPU, memory, kernel, Docker, images and services against the plan.

    Exit status: 0 all ok (warnings allowed), 1 any failure, 2 usage error.
    """
    from llmhost.plan import default_profile

    config = app.config()
    facts = app.facts(snapshot)
    profile = profile or config.profile or default_profile(facts)
    report = run_doctor(facts, config, profile, live=snapshot is None)
    if as_json:
        echo_json(
            {
                "host": facts.hostname,
                "source": facts.source,
                "profile": profile,
                "summary": report.counts(),
                "checks": report.results,
                "plan": report.plan,
                "facts": facts,
            }
        )
    else:
        cpu = facts.cpu
        render_doctor(
            report,
            f"llmhost doctor — {facts.hostname} ({facts.source}), "
            f"profile {profile}, {cpu.model_name}",
            terminal_width(),
        )
    raise SystemExit(report.exit_code)
