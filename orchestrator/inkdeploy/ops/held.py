"""The deploy lock around an on-call change, and the line it leaves in the release history.

Every changing verb (db, redis failover, workers restart) runs its change inside `held(...)`:
the lock is taken when the inventory has one (state.lock.lock_hosts) and the operator did not
pass --no-lock, renewed while the change runs, and released with a history record of the verb's
KIND saying what it did to which host, whether it succeeded, who and why (secrets masked).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.deploy import Session
from inkdeploy.events import redact
from inkdeploy.inventory import Environment
from inkdeploy.state.lock import holder_info, lock_hosts, whoami

NO_LOCK = "none in this inventory"
SKIPPED = "skipped (--no-lock)"


@dataclass
class Held:
    lock: str  # held | NO_LOCK | SKIPPED
    session: Session | None = None
    # more fields for the history record, set by the change (e.g. the new master)
    record: dict[str, Any] = field(default_factory=dict)


def lock_state(env: Environment, no_lock: bool) -> str:
    """What a change would do with the deploy lock: held, NO_LOCK or SKIPPED."""
    if no_lock:
        return SKIPPED
    return "held" if lock_hosts(env) else NO_LOCK


@contextmanager
def held(
    env: Environment,
    kind: str,
    reason: str,
    target: str | None,
    *,
    no_lock: bool = False,
    session: Session | None = None,
) -> Iterator[Held]:
    """Hold the deploy lock (if the inventory has one) while the block runs, then release it
    with a history record of KIND about TARGET: succeeded, or failed if the block raised.
    SESSION: the caller's own (it reads the fleet under the lock)."""
    state = lock_state(env, no_lock)
    if state != "held":
        yield Held(state, session)
        return
    session = session or Session.of(env)
    op_id = f"{kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    started = time.time()
    word = "failed"
    handle = Held("held", session)
    with session.hold(holder_info(op_id, "", kind, reason)):
        try:
            yield handle
            word = "succeeded"
        finally:
            if session.heartbeat:
                session.heartbeat.stop()
            record = {
                "rollout": op_id, "kind": kind, "strategy": kind, "version": None,
                "previous": None, "host": target, "result": word,
                "reason": redact(reason, session.secrets()), "user": whoami(),
                "started": started, "seconds": round(time.time() - started, 1),
                **handle.record,
            }  # fmt: skip
            session.lock.release(op_id, record)
