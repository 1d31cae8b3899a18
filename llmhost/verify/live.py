"""What the deployed servers say about themselves now: requests running and waiting, tokens/s,
KV cache in use, read from their own /metrics (and llama-server's /slots)."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass

from llmhost.plan.planner import ServicePlan
from llmhost.plan.services import METRICS, EngineMetrics


@dataclass(frozen=True)
class Sample:
    """One reading of a server's counters, and when it was taken."""

    at: float
    metrics: dict[str, float]
    kv_used: float | None  # fraction of the KV cache holding tokens


@dataclass(frozen=True)
class Live:
    service: str
    running: int | None = None  # requests being decoded
    waiting: int | None = None  # requests queued
    slots: int | None = None  # how many can run at once (llama.cpp slots, vLLM max-num-seqs)
    tokens_per_s: float | None = None  # generated tokens/s between two readings
    tokens_total: float | None = None  # generated since the server started
    kv_used_pct: float | None = None
    error: str | None = None


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text -> {metric name: value}; labelled series of one name are summed."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def _get(svc: ServicePlan, path: str, api_key: str | None, timeout: float) -> bytes:
    host = "127.0.0.1" if svc.bind_address in ("0.0.0.0", "::") else svc.bind_address
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"http://{host}:{svc.port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _kv_from_slots(raw: bytes) -> float | None:
    """llama-server's /slots: tokens held (prompt + generated) over the slots' context."""
    slots = json.loads(raw)
    if not isinstance(slots, list) or not slots:
        return None
    held = capacity = 0
    for slot in slots:
        capacity += int(slot.get("n_ctx") or 0)
        decoded = sum(int(t.get("n_decoded") or 0) for t in slot.get("next_token") or [])
        held += int(slot.get("n_prompt_tokens") or 0) + decoded
    return held / capacity if capacity else None


def sample(svc: ServicePlan, api_key: str | None, timeout: float = 3.0) -> Sample:
    """One reading; raises OSError (or ValueError) when the server does not answer."""
    spec: EngineMetrics = METRICS[svc.engine]
    metrics = parse_prometheus(_get(svc, "/metrics", api_key, timeout).decode(errors="replace"))
    kv = None
    if spec.kv_used is not None:
        kv = metrics.get(spec.kv_used, metrics.get(spec.kv_used_fallback or "", None))
    elif spec.slots_endpoint:
        try:
            kv = _kv_from_slots(_get(svc, spec.slots_endpoint, api_key, timeout))
        except (OSError, ValueError):
            kv = None  # /slots can be turned off; the rest still stands
    return Sample(time.monotonic(), metrics, kv)


def live(svc: ServicePlan, before: Sample | None, now: Sample) -> Live:
    """The numbers a person wants, from a reading (and the one before it, for tokens/s)."""
    spec = METRICS[svc.engine]
    m = now.metrics
    total = m.get(spec.tokens_total)
    rate = None
    if before is not None and total is not None and now.at > before.at:
        earlier = before.metrics.get(spec.tokens_total)
        if earlier is not None and total >= earlier:
            rate = (total - earlier) / (now.at - before.at)
    running = m.get(spec.running)
    waiting = m.get(spec.waiting)
    return Live(
        svc.name,
        running=None if running is None else int(running),
        waiting=None if waiting is None else int(waiting),
        slots=getattr(svc.knobs, "parallel", None) or getattr(svc.knobs, "max_num_seqs", None),
        tokens_per_s=rate,
        tokens_total=total,
        kv_used_pct=None if now.kv_used is None else 100 * now.kv_used,
    )


def read_live(
    services: tuple[ServicePlan, ...], api_key: str | None, previous: dict[str, Sample]
) -> tuple[dict[str, Live], dict[str, Sample]]:
    """One round over the services: their numbers, and the readings for the next round."""
    out, readings = {}, {}
    for svc in services:
        try:
            now = sample(svc, api_key)
        except (OSError, ValueError) as exc:  # HTTPError is an OSError
            out[svc.name] = Live(svc.name, error=str(getattr(exc, "reason", exc))[:120])
            continue
        readings[svc.name] = now
        out[svc.name] = live(svc, previous.get(svc.name), now)
    return out, readings
