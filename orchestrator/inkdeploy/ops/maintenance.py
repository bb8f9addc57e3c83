"""`inkdeploy maintenance on|off`: a freeze of the fleet held in the deploy lock, with its reason.

On: the deploy lock is taken by hand (no lease: it holds until `maintenance off`), so rollouts,
rollbacks, site.yml, lb-weights.yml and celery.yml refuse while it lasts and say why; `status`
and `lock status` show it. Off: the freeze is lifted; a lock held by a rollout is never released
here. Both leave a `maintenance` line in the release history.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from inkdeploy.events import redact
from inkdeploy.state.lock import FleetLock, LockHeld, describe_holder, holder_info, whoami

KIND = "maintenance"


class NotMaintenance(LockHeld):
    """`maintenance off` while the lock belongs to something else; nothing was changed."""


@dataclass
class MaintenanceResult:
    state: str  # on | off
    changed: bool
    message: str
    holder: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_maintenance(holder: dict[str, Any]) -> bool:
    return holder.get("strategy") == KIND


def _record(state: str, reason: str, secrets: list[str]) -> dict[str, Any]:
    now = time.time()
    return {"rollout": f"{KIND}-{state}-{int(now)}", "kind": KIND, "strategy": KIND,
            "version": None, "previous": None, "result": state,
            "reason": redact(reason, secrets), "user": whoami(), "started": now,
            "seconds": 0.0}  # fmt: skip


def maintenance_on(lock: FleetLock, reason: str, secrets: list[str]) -> MaintenanceResult:
    """Freeze the fleet; LockHeld (nothing changed) when a rollout or someone else holds it."""
    current = lock.query(history_lines=0)["holder"]
    if current and is_maintenance(current) and not current.get("expired"):
        said = f"The fleet is in maintenance already: {describe_holder(current, lock.stale_after)}."
        return MaintenanceResult("on", False, said, current)
    holder = holder_info(f"{KIND}-{int(time.time())}", "", KIND, reason)
    holder["pid"] = None  # not tied to this short-lived process
    taken = lock.acquire(holder)
    lock.record(_record("on", reason, secrets))
    said = (
        f"Maintenance on: {reason}. Rollouts, rollbacks and playbooks refuse until "
        "`inkdeploy maintenance off`."
    )
    return MaintenanceResult("on", True, said, taken)


def maintenance_off(lock: FleetLock, reason: str, secrets: list[str]) -> MaintenanceResult:
    """Lift the freeze; NotMaintenance (nothing changed) when the lock is someone else's."""
    current = lock.query(history_lines=0)["holder"]
    if not current:
        return MaintenanceResult("off", False, "The fleet is not in maintenance.", {})
    if not is_maintenance(current):
        raise NotMaintenance(
            "The deploy lock is not held for maintenance but by "
            f"{describe_holder(current, lock.stale_after)}; nothing was changed "
            "(`inkdeploy lock release --force` if it is stale)."
        )
    lock.release(str(current.get("rollout", "")), _record("off", reason, secrets), force=True)
    return MaintenanceResult("off", True, "Maintenance off: rollouts and playbooks may run.", {})
