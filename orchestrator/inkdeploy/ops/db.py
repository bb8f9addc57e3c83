"""`inkdeploy db status`: the PostgreSQL cluster as Patroni's members see it.

Every host of group db is asked GET /cluster and GET /config at once (preflight's probes, 2 s
per connect and read); the leader's own view is shown when it answered, else the first answer.
Hosts that did not answer are named, never waited for twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.ops import without_force
from inkdeploy.preflight import (
    LEADER_ROLES,
    PATRONI_READS,
    SYNC_ROLES,
    Observation,
    cluster_members,
    evaluate_patroni,
    format_bytes,
    hostvar,
    patroni_tasks,
    reference_view,
    run_probes,
    sync_mode_of,
    truthy,
)


@dataclass(frozen=True)
class Member:
    name: str
    host: str  # the address Patroni publishes for PostgreSQL
    role: str  # leader | replica | sync_standby | ...
    state: str  # running | streaming | stopped | starting | ...
    timeline: int | None
    lag_bytes: int | None  # None for the leader, or when Patroni cannot tell ("unknown")
    nofailover: bool = False  # tagged: never promoted
    # seconds behind: 0 when it has replayed all it received and no byte lag, else the age of
    # the last transaction it replayed (postgres_exporter's rule); None: not known
    lag_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class DbStatus:
    members: list[Member] = field(default_factory=list)
    seen_by: str | None = None  # the db host whose view is shown
    leader: str | None = None
    sync_standbys: list[str] = field(default_factory=list)
    synchronous_mode: bool = False
    paused: bool = False  # maintenance mode: Patroni fails nothing over
    answered: dict[str, float] = field(default_factory=dict)  # host -> seconds
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> why
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leader": self.leader,
            "sync_standbys": self.sync_standbys,
            "synchronous_mode": self.synchronous_mode,
            "paused": self.paused,
            "seen_by": self.seen_by,
            "members": [m.to_dict() for m in self.members],
            "answered": {h: round(s, 3) for h, s in self.answered.items()},
            "unreachable": self.unreachable,
            "problems": self.problems,
        }


def summarize(
    clusters: list[Observation],
    configs: list[Observation],
    sync_mode_inventory: bool,
    selves: list[Observation] | None = None,
    now: float | None = None,
) -> DbStatus:
    """What the observations say (pure): members, leader, sync standbys, lag, problems.
    SELVES: each member's GET /patroni, for the lag in seconds as of NOW (epoch seconds)."""
    check = evaluate_patroni(clusters, configs, sync_mode_inventory)
    status = DbStatus(
        answered={o.host: o.seconds for o in clusters if o.error is None},
        unreachable={o.host: str(o.error) for o in clusters if o.error is not None},
        # preflight's sentences end with "or pass --force" (a rollout's option): not here
        problems=[without_force(p) for p in check.problems],
    )
    views = [(o.host, cluster_members(o.data)) for o in clusters if o.error is None]
    if not views:
        return status
    status.seen_by, members = reference_view(views)
    own = {o.host: o.data for o in selves or [] if o.error is None and isinstance(o.data, dict)}
    status.members = [
        _with_lag_seconds(_member(m), own.get(str(m.get("name"))), now) for m in members
    ]
    status.leader = next((m.name for m in status.members if m.role in LEADER_ROLES), None)
    status.sync_standbys = [m.name for m in status.members if m.role in SYNC_ROLES]
    status.synchronous_mode = sync_mode_of(configs, sync_mode_inventory)[0]
    status.problems += _not_streaming(status, own.get(status.leader or ""))
    status.paused = any(
        isinstance(o.data, dict) and truthy(o.data.get("pause"))
        for o in clusters
        if o.error is None
    )
    return status


def _member(m: dict[str, Any]) -> Member:
    lag = m.get("lag")
    timeline = m.get("timeline")
    return Member(
        name=str(m.get("name")),
        host=str(m.get("host", "")),
        role=str(m.get("role", "")),
        state=str(m.get("state", "")),
        timeline=timeline if isinstance(timeline, int) else None,
        lag_bytes=lag if isinstance(lag, int) and not isinstance(lag, bool) else None,
        nofailover=truthy((m.get("tags") or {}).get("nofailover")),
    )


def _not_streaming(status: DbStatus, leader_own: dict[str, Any] | None) -> list[str]:
    """Replicas Patroni calls running that the leader's pg_stat_replication (its GET /patroni)
    does not list as streaming: a wiped or stuck replica looks healthy in /cluster alone."""
    if not status.leader or not isinstance(leader_own, dict):
        return []
    streaming = {
        str(r.get("application_name"))
        for r in leader_own.get("replication") or []
        if isinstance(r, dict) and r.get("state") == "streaming"
    }
    return [
        f"Patroni calls replica {m.name} {m.state}, but the leader {status.leader} lists no WAL "
        f"stream to it (pg_stat_replication); if that lasts more than a minute, "
        f"`inkdeploy db reinit {m.name}`."
        for m in status.members
        if m.role not in LEADER_ROLES
        and m.state in ("running", "streaming")
        and m.name not in streaming
    ]


def _with_lag_seconds(member: Member, own: dict[str, Any] | None, now: float | None) -> Member:
    """MEMBER with lag_seconds from its own GET /patroni (OWN), as of NOW."""
    if member.role in LEADER_ROLES or not own:
        return member
    xlog = own.get("xlog") if isinstance(own.get("xlog"), dict) else {}
    received, replayed = xlog.get("received_location"), xlog.get("replayed_location")
    if member.lag_bytes == 0 and received is not None and received == replayed:
        return replace(member, lag_seconds=0.0)
    stamp = xlog.get("replayed_timestamp")
    if not isinstance(stamp, str) or not stamp:
        return member
    try:
        when = datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return member
    seconds = max(0.0, (time.time() if now is None else now) - when)
    return replace(member, lag_seconds=round(seconds, 1))


def db_status(env: Environment, timeout_s: float = 2.0) -> DbStatus:
    """Probe every db host's Patroni (read-only, in parallel) and summarize."""
    # GET /patroni: each member's own WAL positions and replay time, for the lag in seconds
    reads = (*PATRONI_READS, ("patroni_self", "/patroni"))
    seen = run_probes(patroni_tasks(env, timeout_s, reads), timeout_s)
    db = env.groups.get("db", [])
    sync_inventory = bool(db) and truthy(hostvar(env, db[0], "patroni_synchronous_mode"))
    return summarize(
        [o for kind, o in seen if kind == "patroni"],
        [o for kind, o in seen if kind == "patroni_config"],
        sync_inventory,
        [o for kind, o in seen if kind == "patroni_self"],
    )


def describe_lag(member: Member) -> str:
    if member.role in LEADER_ROLES:
        return "-"
    text = format_bytes(member.lag_bytes) if member.lag_bytes is not None else "unknown"
    if member.lag_seconds is not None:
        text += f", {member.lag_seconds:g} s"
    return text
