"""`llmhost pull`: a model from the Hugging Face Hub into models_dir."""

from __future__ import annotations

import click

from llmhost.cli.app import QUIET_OPTION, App, pass_app


@click.command("pull")
@click.argument("repo")
@click.argument("file", required=False)
@click.option(
    "--revision",
    default="main",
    show_default=True,
    help="Branch, tag or commit to pin; the commit it resolves to is recorded.",
)
@click.option(
    "--name", default=None, help="Name under models_dir (default: FILE, or the repository's name)."
)
@QUIET_OPTION
@pass_app
def command(
    app: App, repo: str, file: str | None, revision: str, name: str | None, quiet: bool
) -> None:
    """Fetch FILE (a GGUF, for llama.cpp) of the Hub repository REPO, or without FILE the model
    directory vLLM serves (config.json, tokenizer, *.safetensors), into models_dir.

    Downloads resume where they stopped; every file is checked against the Hub's sha256.
    HF_TOKEN is used for gated models, HF_ENDPOINT for a mirror. Air-gapped: copy the GGUF file
    or the model directory into models_dir by hand; `llmhost models` lists it the same way.
    """
    from llmhost.actions.hub import pull

    config = app.config()
    pulled = pull(repo, config.models_dir, filename=file, revision=revision, name=name,
                  quiet=quiet)  # fmt: skip
    gib = pulled.size_bytes / 2**30
    click.echo(f"{pulled.name}: {len(pulled.files)} file(s), {gib:.2f} GiB, sha256 checked, "
               f"{pulled.repo}@{pulled.commit[:12]} ({pulled.revision})")  # fmt: skip
    key = "vllm-gpu" if file is None else "llama-cpu"
    click.echo(f"use it: services: {{{key}: {{model: {pulled.name}}}}} in llmhost.yaml")
