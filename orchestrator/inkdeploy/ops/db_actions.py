"""Run a planned database operation (ops/db_plan.py) and watch the cluster until it shows the
result.

The cluster is read from the controller (GET /cluster on every member, 2 s timeouts); the
operation itself runs on a db host over SSH, because Patroni's unsafe REST endpoints answer only
the members and loopback: a call of that member's own REST API with the credentials of its own
configuration (payloads/patroni_api.py), or patronictl for reinit. The first host of the plan's
order that answers runs it.

Under the deploy lock when the inventory has one (ops/held.py), so no rollout's migrations
cross a switchover; the cluster is read again under the lock and planned again, so nothing
moves between the check and the change. A database-only inventory has no lock; `--no-lock`
skips it when its hosts are down and no rollout can run anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import Environment
from inkdeploy.ops.db import DbStatus, db_status
from inkdeploy.ops.db_plan import DbPlan, old_leader_back, reached
from inkdeploy.ops.held import held
from inkdeploy.preflight import LEADER_ROLES, hostvar
from inkdeploy.remote import Remote, RemoteError

Planner = Callable[[DbStatus], DbPlan]
POLL_S = 0.5


class DbActionFailed(InkdeployError):
    """Patroni refused or did not finish the operation."""


@dataclass
class DbResult:
    action: str
    summary: str
    changed: bool
    dry_run: bool
    leader_before: str | None
    leader_after: str | None = None
    target: str | None = None
    ran_on: str | None = None
    lock: str = ""  # held | none in this inventory | skipped (--no-lock)
    seconds: float = 0.0  # command start to the result seen in the cluster
    # switchover: seconds from the command's start until the old leader streamed again
    old_leader_back_s: float | None = None
    message: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scope_of(env: Environment) -> str:
    db = env.groups.get("db", [])
    return str((hostvar(env, db[0], "patroni_scope") if db else None) or "inkdeploy")


def run(
    env: Environment,
    planner: Planner,
    *,
    dry_run: bool = False,
    no_lock: bool = False,
    wait_s: float = 60.0,
    message: str = "",
) -> DbResult:
    if not env.groups.get("db"):
        raise DbActionFailed("The inventory has no host in group db; pass the right inventory.")
    began = time.monotonic()
    plan = planner(db_status(env))  # refusals happen here, before any lock is taken
    if dry_run or plan.noop:
        return DbResult(plan.action, plan.summary, False, dry_run, plan.leader, plan.leader,
                        plan.target, message=plan.summary)  # fmt: skip
    with held(env, f"db-{plan.action}", message or plan.summary, plan.target,
              no_lock=no_lock) as lock:  # fmt: skip
        return _execute(env, planner, lock.lock, began, wait_s)


def _execute(
    env: Environment, planner: Planner, lock: str, began: float, wait_s: float
) -> DbResult:
    plan = planner(db_status(env))  # again: the lock may have waited, the cluster moved
    result = DbResult(plan.action, plan.summary, False, False, plan.leader, plan.leader,
                      plan.target, lock=lock)  # fmt: skip
    if plan.noop:
        result.message = plan.summary
        return result
    result.ran_on = _run_on_member(Remote(env.hostvars), plan, wait_s)
    result.changed = True
    status = _watch(env, lambda s: reached(plan, s), began, wait_s)
    result.seconds = round(time.monotonic() - began, 2)
    if not reached(plan, status):
        raise DbActionFailed(
            f"The {plan.action} ran on {result.ran_on}, but after {wait_s:.0f} s the "
            f"cluster does not show it done ({_seen(status)}); check `inkdeploy db status`."
        )
    if plan.action == "switchover":
        status = _watch(env, lambda s: old_leader_back(plan, s), began, wait_s)
        if old_leader_back(plan, status):
            result.old_leader_back_s = round(time.monotonic() - began, 2)
    result.leader_after = next(
        (m.name for m in status.members if m.role in LEADER_ROLES and m.state == "running"),
        None,
    )
    result.members = [m.to_dict() for m in status.members]
    result.message = _done(plan, result)
    return result


def _run_on_member(remote: Remote, plan: DbPlan, wait_s: float) -> str:
    """Run the plan's REST call or command on the first member that answers; its name."""
    tried: list[str] = []
    for host in plan.run_on:
        if not remote.usable([host]):
            tried.append(f"{host}: its connection settings need Ansible")
            continue
        if plan.request is not None:
            params = {**plan.request, "timeout_s": wait_s}
            outcome = remote.payload_each("patroni_api", {host: params}, wait_s + 30)[host]
            if isinstance(outcome, RemoteError) and outcome.unreachable:
                tried.append(f"{host}: {outcome}")
                continue
            if isinstance(outcome, RemoteError):
                raise DbActionFailed(
                    f"{plan.action} refused on {host}: {_strip(str(outcome))}; nothing more "
                    "was done (`inkdeploy db status` shows the cluster)."
                )
            return host
        reply = remote.command(host, plan.argv, timeout_s=wait_s + 30)
        if reply.unreachable:
            tried.append(f"{host}: {reply.problem()}")
            continue
        if reply.rc != 0:
            said = (reply.stderr.strip() or reply.stdout.strip()).splitlines()
            raise DbActionFailed(
                f"patronictl {plan.action} on {host} failed: "
                f"{_strip(said[-1]) if said else f'exit {reply.rc}'}; nothing more was done."
            )
        return host
    raise DbActionFailed(
        f"No db host could run the {plan.action} ({'; '.join(tried)}); check SSH to the db hosts."
    )


def _strip(text: str) -> str:
    return text.strip().rstrip(".")


def _watch(
    env: Environment, done: Callable[[DbStatus], bool], began: float, wait_s: float
) -> DbStatus:
    while True:
        status = db_status(env)
        if done(status) or time.monotonic() - began > wait_s:
            return status
        time.sleep(POLL_S)


def _seen(status: DbStatus) -> str:
    return ", ".join(f"{m.name} {m.role} {m.state}" for m in status.members) or "no member answered"


def _done(plan: DbPlan, result: DbResult) -> str:
    if plan.action == "switchover":
        back = (
            f"; {plan.leader} streams from it again ({result.old_leader_back_s:.1f} s)"
            if result.old_leader_back_s is not None
            else f"; {plan.leader} is not streaming yet (`inkdeploy db status`)"
        )
        return f"{plan.target} is the leader ({result.seconds:.1f} s){back}."
    if plan.action == "failover":
        return f"{plan.target} is the leader ({result.seconds:.1f} s)."
    if plan.action == "reinit":
        return (
            f"{plan.target} was re-created and streams from {result.leader_after} "
            f"({result.seconds:.1f} s)."
        )
    state = "paused: Patroni fails nothing over" if plan.action == "pause" else "managed again"
    return f"The cluster is {state} ({result.seconds:.1f} s)."
