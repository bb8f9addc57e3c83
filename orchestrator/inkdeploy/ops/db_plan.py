"""What `inkdeploy db switchover | failover | reinit | pause | resume` will do, decided from the
cluster as Patroni's members report it (pure: no host is contacted here).

Each planner returns a DbPlan (the patronictl command, the hosts it may run on, what to wait
for) or raises DbRefused with one sentence: what is wrong and what to do. Nothing has changed
when a planner refuses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from inkdeploy.inventory import ConfigError
from inkdeploy.ops.db import DbStatus, Member
from inkdeploy.preflight import LEADER_ROLES, SYNC_ROLES

# The file the patroni role writes (roles/patroni); patronictl reads the REST API credentials
# and the DCS from it, so no password crosses the controller.
PATRONICTL = ("patronictl", "-c", "/etc/patroni/config.yml")
# Patroni 3.0.2 (Debian 12) says "running" for a healthy replica, 3.0.4+ "streaming".
HEALTHY_REPLICA_STATES = ("streaming", "running")


class DbRefused(ConfigError):
    """The database operation cannot start as asked; nothing was changed."""


@dataclass
class DbPlan:
    action: str  # switchover | failover | reinit | pause | resume
    summary: str  # one sentence: what will happen
    leader: str | None  # the leader before
    target: str | None = None  # the new leader (switchover, failover) or the member (reinit)
    # what to run on a member: a call of its own REST API (payloads/patroni_api.py) ...
    request: dict[str, Any] | None = None  # method, path, body
    # ... or a patronictl command (reinit: it waits until the copy is done)
    argv: list[str] = field(default_factory=list)
    run_on: list[str] = field(default_factory=list)  # db hosts to run it on, in this order
    # may lose data (a failover to a member that is not a sync standby, a reinit wipes one)
    destructive: bool = False

    @property
    def noop(self) -> bool:
        return not self.argv and self.request is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _names(status: DbStatus) -> str:
    return ", ".join(m.name for m in status.members) or "none answered"


def _member(status: DbStatus, name: str) -> Member:
    for m in status.members:
        if m.name == name:
            return m
    raise DbRefused(
        f"{name} is not a member of the PostgreSQL cluster ({_names(status)}); name one of those."
    )


def _running_leader(status: DbStatus) -> Member | None:
    return next(
        (m for m in status.members if m.role in LEADER_ROLES and m.state == "running"), None
    )


def _healthy_replica(m: Member) -> bool:
    return m.role not in LEADER_ROLES and m.state in HEALTHY_REPLICA_STATES and not m.nofailover


def _need_members(status: DbStatus) -> None:
    if not status.members:
        unreachable = ", ".join(status.unreachable) or "group db is empty"
        raise DbRefused(
            f"No Patroni member answered ({unreachable}); check the db hosts "
            "(`inkdeploy db status`) before changing the cluster."
        )


def _run_order(status: DbStatus, first: list[str]) -> list[str]:
    """FIRST, then every member that answered, then the rest: patronictl works from any."""
    order = [h for h in first if h]
    order += [h for h in status.answered if h not in order]
    order += [m.name for m in status.members if m.name not in order]
    return order


def _why_not(m: Member, sync_mode: bool) -> str:
    if m.role in LEADER_ROLES:
        return f"{m.name} is the leader already; name a replica"
    if m.nofailover:
        return f"{m.name} is tagged nofailover"
    if m.state not in HEALTHY_REPLICA_STATES:
        return f"{m.name} is {m.state or 'in no known state'}, not a streaming replica"
    if sync_mode and m.role not in SYNC_ROLES:
        return (
            f"{m.name} is not a synchronous standby, so it may miss acknowledged commits "
            "(synchronous mode is on)"
        )
    return f"{m.name} cannot take over"


def plan_switchover(status: DbStatus, to: str | None) -> DbPlan:
    """A planned, clean hand-over of the leader role. Refused when no healthy sync standby
    (synchronous mode) or streaming replica (otherwise) can take it, or while paused."""
    _need_members(status)
    if status.paused:
        raise DbRefused(
            "The cluster is paused (maintenance mode), so Patroni moves no leader on its own; "
            "run `inkdeploy db resume` first, or `inkdeploy db failover --to HOST` to promote "
            "a named member while paused."
        )
    leader = _running_leader(status)
    if leader is None:
        raise DbRefused(
            f"There is no running leader to switch over from (members: {_names(status)}); "
            "if the leader's host is down and Patroni did not fail over, use "
            "`inkdeploy db failover --to HOST`."
        )
    kind = "synchronous standby" if status.synchronous_mode else "streaming replica"
    pool = [
        m
        for m in status.members
        if _healthy_replica(m) and (not status.synchronous_mode or m.role in SYNC_ROLES)
    ]
    if to is not None:
        target = _member(status, to)
        if target not in pool:
            raise DbRefused(
                f"Cannot switch over to {to}: {_why_not(target, status.synchronous_mode)}; "
                "nothing was changed (`inkdeploy db status` shows every member)."
            )
    elif not pool:
        seen = ", ".join(f"{m.name} {m.role} {m.state}" for m in status.members)
        raise DbRefused(
            f"No healthy {kind} to switch over to ({seen}); nothing was changed. Fix "
            "replication first (`inkdeploy db status`, `inkdeploy db reinit HOST`)."
        )
    else:
        target = min(pool, key=lambda m: (m.lag_bytes is None, m.lag_bytes or 0, m.name))
    return DbPlan(
        action="switchover",
        summary=f"Switch the leader over from {leader.name} to {target.name} ({kind}); "
        f"{leader.name} comes back as a replica of it.",
        leader=leader.name,
        target=target.name,
        request={
            "method": "POST",
            "path": "/switchover",
            "body": {"leader": leader.name, "candidate": target.name},
        },
        run_on=_run_order(status, [leader.name]),
    )


def plan_failover(status: DbStatus, to: str) -> DbPlan:
    """Promote TO, whatever the leader's state: the way out when the leader is gone and Patroni
    did not fail over (paused, or no member qualified). Patroni itself still refuses a member
    that is not a sync standby in synchronous mode."""
    _need_members(status)
    target = _member(status, to)
    leader = _running_leader(status)
    if target.role in LEADER_ROLES and target.state == "running":
        raise DbRefused(f"{to} is the running leader already; nothing to do.")
    if target.state not in HEALTHY_REPLICA_STATES:
        raise DbRefused(
            f"{to} is {target.state or 'in no known state'}, not a running replica, so it "
            "cannot be promoted; start it (`systemctl start patroni` on it) or name another "
            "member."
        )
    sync = target.role in SYNC_ROLES
    risk = (
        "" if sync else f" {to} is not a synchronous standby: commits it had not received are lost."
    )
    if leader is not None:
        head = f"Move the leader from {leader.name} (running) to {to} now."
    else:
        head = f"Promote {to}: there is no running leader."
    return DbPlan(
        action="failover",
        summary=head + risk,
        leader=leader.name if leader else None,
        target=to,
        request={"method": "POST", "path": "/failover", "body": {"candidate": to}},
        run_on=_run_order(status, [to, leader.name if leader else ""]),
        destructive=not sync,
    )


def plan_reinit(status: DbStatus, host: str, scope: str) -> DbPlan:
    """Re-create the replica HOST from the leader (its data directory is wiped first)."""
    _need_members(status)
    target = _member(status, host)
    if target.role in LEADER_ROLES:
        raise DbRefused(
            f"{host} is the leader; reinit re-creates a replica from the leader, so switch over "
            f"first (`inkdeploy db switchover`) if {host} must be rebuilt."
        )
    leader = _running_leader(status)
    if leader is None:
        raise DbRefused(
            f"There is no running leader to copy {host} from (members: {_names(status)}); "
            "restore a leader first (`inkdeploy db failover --to HOST`)."
        )
    if host in status.unreachable:
        raise DbRefused(
            f"Patroni on {host} does not answer ({status.unreachable[host]}); start it "
            "(`systemctl start patroni` on the host) and run reinit again."
        )
    return DbPlan(
        action="reinit",
        summary=f"Wipe {host}'s data directory and copy it again from the leader {leader.name}; "
        f"{host} serves no reads until it streams again.",
        leader=leader.name,
        target=host,
        argv=[*PATRONICTL, "reinit", scope, host, "--force", "--wait"],
        run_on=_run_order(status, [leader.name, host]),
        destructive=True,
    )


def plan_pause(status: DbStatus, pause: bool) -> DbPlan:
    """Maintenance mode on (PAUSE) or off: Patroni stops (or resumes) acting on failures."""
    _need_members(status)
    leader = _running_leader(status)
    action = "pause" if pause else "resume"
    if status.paused == pause:
        state = "paused" if pause else "not paused"
        return DbPlan(action, f"The cluster is {state} already; nothing to do.",
                      leader.name if leader else None)  # fmt: skip
    summary = (
        "Pause the cluster: Patroni keeps the leader lock but fails nothing over and restarts "
        "nothing until `inkdeploy db resume`."
        if pause
        else "Resume the cluster: Patroni manages PostgreSQL again (automatic failover on)."
    )
    return DbPlan(
        action=action,
        summary=summary,
        leader=leader.name if leader else None,
        # patronictl's way: resume removes the key rather than setting it false
        request={"method": "PATCH", "path": "/config", "body": {"pause": True if pause else None}},
        run_on=_run_order(status, [leader.name if leader else ""]),
    )


def reached(plan: DbPlan, status: DbStatus) -> bool:
    """Whether STATUS shows what PLAN set out to do."""
    if plan.action in ("switchover", "failover"):
        return any(
            m.name == plan.target and m.role in LEADER_ROLES and m.state == "running"
            for m in status.members
        )
    if plan.action == "reinit":
        leader = _running_leader(status)
        return leader is not None and any(
            m.name == plan.target
            and m.state in HEALTHY_REPLICA_STATES
            and m.role not in LEADER_ROLES
            and m.timeline == leader.timeline
            and m.lag_bytes is not None
            for m in status.members
        )
    if plan.action in ("pause", "resume"):
        return status.paused == (plan.action == "pause")
    return False


def old_leader_back(plan: DbPlan, status: DbStatus) -> bool:
    """After a switchover: the old leader streams from the new one again."""
    return any(
        m.name == plan.leader and m.role not in LEADER_ROLES
        and m.state in HEALTHY_REPLICA_STATES
        for m in status.members
    )  # fmt: skip
