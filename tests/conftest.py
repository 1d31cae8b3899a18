"""Suite-wide hooks: the fleet's guest image built while other tests run, and each slow test's
seconds, as it ends, in the verbose log.

CI keeps only what the run printed; when a run is cut short at its time limit, these lines are
what says where the time went (pytest's --durations table is printed only at the end).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

SLOW_S = 10.0  # tests at least this long get a timing line
_SUITE_START = time.monotonic()


def pytest_collection_finish(session: pytest.Session) -> None:
    """When the fleet tests will run, their guest image is built from now on, beside the tests
    that come first (most of them leave a CPU idle; debootstrap mostly waits on the mirror and
    the disk)."""
    if any(item.get_closest_marker("fleet") for item in session.items):
        from tests.fleet.conftest import prepare_in_background

        prepare_in_background()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Setup, call and teardown of one test, timed together (fixtures that build images or
    boot guests count toward the first test that needs them)."""
    start = time.monotonic()
    yield
    seconds = time.monotonic() - start
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or reporter.verbosity < 1 or seconds < SLOW_S:
        return
    suite_min = (time.monotonic() - _SUITE_START) / 60
    reporter.write_line(f"    {seconds:7.1f} s  {item.nodeid}  (suite at {suite_min:.1f} min)")
