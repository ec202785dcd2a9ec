"""The connected role's df.vars: list, set, unset ({name} substitution in its steps)."""

from __future__ import annotations

import re

from psycopg.rows import class_row

from dftui.client.errors import InputError
from dftui.client.models import Var
from dftui.client.session import Session

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def var_name_problem(name: str) -> str | None:
    """Why `name` cannot be a df.vars name (None: it can): a letter or _ then letters, digits,
    _ — what {name} substitution recognises."""
    if not name:
        return "the name must not be empty"
    if not _NAME_RE.match(name):
        return (f"{name!r} is not a valid name: use a letter or _ followed by letters, digits "
                "or _ (e.g. api_url)")
    return None


class Vars(Session):
    """df.vars of the connected role (RLS: a role sees and changes only its own)."""

    def vars(self) -> list[Var]:
        """The current role's df.vars."""
        return self._fetch(class_row(Var), "SELECT name, value FROM df.vars ORDER BY name")

    def set_var(self, name: str, value: str) -> None:
        problem = var_name_problem(name)
        if problem:
            raise InputError(problem)
        self._rows("SELECT df.setvar(%s, %s)", (name, value))

    def has_var(self, name: str) -> bool:
        """Whether the current role has a variable of that name (df.vars shows a superuser
        every role's: only its own counts)."""
        row = self._one("SELECT EXISTS (SELECT 1 FROM df.vars v WHERE v.name = %s "
                        "AND v.owner = pg_catalog.quote_ident(current_user)::regrole) AS found",
                        (name,))
        return bool(row and row["found"])

    def unset_var(self, name: str) -> bool:
        """Remove a variable; False (and nothing done) when the role has none of that name
        (df.unsetvar says OK either way)."""
        if not self.has_var(name):
            return False
        self._rows("SELECT df.unsetvar(%s)", (name,))
        return True
