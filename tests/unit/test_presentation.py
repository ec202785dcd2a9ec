"""Formatting and CLI argument routing: what the user reads, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dftui.cli.common import _route
from dftui.widgets.format import age, duration_between, format_duration, format_time, shorten

COMMANDS = {"ls", "show", "tui", "engine"}


@pytest.mark.parametrize(
    ("args", "routed"),
    [
        ([], ["tui"]),
        (["host=x"], ["tui", "host=x"]),
        (["--read-only", "host=x"], ["tui", "--read-only", "host=x"]),
        (["ls", "--json"], ["ls", "--json"]),
        (["--help"], ["--help"]),
        (["--version"], ["--version"]),
        (["--", "ls"], ["tui", "--", "ls"]),
    ],
)
def test_first_positional_word_picks_the_command_else_the_tui(args, routed):
    assert _route(args, COMMANDS) == routed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (-3, "0ms"), (0.25, "250ms"), (4.5, "4.5s"), (42, "42s"), (185, "3m05s"),
     (7620, "2h07m"), (3 * 86400 + 4 * 3600 + 59, "3d04h")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


def test_times_follow_the_given_zone_and_clock():
    plus2 = timezone(timedelta(hours=2))
    assert format_time(NOW, plus2, NOW) == "2025-01-15 14:00:00"
    # short: never without the date (a bare time is ambiguous when a list spans midnight)
    assert format_time(NOW - timedelta(minutes=5), UTC, NOW, short=True) == "01-15 11:55"
    assert format_time(NOW - timedelta(days=1), plus2, NOW, short=True) == "01-14 14:00"
    assert format_time(None, UTC, NOW) == ""
    assert age(NOW - timedelta(seconds=5), NOW) == "5.0s ago"
    assert age(NOW + timedelta(seconds=5), NOW) == "0ms ago"  # a clock skewed ahead: never negative
    assert duration_between(NOW - timedelta(seconds=90), None, NOW) == "1m30s"
    assert duration_between(None, NOW, NOW) == ""


def test_shorten_makes_one_line_of_at_most_width():
    assert shorten("SELECT 1\n  FROM t", 40) == "SELECT 1 FROM t"
    assert shorten("abcdefghij", 5) == "abcd…"
    assert shorten(None, 5) == ""
