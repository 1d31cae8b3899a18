"""The one verdict a check reaches, whatever it checks: ok, warn, fail, or skip (not judged)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
