"""Progress lines for long work (downloads, base-image pulls, builds): few, and each worth reading.

A `Progress` takes one line at a time; `-q` hands the stages `quiet`. The engine reports a pull
as a status event per layer and per chunk; `PullProgress` condenses them into a line when a
layer starts or completes and one for each further tenth of the bytes, the way `docker pull`
reads when its output is not a terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str], None]
STEPS = 10  # byte progress lines per download or pull


def quiet(_line: str) -> None:
    """The Progress of `-q`: nothing."""


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class ByteProgress:
    """Lines for a download of `total` bytes (0: unknown) at each further tenth."""

    what: str
    total: int
    progress: Progress
    done: int = 0
    _step: int = 0

    def add(self, n: int) -> None:
        self.done += n
        if self.total <= 0:
            return
        step = min(STEPS, self.done * STEPS // self.total)
        if step > self._step:
            self._step = step
            self.progress(f"{self.what}: {mib(self.done)} of {mib(self.total)} ({10 * step} %)")


@dataclass
class PullProgress:
    """Condenses the engine's pull events ({"status", "id", "progressDetail"}) for one image:
    a line per layer downloaded and per layer extracted, and one per further tenth of the bytes."""

    progress: Progress
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (done, total)
    downloaded: set[str] = field(default_factory=set)
    extracted: set[str] = field(default_factory=set)
    _step: int = 0
    _total: int = 0

    def feed(self, event: dict[str, Any]) -> None:
        status, layer = str(event.get("status", "")), str(event.get("id", ""))
        if not layer:
            if status.startswith(("Digest:", "Status:")):
                self.progress(status)
            return
        detail = event.get("progressDetail") or {}
        if status == "Pulling fs layer":
            self.layers.setdefault(layer, (0, 0))
        elif status == "Downloading" and isinstance(detail.get("total"), int):
            self.layers[layer] = (int(detail.get("current") or 0), detail["total"])
            self._tenths()
        elif status in ("Download complete", "Already exists") and layer not in self.downloaded:
            self.downloaded.add(layer)
            _, total = self.layers.get(layer, (0, 0))
            self.layers[layer] = (total, total)
            self.progress(f"layer {layer}: {status.lower()} ({self._summary()})")
        if status in ("Pull complete", "Already exists") and layer not in self.extracted:
            self.extracted.add(layer)
            if status == "Pull complete":
                counts = f"{len(self.extracted)} of {len(self.layers)} extracted"
                self.progress(f"layer {layer}: pull complete ({counts})")

    def _tenths(self) -> None:
        """A line at each further tenth of the bytes known; a layer whose size becomes known
        moves the scale, and the count starts again from where the bytes then stand."""
        total = sum(t for _, t in self.layers.values())
        step = min(STEPS, sum(d for d, _ in self.layers.values()) * STEPS // total) if total else 0
        if total != self._total:
            self._total, self._step = total, min(self._step, step)
        if step > self._step:
            self._step = step
            self.progress(f"pulling: {self._summary()}")

    def _summary(self) -> str:
        done = sum(d for d, _ in self.layers.values())
        total = sum(t for _, t in self.layers.values())
        size = f", {mib(done)} of {mib(total)} known" if total else ""
        return f"{len(self.downloaded)} of {len(self.layers)} layers downloaded{size}"
