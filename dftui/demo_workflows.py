"""The demo's data and workflows: what `dftui demo` seeds into its embedded database.

Two application roles own their own schemas (`app` for demo_alice, `analytics` for demo_bob) and
start their workflows themselves, so row-level security is visible in the TUI: connected as
alice you never see bob's instances. Everything is plain DSL, the same text docs/dsl.md explains;
each workflow shows one thing people use durable workflows for.

Seeding runs in one transaction and only when the demo schemas do not exist yet, so reusing the
demo directory never duplicates anything, and an interrupted seed leaves nothing half-done.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

ROLES = ("demo_alice", "demo_bob")

# Tables and sample data, created as their owners (SET ROLE) so steps, which run as the
# submitting role, have exactly the privileges an application role would have.
ALICE_SETUP = r"""
CREATE SCHEMA app AUTHORIZATION demo_alice;
SET ROLE demo_alice;

CREATE TABLE app.documents (
    id          serial PRIMARY KEY,
    title       text NOT NULL,
    body        text NOT NULL,
    embedding   real[],
    embedded_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO app.documents (title, body)
SELECT format('%s notes #%s', (ARRAY['Pricing', 'Onboarding', 'Churn', 'Latency', 'Billing',
                                     'Search'])[1 + g % 6], g),
       repeat(md5(g::text) || ' ', 1 + g % 5)
  FROM generate_series(1, 240) g;

CREATE TABLE app.signups_raw (
    id           serial PRIMARY KEY,
    email        text NOT NULL,
    name         text NOT NULL,
    signed_up_at timestamptz NOT NULL,
    loaded_at    timestamptz
);
-- 300 sign-ups of 240 people: the same address arrives again with other case and whitespace.
INSERT INTO app.signups_raw (email, name, signed_up_at)
SELECT CASE WHEN g > 240 THEN '  ' || upper(e) ELSE e END, n,
       now() - make_interval(hours => 300 - g)
  FROM generate_series(1, 300) g,
       LATERAL (SELECT format('%s%s@example.com',
                              (ARRAY['ana', 'ben', 'chloe', 'dev', 'eli', 'fay'])[1 + g % 6],
                              (g - 1) % 240) AS e,
                       (ARRAY['Ana', 'Ben', 'Chloe', 'Dev', 'Eli', 'Fay'])[1 + g % 6] AS n) x;
CREATE TABLE app.signups_staging (email text NOT NULL, name text NOT NULL,
                                  signed_up_at timestamptz NOT NULL);
CREATE TABLE app.customers (
    email      text PRIMARY KEY,
    name       text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL
);

CREATE TABLE app.expense_reports (
    id         serial PRIMARY KEY,
    employee   text NOT NULL,
    amount     numeric(10, 2) NOT NULL,
    purpose    text NOT NULL,
    status     text NOT NULL DEFAULT 'submitted',
    decided_at timestamptz
);

CREATE TABLE app.orders (
    id         serial PRIMARY KEY,
    region     text NOT NULL,
    amount     numeric(10, 2) NOT NULL,
    ordered_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO app.orders (region, amount, ordered_at)
SELECT (ARRAY['emea', 'amer', 'apac'])[1 + g % 3], round((10 + (g * 37) % 490)::numeric, 2),
       now() - make_interval(mins => g)
  FROM generate_series(1, 600) g;
CREATE TABLE app.sales_rollup (
    day   date PRIMARY KEY,
    emea  numeric(12, 2) NOT NULL,
    amer  numeric(12, 2) NOT NULL,
    apac  numeric(12, 2) NOT NULL
);

CREATE TABLE app.payments_raw (
    id       integer PRIMARY KEY,
    amount   text NOT NULL,      -- as delivered by the partner's CSV export
    currency text NOT NULL,
    imported boolean NOT NULL DEFAULT false
);
INSERT INTO app.payments_raw (id, amount, currency)
SELECT g, CASE WHEN g = 13 THEN 'N/A' ELSE (g * 7.25)::text END, 'EUR'
  FROM generate_series(1, 20) g;
CREATE TABLE app.payments (id integer PRIMARY KEY, amount numeric(10, 2) NOT NULL,
                           currency text NOT NULL);

CREATE TABLE app.heartbeats (
    at                timestamptz NOT NULL DEFAULT now(),
    pending_documents bigint NOT NULL,
    customers         bigint NOT NULL
);

SELECT df.setvar('batch_size', '40');
SELECT df.setvar('slack_webhook_token', 'xoxb-demo-0000-not-a-real-token');
RESET ROLE;
"""

BOB_SETUP = r"""
CREATE SCHEMA analytics AUTHORIZATION demo_bob;
SET ROLE demo_bob;
CREATE TABLE analytics.page_views (
    id        bigserial PRIMARY KEY,
    visitor   integer NOT NULL,
    path      text NOT NULL,
    viewed_at timestamptz NOT NULL
);
INSERT INTO analytics.page_views (visitor, path, viewed_at)
SELECT (g * 7919) % 900, (ARRAY['/', '/pricing', '/docs', '/blog', '/signup'])[1 + g % 5],
       now() - make_interval(secs => g * 17)
  FROM generate_series(1, 5000) g;
CREATE TABLE analytics.daily_views (day date PRIMARY KEY, views bigint NOT NULL,
                                    visitors bigint NOT NULL);
SELECT df.setvar('report_recipient', 'bob@example.com');
RESET ROLE;
"""


@dataclass(frozen=True)
class Workflow:
    """One seeded workflow: who starts it, its label, the DSL expression, and what it shows."""

    role: str
    label: str
    expression: str
    shows: str


WORKFLOWS: list[Workflow] = [
    Workflow(
        "demo_alice",
        "embed-documents",
        r"""
df.loop(
    $$WITH batch AS (SELECT id FROM app.documents
                      WHERE embedding IS NULL ORDER BY id LIMIT {batch_size})
      UPDATE app.documents d
         SET embedding = ARRAY(SELECT (abs(hashtext(d.body || g::text)) % 2000) / 1000.0 - 1
                                 FROM generate_series(1, 8) g)::real[],
             embedded_at = now()
        FROM batch WHERE d.id = batch.id
      RETURNING d.id$$ |=> 'batch',
    'SELECT EXISTS (SELECT 1 FROM app.documents WHERE embedding IS NULL)')
~> 'SELECT count(*) AS embedded FROM app.documents WHERE embedding IS NOT NULL'
""",
        "a batch pipeline: a do-while LOOP embeds {batch_size} documents per iteration",
    ),
    Workflow(
        "demo_alice",
        "etl-signups",
        r"""
'TRUNCATE app.signups_staging'
~> ($$INSERT INTO app.signups_staging (email, name, signed_up_at)
      SELECT lower(trim(email)), name, signed_up_at FROM app.signups_raw
       WHERE loaded_at IS NULL
      RETURNING email$$ |=> 'staged')
~> ($$INSERT INTO app.customers AS c (email, name, first_seen, last_seen)
      SELECT email, (array_agg(name ORDER BY signed_up_at DESC))[1],
             min(signed_up_at), max(signed_up_at)
        FROM app.signups_staging GROUP BY email
      ON CONFLICT (email) DO UPDATE
         SET name = excluded.name,
             first_seen = least(c.first_seen, excluded.first_seen),
             last_seen = greatest(c.last_seen, excluded.last_seen)
      RETURNING email$$ |=> 'merged')
~> 'UPDATE app.signups_raw SET loaded_at = now() WHERE loaded_at IS NULL'
~> $$SELECT (SELECT count(*) FROM app.signups_staging) AS staged,
            (SELECT count(*) FROM app.customers) AS customers$$
""",
        "an ETL: load into staging, deduplicate into the target, mark the source",
    ),
    Workflow(
        "demo_alice",
        "expense-approval-1042",
        r"""
($$INSERT INTO app.expense_reports (employee, amount, purpose)
   VALUES ('dana', 1840.00, 'team offsite') RETURNING id$$ |=> 'report')
~> (df.wait_for_signal('approval', 86400) |=> 'decision')
~> ($$SELECT coalesce(($decision::jsonb -> 'data' ->> 'approved')::boolean, false)$$
    ?> $$UPDATE app.expense_reports SET status = 'approved', decided_at = now()
          WHERE id = $report RETURNING id, status$$
    !> $$UPDATE app.expense_reports SET status = 'rejected', decided_at = now()
          WHERE id = $report RETURNING id, status$$)
""",
        "a human approval: waits for the signal 'approval' (send {\"approved\": true})",
    ),
    Workflow(
        "demo_alice",
        "sales-rollup",
        r"""
df.join3(
    $$SELECT count(*) AS orders, sum(amount) AS revenue
        FROM app.orders WHERE region = 'emea'$$ |=> 'emea',
    $$SELECT count(*) AS orders, sum(amount) AS revenue
        FROM app.orders WHERE region = 'amer'$$ |=> 'amer',
    $$SELECT count(*) AS orders, sum(amount) AS revenue
        FROM app.orders WHERE region = 'apac'$$ |=> 'apac')
~> $$INSERT INTO app.sales_rollup (day, emea, amer, apac)
     VALUES (current_date, $emea.revenue, $amer.revenue, $apac.revenue)
     ON CONFLICT (day) DO UPDATE
        SET emea = excluded.emea, amer = excluded.amer, apac = excluded.apac
     RETURNING day, emea + amer + apac AS total$$
""",
        "a fan-out: three regional aggregates in parallel (JOIN), then one combined row",
    ),
    Workflow(
        "demo_alice",
        "import-payments",
        r"""
($$INSERT INTO app.payments (id, amount, currency)
   SELECT id, amount::numeric, currency FROM app.payments_raw WHERE NOT imported
   RETURNING id$$ |=> 'imported')
~> $$UPDATE app.payments_raw SET imported = true
      WHERE id IN (SELECT id FROM app.payments) RETURNING id$$
""",
        "a step that fails on bad data (amount 'N/A'); fix the row, then retry",
    ),
    Workflow(
        "demo_alice",
        "heartbeat-every-minute",
        r"""
df.loop(
    df.wait_for_schedule('* * * * *')
    ~> $$INSERT INTO app.heartbeats (pending_documents, customers)
         SELECT (SELECT count(*) FROM app.documents WHERE embedding IS NULL),
                (SELECT count(*) FROM app.customers)
         RETURNING at$$)
""",
        "a cron loop: wakes at every minute boundary (UTC) and records a heartbeat",
    ),
    Workflow(
        "demo_alice",
        "archive-old-documents",
        r"""
df.sleep(3600)
~> $$DELETE FROM app.documents WHERE created_at < now() - interval '5 years'$$
""",
        "a scheduled clean-up that was cancelled before it ran",
    ),
    Workflow(
        "demo_bob",
        "nightly-views-report",
        r"""
($$SELECT count(*) AS views, count(DISTINCT visitor) AS visitors
     FROM analytics.page_views WHERE viewed_at >= now() - interval '1 day'$$ |=> 'totals')
~> $$INSERT INTO analytics.daily_views (day, views, visitors)
     VALUES (current_date, $totals.views, $totals.visitors)
     ON CONFLICT (day) DO UPDATE SET views = excluded.views, visitors = excluded.visitors
     RETURNING day, views, visitors$$
""",
        "bob's report (alice cannot see it: row-level security)",
    ),
    Workflow(
        "demo_bob",
        "warehouse-sync",
        r"""
df.sleep(900) ~> 'SELECT count(*) AS rows_synced FROM analytics.page_views'
""",
        "bob's durable timer: sleeps 15 minutes, survives restarts",
    ),
]

# Instances (by label) cancelled right after seeding, so every status shows up in the list.
CANCEL_AFTER_SEED = {"archive-old-documents": "postponed until after the audit"}

# Shown by `dftui demo --no-tui` and in the docs: how to get the failing workflow going again.
FIX_PAYMENTS = (
    "UPDATE app.payments_raw SET amount = '94.25' WHERE amount = 'N/A' RETURNING id, amount"
)


def is_seeded(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname IN ('app', 'analytics')"
    ).fetchone()
    return bool(row and row[0])


def ensure_roles(conn: psycopg.Connection) -> None:
    """Create the demo roles (LOGIN, no password: the embedded server trusts loopback)."""
    for role in ROLES:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))


def seed(conn: psycopg.Connection) -> dict[str, str]:
    """Create the demo data and start every workflow; returns {label: instance id}.

    `conn` is a superuser connection (not autocommit-sensitive: everything runs in one
    transaction). Does nothing and returns {} when the demo was seeded before.
    """
    started: dict[str, str] = {}
    with conn.transaction():
        if is_seeded(conn):
            return {}
        conn.execute("SET LOCAL client_min_messages = warning")
        for role in ROLES:
            conn.execute("SELECT df.grant_usage(%s)", (role,))
        conn.execute(ALICE_SETUP)
        conn.execute(BOB_SETUP)
        for wf in WORKFLOWS:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(wf.role)))
            # The expression is our own constant SQL; composed (not parameterised) so that `%`
            # and `{var}` in step text reach the server untouched.
            query = sql.SQL("SELECT df.start(({}), {})").format(
                sql.SQL(wf.expression.strip()), sql.Literal(wf.label)
            )
            row = conn.execute(query).fetchone()
            conn.execute("RESET ROLE")
            assert row is not None
            started[wf.label] = row[0]
    # Cancel after commit: cancelling is a request to the engine, made as the owner.
    for label, reason in CANCEL_AFTER_SEED.items():
        owner = next(wf.role for wf in WORKFLOWS if wf.label == label)
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(owner)))
            conn.execute("SELECT df.cancel(%s, %s)", (started[label], reason))
    return started
