"""The instance list's pure pieces (dftui/screens/instance_*.py, selection.py and the list's
widgets' text): the filter box, the keyset order, what an action targets,
the column widths and what the status tabs, health line and status line say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dftui.client import InstanceSummary, StatusCounts
from dftui.screens.instance_filters import Filters, parse_filter
from dftui.screens.instance_order import is_after
from dftui.screens.selection import Selection
from dftui.widgets.health_line import health_text
from dftui.widgets.instance_table import plan_columns, row_cells, wanted_label_width
from dftui.widgets.list_status import ListStatus
from dftui.widgets.status_tabs import tabs_text

NOW = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)


def row(id: str, *, minutes_ago: int = 0, label: str | None = None, status: str = "running",
        took: int | None = None, step: str | None = None, by: str = "alice") -> InstanceSummary:
    created = NOW - timedelta(minutes=minutes_ago)
    done = created + timedelta(seconds=took) if took is not None else None
    return InstanceSummary(id=id, label=label, status=status, submitted_by=by, created_at=created,
                           updated_at=done or created, completed_at=done, current_step=step)


def test_filter_syntax():
    f = parse_filter('status:failed label:"nightly etl" since:2h disk full', Filters())
    assert f == Filters(status="failed", label="nightly etl", text="disk full",
                        since=timedelta(hours=2))
    assert parse_filter("label:=etl sort:oldest", Filters()).label_exact == "etl"
    assert parse_filter("label:=etl sort:oldest", Filters()).oldest_first
    assert parse_filter("", Filters(status="failed")).status == "failed"  # a tab outlives ""
    assert f.describe() == "status:failed label:'nightly etl' since:7200s 'disk full'"
    with pytest.raises(ValueError, match="unknown status"):
        parse_filter("status:broken", Filters())
    with pytest.raises(ValueError, match="since:"):
        parse_filter("since:soon", Filters())
    # (0 would silently filter nothing; a huge one overflowed the date arithmetic: a traceback)
    for bad in ("since:0s", "since:0", "since:99999999999d", "since:800000d"):
        with pytest.raises(ValueError, match="above 0 and up to 100 years"):
            parse_filter(bad, Filters())
    assert parse_filter("since:36500d", Filters()).since == timedelta(days=36500)
    for bad in ("since:²h", "since:" + "9" * 5000):  # (raw int() errors before)
        with pytest.raises(ValueError, match="use a number with s, m, h, d or w"):
            parse_filter(bad, Filters())
    with pytest.raises(ValueError, match="filter:"):
        parse_filter('label:"unterminated', Filters())


def test_keyset_order_newest_first_then_id():
    cursor = (NOW, "m")
    assert is_after(row("a", minutes_ago=1), cursor, oldest_first=False)
    assert is_after(row("z"), cursor, oldest_first=False)
    assert not is_after(row("a"), cursor, oldest_first=False)
    assert is_after(row("a"), cursor, oldest_first=True)
    assert not is_after(row("a", minutes_ago=1), cursor, oldest_first=True)


def test_selection_targets_the_selection_in_list_order_then_unloaded_matches_else_the_cursor():
    rows = [row("a", label="one"), row("b"), row("c", status="failed")]
    s = Selection()
    assert [t.id for t in s.targets(rows, "b")] == ["b"]
    assert s.targets(rows, None) == []
    assert s.toggle("c") and s.toggle("a") and not s.toggle("c")
    s.toggle("c")
    assert [t.id for t in s.targets(rows, "b")] == ["a", "c"]
    s.select_matching([row("c", status="failed"), row("q", label="far", status="pending")])
    assert s.all_matching
    assert [(t.id, t.label, t.status) for t in s.targets(rows, "b")] == [
        ("c", None, "failed"), ("q", "far", "pending")]
    s.keep_only({"a"})  # a refresh no longer lists c: `*`'s selection stays whole
    assert s.ids == {"c", "q"}
    s.clear()
    assert not s and not s.matching


def test_columns_share_the_width_and_mark_the_sorted_column():
    cols = plan_columns(120, see_others=True, wanted_label=12, sort_key="started",
                        oldest_first=False, sort_reverse=False)
    assert [c.key for c in cols] == ["sel", "id", "status", "label", "step", "started",
                                     "duration", "by"]
    assert sum(c.width + 2 for c in cols) <= 120
    assert next(c for c in cols if c.key == "started").title == "started ▼"
    narrow = plan_columns(80, see_others=False, wanted_label=60, sort_key="label",
                          oldest_first=False, sort_reverse=True)
    assert "by" not in [c.key for c in narrow]
    label = next(c for c in narrow if c.key == "label")
    assert label.title == "label ▼" and label.width < 60  # at most half of what is left
    assert wanted_label_width([row("a", label="x" * 90)]) == 60
    assert wanted_label_width([]) == 12


def test_a_rows_cells_follow_the_columns():
    keys = ["sel", "id", "status", "duration", "by"]
    cells = row_cells(row("a", took=65, status="completed"), keys, selected=True, now=NOW,
                      tz=UTC, wide=True)
    assert [str(c) for c in cells] == ["●", "a", "✓ completed", "1m05s", "alice"]
    pending = row_cells(row("p", status="pending"), ["duration"], selected=False, now=NOW, tz=UTC,
                        wide=False)
    assert pending == [""]


def test_status_tabs_health_line_and_status_line_text():
    counts = StatusCounts({"running": 2, "failed": 1})
    tabs = tabs_text(counts, "failed", narrow=False).plain
    assert "All 3" in tabs and "Failed 1" in tabs and "Running 2" in tabs
    assert "Failed" not in tabs_text(counts, None, narrow=True).plain
    assert "…" in tabs_text(None, None, narrow=False).plain
    assert health_text(None).plain == ""
    line = health_text({"alive": 0, "engines": 1, "runnable": 3, "oldest_s": 2, "stuck": 0}).plain
    assert line.startswith("engines 0/1 alive · 3 ready (oldest 2.0s) · 0 stuck")
    status = ListStatus(shown=100, more=True, selected=2, sort=("took", True),
                        filter="status:failed", loaded=True).text().plain
    assert status == ("100+ shown  ·  2 selected (space toggles, esc clears)  ·  sort: took ▼ "
                      "(S: next, o: reverse)  ·  filter: status:failed")
    assert ListStatus(loaded=True, empty="no instances yet").text().plain.endswith("no instances yet")
    assert ListStatus(loaded=True, filter="x").text().plain.endswith("no instances match")

