"""The instance list's filter: what the `/` box means (`status:failed label:etl since:2h words`).

Why a module of its own: parsing the box is pure logic (no Textual, no database), tested in
tests/unit without a server, and the list screen, its filter bar and the status line all read
the same `Filters`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import timedelta

from dftui.vocabulary import STATUSES

_SINCE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SINCE_MAX_SECONDS = 100 * 366 * 86400  # (much more overflows the date arithmetic of "now - since")


@dataclass(frozen=True)
class Filters:
    """What the list shows. Parsed from the `/` box: `status:failed label:etl since:2h words`.

    `label:etl` matches labels containing "etl" (any case); `label:=etl` only the label "etl".
    Free words match the id (prefix), label, submitter, any step's SQL and any error text."""

    status: str | None = None
    label: str | None = None
    text: str | None = None
    since: timedelta | None = None
    oldest_first: bool = False

    @property
    def label_exact(self) -> str | None:
        return self.label[1:] if self.label and self.label.startswith("=") else None

    @property
    def label_like(self) -> str | None:
        return self.label if self.label and not self.label.startswith("=") else None

    def describe(self) -> str:
        parts = ["sort:oldest"] if self.oldest_first else []
        if self.status:
            parts.append(f"status:{self.status}")
        if self.label:
            parts.append(f"label:{shlex.quote(self.label)}")
        if self.since:
            parts.append(f"since:{int(self.since.total_seconds())}s")
        if self.text:
            parts.append(shlex.quote(self.text))
        return " ".join(parts)


def parse_filter(text: str, current: Filters) -> Filters:
    """Parse the filter box. Raises ValueError with a user-facing message on bad input."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"filter: {exc}") from None
    status, label, since, words = None, None, None, []
    oldest = False
    for token in tokens:
        key, sep, value = token.partition(":")
        if sep and key == "status":
            if value not in STATUSES:
                raise ValueError(f"unknown status {value!r}; use one of {', '.join(STATUSES)}")
            status = value
        elif sep and key == "label":
            label = value or None
        elif sep and key == "sort":
            if value not in ("oldest", "newest"):
                raise ValueError(f"sort:{value} — use sort:oldest or sort:newest")
            oldest = value == "oldest"
        elif sep and key == "since":
            unit = value[-1:] if value[-1:] in _SINCE_UNITS else "s"
            number = value[:-1] if value[-1:] in _SINCE_UNITS else value
            # (ASCII digits only, and few of them: '²' passed isdigit and int() raised; 5,000
            # digits hit Python's int-conversion limit, shown as its raw error)
            if not (number.isascii() and number.isdigit() and len(number) <= 15):
                raise ValueError(f"since:{value} — use a number with s, m, h, d or w (e.g. since:2h)")
            seconds = int(number) * _SINCE_UNITS[unit]
            if not 0 < seconds <= _SINCE_MAX_SECONDS:
                raise ValueError(f"since:{value} — use a duration above 0 and up to 100 years "
                                 "(e.g. since:2h)")
            since = timedelta(seconds=seconds)
        else:
            words.append(token)
    return Filters(status=status if status else current.status if not tokens else None,
                   label=label, text=" ".join(words) or None, since=since, oldest_first=oldest)
