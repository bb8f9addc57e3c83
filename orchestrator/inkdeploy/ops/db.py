"""`inkdeploy db status`: the PostgreSQL cluster as Patroni's members see it.

Every host of group db is asked GET /cluster and GET /config at once (preflight's probes, 2 s
per connect and read); the leader's own view is shown when it answered, else the first answer.
Hosts that did not answer are named, never waited for twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.ops import without_force
from inkdeploy.preflight import (
    LEADER_ROLES,
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
    clusters: list[Observation], configs: list[Observation], sync_mode_inventory: bool
) -> DbStatus:
    """What the observations say (pure): members, leader, sync standbys, problems."""
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
    status.members = [_member(m) for m in members]
    status.leader = next((m.name for m in status.members if m.role in LEADER_ROLES), None)
    status.sync_standbys = [m.name for m in status.members if m.role in SYNC_ROLES]
    status.synchronous_mode = sync_mode_of(configs, sync_mode_inventory)[0]
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


def db_status(env: Environment, timeout_s: float = 2.0) -> DbStatus:
    """Probe every db host's Patroni (read-only, in parallel) and summarize."""
    seen = run_probes(patroni_tasks(env, timeout_s), timeout_s)
    db = env.groups.get("db", [])
    sync_inventory = bool(db) and truthy(hostvar(env, db[0], "patroni_synchronous_mode"))
    return summarize(
        [o for kind, o in seen if kind == "patroni"],
        [o for kind, o in seen if kind == "patroni_config"],
        sync_inventory,
    )


def describe_lag(member: Member) -> str:
    if member.role in LEADER_ROLES:
        return "-"
    return format_bytes(member.lag_bytes) if member.lag_bytes is not None else "unknown"
