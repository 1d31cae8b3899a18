"""`llmhost models`: what is in models_dir, and what fits this host."""

from __future__ import annotations

import click

from llmhost.cli.app import JSON_OPTION, App, pass_app
from llmhost.cli.render import echo_json


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _fit(need: int | None, fits: bool | None, absent: str) -> str:
    if need is None:
        return "-"
    return f"{_size(need)} {absent if fits is None else 'yes' if fits else 'NO'}"


@click.command("models")
@JSON_OPTION
@pass_app
def command(app: App, as_json: bool) -> None:
    """List GGUF files and model directories in models_dir: size, quantization, and whether each
    fits in RAM (llama-cpu) and in one GPU's memory (llama-gpu, vllm-gpu) by the plan's
    arithmetic at the configured context and slots."""
    from llmhost.verify.model_list import list_models

    config = app.config()
    entries = list_models(config, app.facts(containers=False))
    if as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo(f"no models in {config.models_dir}: llmhost pull REPO [FILE.gguf]")
        return
    rows = [("NAME", "SIZE", "QUANT", "ARCH", "RAM NEED FITS", "VRAM NEED FITS", "SOURCE")]
    for e in entries:
        if e.error:
            rows.append((e.name, _size(e.size_bytes), "-", "-", "-", "-", f"unreadable: {e.error}"))
            continue
        ram = _fit(e.ram_need_bytes, e.ram_fits, "?")
        vram = _fit(e.vram_need_bytes, e.vram_fits, "(no GPU)")
        rows.append((e.name, _size(e.size_bytes), e.quantization or "-", e.architecture or "-",
                     ram, vram, e.source or "local"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
