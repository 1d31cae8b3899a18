"""`llmhost build`: images compiled for this host's CPU and GPUs."""

from __future__ import annotations

import click

from llmhost.cli.app import FROM_OPTION, PROFILE_OPTION, QUIET_OPTION, App, pass_app
from llmhost.facts import our_labels


@click.command("build")
@PROFILE_OPTION
@FROM_OPTION
@click.option(
    "--llama-source",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="A local llama.cpp tree (air-gapped hosts).",
)
@click.option(
    "--llama-ref",
    default=None,
    help="A llama.cpp release tag to download (default: the pinned release).",
)
@click.option(
    "--base-image",
    default=None,
    help="Base image for the CPU image (default: images.base_image in the config).",
)
@click.option("--jobs", type=click.IntRange(1, 512), default=None, help="Parallel compile jobs.")
@click.option(
    "--allow-below-floor",
    is_flag=True,
    help="Build a llama.cpp/vLLM version below its security floor anyway (recorded in "
    "the image as io.llmhost.floor_override; doctor reports it as a failure).",
)
@click.option(
    "--no-buildkit",
    is_flag=True,
    help="Build with the engine's classic builder even where a docker CLI can use BuildKit "
    "(which keeps compiles in a ccache between builds).",
)
@QUIET_OPTION
@pass_app
def command(
    app: App,
    profile: str | None,
    snapshot: str | None,
    llama_source: str | None,
    llama_ref: str | None,
    base_image: str | None,
    jobs: int | None,
    allow_below_floor: bool,
    no_buildkit: bool,
    quiet: bool,
) -> None:
    """Render the Dockerfiles from the plan and build them, streaming the build log; the CPU image
    is self-tested before it is tagged. With --from, build for the host a snapshot describes (the
    self-test then runs there: `llmhost doctor`)."""
    from llmhost.actions.build import (
        DEFAULT_LLAMA_REF,
        build_images,
        fetch_release,
        find_buildkit,
        local_source,
    )
    from llmhost.errors import LlmhostError
    from llmhost.plan.config import check_value
    from llmhost.progress import quiet as silent
    from llmhost.verify.floors import build_gate

    progress = silent if quiet else click.echo

    if llama_source and llama_ref:
        raise LlmhostError("give --llama-source or --llama-ref, not both", exit_code=2)
    if llama_ref:
        check_value("--llama-ref", llama_ref, "images.llama_ref")
    if base_image:
        check_value("--base-image", base_image, "images.base_image")
    config = app.config()
    _, plan = app.plan(profile, snapshot, models=False)
    needs_source = any(s.engine != "vllm" for s in plan.services)
    source = None
    if needs_source:
        ref = llama_ref or config.images.llama_ref or DEFAULT_LLAMA_REF
        if not llama_source and not allow_below_floor:
            build_gate("llama-cpu", ref, allow_below_floor=False)  # refuse before downloading it
        source = local_source(llama_source) if llama_source else fetch_release(ref, progress)
    built = build_images(
        plan,
        config,
        source=source,
        base_image=base_image,
        progress=progress,
        jobs=jobs,
        allow_below_floor=allow_below_floor,
        selftest_here=snapshot is None,
        buildkit=None if no_buildkit else find_buildkit(),
    )
    for image in built:
        flags = image.labels.get(our_labels.CMAKE, "")
        click.echo(
            f"{image.tag}: {image.image_id[:19]} in {image.seconds:.0f} s"
            + (f"\n  flags: {flags}" if flags else "")
        )
