"""`llmhost tune`: measure the llama-cpu knobs on this host and keep the verdicts as evidence."""

from __future__ import annotations

import json
from pathlib import Path

import click

from llmhost.cli.app import JSON_OPTION, QUIET_OPTION, App, pass_app
from llmhost.cli.render import echo_json
from llmhost.errors import LlmhostError
from llmhost.verify.tune.knobs import OTHER_BUILDS, TUNED


@click.command("tune")
@click.option(
    "--model",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="GGUF to measure with (default: llama-cpu's model in models_dir).",
)
@click.option(
    "--knob",
    "knobs",
    type=click.Choice(list(TUNED)),
    multiple=True,
    help="A knob to measure; repeat for several (default: all).",
)
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True,
              help="Interleaved rounds of every setup (the order rotates each round).")  # fmt: skip
@click.option("--reps", type=click.IntRange(1, 20), default=2, show_default=True,
              help="llama-bench repetitions per setup and round.")  # fmt: skip
@click.option("--prompt", type=click.IntRange(1, 16384), default=512, show_default=True,
              help="Prompt tokens (the ppN test).")  # fmt: skip
@click.option("--gen", type=click.IntRange(1, 4096), default=128, show_default=True,
              help="Generated tokens (the tgN test).")  # fmt: skip
@click.option(
    "--llama-bench",
    "llama_bench",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A llama-bench binary to run natively instead of the llama-cpu image's.",
)
@click.option(
    "--image", default=None, help="The image whose llama-bench runs (default: the plan's)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the result JSON and plot (default: <state dir>/tune).",
)
@click.option(
    "--compare-build",
    "other_builds",
    multiple=True,
    metavar="NAME=LLAMA_BENCH",
    help=f"Another build's llama-bench to compare the plan's with, pinned alike; NAME one of "
    f"{', '.join(OTHER_BUILDS)}. Repeatable.",
)
@click.option(
    "--builds-only", is_flag=True, help="Measure only the --compare-build builds, no knob."
)
@click.option("--no-save", is_flag=True, help="Measure and report; keep no local evidence.")
@JSON_OPTION
@QUIET_OPTION
@pass_app
def command(
    app: App,
    model: Path | None,
    knobs: tuple[str, ...],
    rounds: int,
    reps: int,
    prompt: int,
    gen: int,
    llama_bench: Path | None,
    image: str | None,
    out_dir: Path | None,
    other_builds: tuple[str, ...],
    builds_only: bool,
    no_save: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Measure llama-cpu's knobs here with llama-bench: CPU pinning, weights on hugetlb or
    transparent hugepages, mlock, flash attention and a thread per SMT sibling, each against
    the plan's setup without it, in interleaved rounds. Prints a table, writes the result JSON
    and a plot, and saves the verdicts as this host's evidence, which `plan` and `doctor` read
    beside the shipped evidence."""
    from llmhost.plan.evidence import save_local_evidence
    from llmhost.progress import quiet as silent
    from llmhost.state import state_dir
    from llmhost.verify.bench.sweep import PlotUnavailable
    from llmhost.verify.tune.measure import ImageBench, NativeBench
    from llmhost.verify.tune.report import table, to_dict, write_plot
    from llmhost.verify.tune.session import SERVICE, TuneRequest, run_tune

    if llama_bench and image:
        raise LlmhostError("give --llama-bench or --image, not both", exit_code=2)
    builds = {name: NativeBench(path) for name, path in _other_builds(other_builds).items()}
    if builds_only and (knobs or not builds):
        raise LlmhostError(
            "--builds-only measures the --compare-build builds alone: give at least one "
            "--compare-build and no --knob",
            exit_code=2,
        )
    config = app.config()
    if model is None:
        name = config.services[SERVICE].model
        if not name:
            raise LlmhostError(
                f"no model to measure with: {SERVICE} has none configured",
                fix=f"give --model FILE.gguf, or set services.{SERVICE}.model in llmhost.yaml",
                exit_code=2,
            )
        model = Path(config.models_dir) / name
    chosen = () if builds_only else knobs or tuple(TUNED)
    request = TuneRequest(model, chosen, rounds, reps, prompt, gen)
    out = out_dir or state_dir() / "tune"
    try:  # before minutes of measuring, not after
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmhostError(f"--out {out}: {exc.strerror or exc}", exit_code=2) from None
    facts, plan = app.plan("cpu")
    svc = plan.service(SERVICE)
    bench = NativeBench(llama_bench) if llama_bench else ImageBench(image or svc.image)  # type: ignore[union-attr]
    progress = silent if quiet else (lambda line: click.echo(line, err=True))
    result = run_tune(request, plan, facts, bench, progress, builds=builds)
    stem = f"tune-{plan.hostname}-{result.measured_at.replace(':', '')}"
    report = to_dict(result)
    path = out / f"{stem}.json"
    try:
        plot: str | None = str(write_plot(result, out / f"{stem}.png"))
    except PlotUnavailable as exc:
        plot, report["plot_skipped"] = None, str(exc)
    report["plot"] = plot
    report["evidence"] = (
        None if no_save or not result.records else str(save_local_evidence(result.records))
    )
    path.write_text(json.dumps(report, indent=2) + "\n")
    if as_json:
        echo_json(report)
        return
    click.echo("\n".join(table(result)))
    click.echo(f"result: {path}" + (f"; plot: {plot}" if plot else f" ({report['plot_skipped']})"))
    if report["evidence"]:
        click.echo(f"evidence: {report['evidence']} (plan and doctor judge these knobs by it)")


def _other_builds(given: tuple[str, ...]) -> dict[str, Path]:
    """--compare-build NAME=PATH values, each checked: a known NAME once, an existing file."""
    out: dict[str, Path] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or name not in OTHER_BUILDS or name in out:
            raise LlmhostError(
                f"--compare-build {item!r}: give NAME=LLAMA_BENCH once per NAME, NAME one of "
                f"{', '.join(OTHER_BUILDS)}",
                exit_code=2,
            )
        if not Path(path).is_file():
            raise LlmhostError(f"--compare-build {name}: {path} is not a file", exit_code=2)
        out[name] = Path(path)
    return out
