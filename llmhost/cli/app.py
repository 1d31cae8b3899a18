"""The application object every command receives, and the one way to abort."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import click

from llmhost.facts import HostFacts, gather
from llmhost.facts.sources import LiveSource, SnapshotSource, Source
from llmhost.plan.config import Config, load_config

if TYPE_CHECKING:
    from llmhost.plan.planner import Plan


@dataclass
class App:
    config_path: str | None
    verbose: bool
    _config: Config | None = field(default=None, init=False, repr=False)

    def config(self) -> Config:
        """Loaded once (`--config -` reads standard input, which can be read only once)."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def source(self, snapshot: str | None) -> Source:
        return SnapshotSource(snapshot) if snapshot else LiveSource()

    def facts(
        self, snapshot: str | None = None, *, containers: bool = True, models: bool = False
    ) -> HostFacts:
        """The host's facts (or the snapshot's); with `models`, the configured models' too."""
        from llmhost.plan.planner import model_paths

        wanted = model_paths(self.config()) if models else None
        return gather(self.source(snapshot), containers=containers, models=wanted)

    def plan(
        self,
        profile: str | None,
        snapshot: str | None = None,
        *,
        models: bool = True,
        facts: HostFacts | None = None,
    ) -> tuple[HostFacts, Plan]:
        """The way a command gets its plan: every fact (images and containers included: refused
        images and running services change it; the configured models unless `models` is False:
        a build needs none), the config, and the shipped and local evidence. `facts` already
        gathered are used as they are."""
        from llmhost.plan.evidence import host_evidence
        from llmhost.plan.planner import make_plan

        facts = facts if facts is not None else self.facts(snapshot, models=models)
        plan = make_plan(facts, self.config(), profile, evidence=host_evidence())
        return facts, plan


def abort(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit; no command prints a traceback."""
    click.echo(f"llmhost: {message}", err=True)
    sys.exit(code)


def one_config(paths: Iterable[str]) -> str | None:
    """The --config given before and/or after the command; two different paths: usage error."""
    given = list(dict.fromkeys(paths))
    if len({os.path.abspath(p) for p in given}) > 1:
        abort(f"--config given twice with different paths: {given[0]} and {given[1]}", 2)
    return given[0] if given else None


def _config_after_command(ctx: click.Context, _: click.Parameter, paths: tuple[str, ...]) -> None:
    app = ctx.find_object(App)
    if app is not None and paths:  # no App while completing: nothing runs then
        app.config_path = one_config([*filter(None, [app.config_path]), *paths])


def _color_after_command(ctx: click.Context, _: click.Parameter, color: bool | None) -> None:
    if color is not None:
        ctx.color = color


CONFIG_HELP = "llmhost.yaml to use (default: $LLMHOST_CONFIG, ./llmhost.yaml, /etc/llmhost)."
COLOR_HELP = "Colour the output (default: on a terminal, unless NO_COLOR is set)."


def command_options() -> list[click.Parameter]:
    """The root's --config and --color, accepted after a command too (`llmhost doctor --config
    x.yaml`); they set the App and the context, so commands' signatures stay as they are."""
    return [
        click.Option(
            ["--config", "config_paths"],
            multiple=True,
            type=click.Path(dir_okay=False),
            metavar="PATH",
            expose_value=False,
            callback=_config_after_command,
            help=CONFIG_HELP,
        ),
        click.Option(
            ["--color/--no-color"],
            default=None,
            expose_value=False,
            callback=_color_after_command,
            help=COLOR_HELP,
        ),
    ]


pass_app = click.make_pass_decorator(App)
PROFILE_OPTION = click.option(
    "--profile",
    type=click.Choice(["cpu", "gpu", "all"]),
    default=None,
    help="Which services to consider (default: the config's profile).",
)
FROM_OPTION = click.option(
    "--from",
    "snapshot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Analyse a snapshot made by `llmhost snapshot` instead of this host.",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
QUIET_OPTION = click.option(
    "-q", "--quiet", is_flag=True, help="No progress lines: results and errors only."
)
