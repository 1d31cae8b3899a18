"""`llmhost doctor`: is this host ready, and what exactly fixes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from llmhost.cli.app import FROM_OPTION, JSON_OPTION, PROFILE_OPTION, App, abort, pass_app
from llmhost.cli.layout import terminal_width
from llmhost.cli.render import echo_json, render_doctor
from llmhost.verify.doctor import run_doctor

if TYPE_CHECKING:
    from llmhost.plan.planner import Plan


@click.command("doctor")
@PROFILE_OPTION
@JSON_OPTION
@FROM_OPTION
@click.option(
    "--host-files",
    is_flag=True,
    help="With --json: add the drop-in files llmhost owns for this plan ({path: content}), "
    "as `plan --host-files` prints them (Ansible reads both from one run).",
)
@pass_app
def command(
    app: App, profile: str | None, as_json: bool, snapshot: str | None, host_files: bool
) -> None:
    """Check CPU, GPU, memory, kernel, Docker, images and services against the plan.

    Exit status: 0 all ok (warnings allowed), 1 any failure, 2 usage error.
    """
    from llmhost.plan.planner import default_profile

    if host_files and not as_json:
        abort("--host-files goes with --json", 2)

    config = app.config()
    facts = app.facts(snapshot, models=True)
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
                **({"host_files": _host_files(report.plan)} if host_files else {}),
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


def _host_files(plan: Plan | None) -> dict[str, str] | None:
    """The drop-ins of the plan; None when there is no plan (the failing check says why)."""
    from llmhost.actions.host_files import host_files

    return None if plan is None else host_files(plan)
