"""Every name the engine coordinates by, in one place: channels, locked rows and relations, bounds.

PostgreSQL is the engine's only coordinator, and after the security work (docs/security.md,
class 7) the engine takes **no advisory locks**: any role can take any advisory key, so each key
the engine used to take (the per-instance lock, the step marker, the trampoline setup, the
lease of the former non-transactional path) let any role freeze one instance, every step or
every new role's first step. What is left is listed here. Every lock is on something only the
engine (or the df owner) can lock in a conflicting mode, and every wait for one is bounded.

The SQL side names the same things in `sql/routines/` (pg_notify calls, `lock_instance`,
`claim_tasks`); a rename here must be made there too.
"""

from __future__ import annotations

# -- notification channels (wake-up hints only: anyone may LISTEN and NOTIFY; no payload) ------
# A task became due (df.start, df.signal, df.retry, a timer): wake a worker.
WORK_CHANNEL = "df_work"
# An instance was cancelled: ask the database which running steps belong to ended instances.
CANCEL_CHANNEL = "df_cancel"
# A node generation was fenced (race loser, superseded loop iteration): the same check.
ABANDON_CHANNEL = "df_abandon"
LISTENED_CHANNELS = (WORK_CHANNEL, CANCEL_CHANNEL, ABANDON_CHANNEL)
# Channels on which the engine checks its running steps (Listener.cancel_dead_steps).
CHECK_CHANNELS = frozenset({CANCEL_CHANNEL, ABANDON_CHANNEL})

# -- row locks (engine-owned tables: no other role can lock their rows) -------------------------
# The lease of a task: its row locked FOR UPDATE SKIP LOCKED by the claim, until the step's
# transaction ends (an engine that dies releases it with its session). engine/claim.py.
TASK_QUEUE = "df_internal.tasks"
# Orchestration for one instance is serialised by a row lock here (df_internal.lock_instance,
# sql/routines/engine_locks.sql), never the instance row, never held while user SQL runs.
INSTANCE_LOCKS = "df_internal.instance_locks"
# A role's running-step slots (the per-role cap): a slot is a row locked by the claim for as
# long as the step runs (df_internal.claim_tasks, sql/routines/queue.sql).
ROLE_SLOTS = "df_internal.role_slots"
# What each worker runs, committed before it runs it (engine/journal.py): a crash is charged.
INFLIGHT = "df_internal.inflight"

# -- relation locks ---------------------------------------------------------------------------
# Every trampoline locks this in ACCESS SHARE mode: df_internal.in_engine_step() recognises an
# engine step by it (only its owner can take the conflicting ACCESS EXCLUSIVE). identity.py.
STEP_MARKER = "df._step_marker"
# Installers and upgraders serialise on this table (SHARE ROW EXCLUSIVE; owner only). schema.py.
SCHEMA_LOCK = "df_internal.schema_version"

# -- names shared between the engine's SQL and its protocol use ----------------------------------
# The portal describe_<oid> opens over a step; the engine sends a protocol Describe for it.
DESCRIBE_PORTAL = "df_describe"

# -- bounds on every lock wait ------------------------------------------------------------------
# A step after the first of its batch: it gives way instead of waiting behind the batch's locks.
BATCH_LOCK_TIMEOUT = "50ms"
# Housekeeping (retention DELETE, heartbeats): a role's row locks on its own finished instances
# must not stop the heartbeat. Trampoline setup: nothing a user does may park a worker.
HOUSEKEEPING_LOCK_TIMEOUT = "5s"
SETUP_LOCK_TIMEOUT = "5s"
