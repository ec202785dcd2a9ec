"""How the console finds the engine session running a step (sql/routines/console.sql).

The engine runs steps on its own sessions, which a submitter cannot see in pg_stat_activity.
Two facts let df.step_activity / df.cancel_step_backend find a step's session without trusting
anything a role could write:

* the worker's session (pid and backend_start) is recorded with each batch in
  df_internal.inflight, committed on the engine's journal connection (engine/journal.py);
* the statement that runs a step starts with `step_marker(...)`: pg_stat_activity.query of the
  worker begins with it exactly while that step executes. It is at the very start of what the
  engine sends, so no step text (which comes later, as a literal) can put it there; it is a
  hash, so no id is spliced into SQL as text.
"""

from __future__ import annotations

import hashlib


def step_marker(instance_id: str, node_id: str, gen: int) -> str:
    """The comment that starts the statement running this task (df_internal.step_marker)."""
    digest = hashlib.md5(f"{instance_id} {node_id} {gen}".encode(), usedforsecurity=False).hexdigest()
    return f"/* df-step {digest} */"
