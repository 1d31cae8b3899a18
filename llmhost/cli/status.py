"""`llmhost status`: the deployed services as Docker sees them, and what each is doing now."""

from __future__ import annotations

import time
from dataclasses import asdict

import click

from llmhost.actions.deploy import ServiceState, service_states
from llmhost.cli.app import JSON_OPTION, App, pass_app
from llmhost.cli.render import echo_json


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def _where(svc) -> str:
    return f"GPU {','.join(map(str, svc.gpus))}" if svc.gpu else f"CPU {svc.cpuset}"


def _rows(states: list[ServiceState], planned: dict, live: dict) -> list[dict]:
    rows = []
    for s in states:
        svc, now = planned.get(s.service), live.get(s.service)
        row = {"service": s.service, "state": s.state, "health": s.health, "port": s.port,
               "container": s.container}  # fmt: skip
        if svc is not None:
            row.update(model=svc.model, where=_where(svc),
                       ctx=getattr(svc.knobs, "ctx_size", None)
                       or getattr(svc.knobs, "max_model_len", None))  # fmt: skip
        if now is not None:
            row["live"] = asdict(now)
        rows.append(row)
    return rows


def _print(rows: list[dict]) -> None:
    header = ("SERVICE", "STATE", "HEALTH", "PORT", "MODEL", "WHERE", "CTX", "BUSY", "TOK/S",
              "KV", "")  # fmt: skip
    table = [header]
    for r in rows:
        live = r.get("live") or {}
        busy = "-"
        if live.get("running") is not None:
            busy = f"{live['running']}/{live.get('slots') or '?'}"
            if live.get("waiting"):
                busy += f" +{live['waiting']} queued"
        table.append((
            r["service"], r["state"], r["health"] or "-", _num(r["port"], "{}"),
            r.get("model") or "-", r.get("where") or "-", _num(r.get("ctx"), "{}"), busy,
            _num(live.get("tokens_per_s"), "{:.1f}"), _num(live.get("kv_used_pct"), "{:.0f}%"),
            f"({live['error']})" if live.get("error") else "",
        ))  # fmt: skip
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _planned(app: App) -> dict:
    """The services as planned (whatever profile deployed them): model, place, context, slots.
    A host that cannot plan still gets its container states."""
    from llmhost.errors import LlmhostError

    try:
        facts = app.facts(models=True)
    except LlmhostError:
        return {}
    for profile in ("all", None):  # the facts once: a host without a GPU plans twice
        try:
            _, plan = app.plan(profile, facts=facts)
        except LlmhostError:
            continue
        return {s.name: s for s in plan.services}
    return {}


@click.command("status")
@JSON_OPTION
@click.option("--watch", "watch_s", type=click.FloatRange(0.5, 3600), default=None,
              metavar="SECONDS", help="Refresh every SECONDS until Ctrl-C.")  # fmt: skip
@pass_app
def command(app: App, as_json: bool, watch_s: float | None) -> None:
    """Each service's container state and health, and from its own /metrics: requests busy of
    its slots (and queued), tokens/s now, KV cache in use. Exit 1 if any is not healthy."""
    from llmhost.verify.live import read_live

    config = app.config()
    states = service_states(config.project)
    planned = _planned(app) if states else {}
    running = tuple(planned[s.service] for s in states if s.service in planned
                    and s.state == "running")  # fmt: skip
    previous: dict = {}
    live, previous = read_live(running, config.api_key, previous)
    if not as_json and not watch_s:  # tokens/s needs two readings
        time.sleep(1.0)
        live, previous = read_live(running, config.api_key, previous)
    while True:
        rows = _rows(states, planned, live)
        if as_json:
            echo_json(rows)
        elif not states:
            click.echo(f"nothing deployed in project {config.project!r}")
        else:
            _print(rows)
        if not watch_s:
            break
        time.sleep(watch_s)
        states = service_states(config.project)
        live, previous = read_live(running, config.api_key, previous)
        if not as_json:
            click.clear()
    bad = [s for s in states if s.state != "running" or s.health not in (None, "healthy")]
    raise SystemExit(1 if bad else 0)
