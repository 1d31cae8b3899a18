"""`llmhost` root group: loads nothing heavy, turns every LlmhostError into one line."""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from llmhost import __version__
from llmhost.cli.app import COLOR_HELP, CONFIG_HELP, App, abort, command_options, one_config
from llmhost.cli.layout import no_color
from llmhost.errors import LlmhostError

# command name -> module under llmhost.cli; imported only when that command runs.
COMMANDS = {
    "doctor": "doctor",
    "plan": "plan",
    "snapshot": "snapshot",
    "facts": "facts",
    "build": "build",
    "deploy": "deploy",
    "status": "status",
    "down": "down",
    "logs": "logs",
    "bench": "bench",
    "pull": "pull",
    "models": "models",
    "tune": "tune",
    "completion": "completion",
}


def usage_line(exc: click.UsageError) -> None:
    """A usage error as one line, like every other refusal (click prints three); `llmhost`
    alone still shows the help."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        raise exc
    where = exc.ctx.command_path if exc.ctx else "llmhost"
    abort(f"{exc.format_message()} (see {where} --help)", exc.exit_code)


class LazyGroup(click.Group):
    """Imports a command's module on use, so `llmhost doctor` stays fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command: click.Command = importlib.import_module(f"llmhost.cli.{module}").command
        if not any(p.name == "config_paths" for p in command.params):
            command.params.extend(command_options())
        return command

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: object,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)  # type: ignore[arg-type]
        except click.UsageError as exc:
            usage_line(exc)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            usage_line(exc)
        except LlmhostError as exc:
            message = str(exc)
            if exc.fix and exc.fix not in message:
                message += f"; fix: {exc.fix}"
            abort(message, exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            abort("interrupted", 130)
        except Exception as exc:  # last resort: still one line, traceback only with -v
            if ctx.obj is not None and ctx.obj.verbose:
                traceback.print_exc()
            abort(f"internal error: {type(exc).__name__}: {exc} (run with -v for details)", 3)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="llmhost")
@click.option(
    "--config",
    "config_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help=CONFIG_HELP,
)
@click.option("--color/--no-color", default=None, help=COLOR_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of internal errors.")
@click.pass_context
def cli(
    ctx: click.Context, config_paths: tuple[str, ...], color: bool | None, verbose: bool
) -> None:
    """Tune, provision, deploy and validate a local LLM inference host."""
    # https://no-color.org: a non-empty NO_COLOR turns colour off; an explicit --color wins.
    ctx.color = color if color is not None else (False if no_color() else None)
    ctx.obj = App(config_path=one_config(config_paths), verbose=verbose)


def main() -> None:
    cli(prog_name="llmhost")


if __name__ == "__main__":
    sys.exit(main())
