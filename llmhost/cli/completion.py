"""`llmhost completion SHELL`: the shell completion script, from click's own machinery."""

from __future__ import annotations

import click

SHELLS = ("bash", "zsh", "fish")
# What click's console-script entry point reads: _{PROG_NAME}_COMPLETE.
COMPLETE_VAR = "_LLMHOST_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
@click.pass_context
def command(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash: eval "$(llmhost completion bash)"   (in ~/.bashrc)
    zsh:  eval "$(llmhost completion zsh)"    (in ~/.zshrc)
    fish: llmhost completion fish > ~/.config/fish/completions/llmhost.fish
    """
    from click.shell_completion import get_completion_class

    completion = get_completion_class(shell)
    assert completion is not None  # every name in SHELLS is one of click's
    root = ctx.find_root()
    script = completion(root.command, {}, "llmhost", COMPLETE_VAR).source()
    click.echo(script, nl=False)
