"""The application object every command receives, and the one way to abort."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import click

from llmhost.config import Config, load_config
from llmhost.facts import HostFacts, gather
from llmhost.sources import LiveSource, SnapshotSource, Source

if TYPE_CHECKING:
    from llmhost.models import ModelHeader
    from llmhost.plan import Plan


@dataclass
class App:
    config_path: str | None
    verbose: bool

    def config(self) -> Config:
        return load_config(self.config_path)

    def source(self, snapshot: str | None) -> Source:
        return SnapshotSource(snapshot) if snapshot else LiveSource()

    def facts(self, snapshot: str | None = None, *, containers: bool = True) -> HostFacts:
        return gather(self.source(snapshot), containers=containers)

    def plan(
        self,
        profile: str | None,
        snapshot: str | None = None,
        *,
        headers: dict[str, ModelHeader] | None = None,
    ) -> tuple[HostFacts, Plan]:
        """The way a command gets its plan: every fact (images and containers included: refused
        images and running services change it), the config and the shipped evidence.
        `headers={}` plans without reading model files (a build needs none)."""
        from llmhost.evidence import load_evidence
        from llmhost.plan import make_plan

        facts = self.facts(snapshot)
        plan = make_plan(facts, self.config(), profile, headers=headers, evidence=load_evidence())
        return facts, plan


def abort(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit; no command prints a traceback."""
    click.echo(f"llmhost: {message}", err=True)
    sys.exit(code)


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
