"""Engine connections: one definition of how the engine talks to PostgreSQL."""

from __future__ import annotations

import psycopg

# search_path pinned to pg_catalog (engine SQL is schema-qualified; a step's plain SET is reset
# after it); a lost or stalled client is noticed by the server within seconds.
_OPTIONS = (
    "-c search_path=pg_catalog,pg_temp -c idle_in_transaction_session_timeout=600000 "
    "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
)


def connect(dsn: str, purpose: str, dbname: str | None = None) -> psycopg.Connection:
    """An engine connection: autocommit (transactions are explicit), pinned search_path.

    `dbname` overrides the DSN's database (steps of instances that name another database).
    """
    if dbname is not None:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
        params["dbname"] = dbname
        dsn = psycopg.conninfo.make_conninfo(**params)
    return psycopg.connect(dsn, autocommit=True, application_name=f"dftui engine ({purpose})",
                           options=_OPTIONS, prepare_threshold=None)
