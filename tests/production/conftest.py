"""Prints how long the compose stack took to reach each milestone."""

from __future__ import annotations

from tests.production.compose import TIMINGS


def pytest_terminal_summary(terminalreporter) -> None:
    if not TIMINGS:
        return
    terminalreporter.write_line("")
    terminalreporter.write_line("compose stack (seconds):")
    for milestone, seconds in TIMINGS.items():
        terminalreporter.write_line(f"  {milestone:<40} {seconds:>6.1f}")
