"""etcd's health for `inkdeploy status` and `inkdeploy db status`: Patroni keeps its leader key
in etcd, so an etcd without quorum means no failover and, after the ttl, a leader that demotes
itself.

Every host of group etcd is asked at once (read-only, 2 s each): GET /health (etcd's own verdict:
it has a leader and can serve a linearizable read) and POST /v3/maintenance/status (its member
id, the leader's id and the raft term, through the gRPC gateway). ``summarize`` is pure.

etcd serves clients over https only (roles/etcd), with certificates from the internal CA the
etcd role keeps on the controller: ``etcd_pki_dir`` when the inventory sets it, else
``pki/etcd`` next to the inventory (the role's default, ``{{ inventory_dir }}/pki/etcd``). The
probes verify the members' certificates against its ca.crt. Neither call needs a login: etcd
answers both without credentials even with authentication on.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from inkdeploy import pki
from inkdeploy.inventory import Environment
from inkdeploy.preflight import Observation, Task, hostvar, run_probes, truthy

ETCD_CLIENT_PORT = 2379  # roles/etcd: etcd_client_port


@dataclass(frozen=True)
class EtcdMember:
    host: str
    healthy: bool
    reason: str  # why etcd calls itself unhealthy ('' when healthy or not told)
    member_id: str
    leader_id: str
    raft_term: int | None
    version: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class EtcdStatus:
    members: list[EtcdMember] = field(default_factory=list)
    leader: str | None = None  # the host whose member id the answering members name as leader
    answered: dict[str, float] = field(default_factory=dict)  # host -> seconds
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> why
    problems: list[str] = field(default_factory=list)
    size: int = 0  # hosts in group etcd

    @property
    def healthy(self) -> list[str]:
        return [m.host for m in self.members if m.healthy]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems,
            "leader": self.leader,
            "healthy": self.healthy,
            "size": self.size,
            "members": [m.to_dict() for m in self.members],
            "answered": {h: round(s, 3) for h, s in self.answered.items()},
            "unreachable": self.unreachable,
            "problems": self.problems,
        }

    def describe(self) -> str:
        """'etcd: 3 of 3 healthy, leader db2 (raft term 4)'."""
        if not self.size:
            return ""
        terms = {m.raft_term for m in self.members if m.raft_term is not None}
        term = f" (raft term {max(terms)})" if terms else ""
        leader = f", leader {self.leader}" if self.leader else ", no leader"
        return f"etcd: {len(self.healthy)} of {self.size} healthy{leader}{term}"


def summarize(health: list[Observation], states: list[Observation]) -> EtcdStatus:
    """What the probes saw (pure): each member's health and view of the leader, and problems."""
    size = len(health)
    status = EtcdStatus(size=size)
    state_of = {o.host: o for o in states}
    for o in health:
        state = state_of.get(o.host)
        if o.error is not None and (state is None or state.error is not None):
            status.unreachable[o.host] = o.error
            continue
        status.answered[o.host] = max(o.seconds, state.seconds if state else 0.0)
        said = o.data if isinstance(o.data, dict) else {}
        data = state.data if state is not None and isinstance(state.data, dict) else {}
        header = data.get("header") if isinstance(data.get("header"), dict) else {}
        term = data.get("raftTerm", header.get("raft_term"))
        status.members.append(
            EtcdMember(
                host=o.host,
                healthy=o.error is None and truthy(said.get("health")),
                reason=str(said.get("reason") or o.error or ""),
                member_id=str(header.get("member_id") or ""),
                leader_id=str(data.get("leader") or ""),
                raft_term=int(term) if str(term or "").isdigit() else None,
                version=str(data.get("version") or ""),
            )
        )
    by_id = {m.member_id: m.host for m in status.members if m.member_id}
    named = {m.leader_id for m in status.members if m.leader_id and m.leader_id != "0"}
    if len(named) == 1:
        status.leader = by_id.get(next(iter(named)), f"member {next(iter(named))}")
    elif len(named) > 1:
        told = ", ".join(f"{m.host} names {by_id.get(m.leader_id, m.leader_id)}"
                         for m in status.members if m.leader_id)  # fmt: skip
        status.problems.append(
            f"The etcd members name different leaders ({told}): an election in progress or "
            "a partition; check `etcdctl endpoint status --cluster` on a db host."
        )
    quorum = size // 2 + 1
    if size and len(status.healthy) < quorum:
        status.problems.append(
            f"etcd has {len(status.healthy)} healthy member(s) of {size}, fewer than the {quorum} "
            "it needs: Patroni can neither renew nor take the leader key, so the PostgreSQL "
            "leader demotes itself after the ttl; bring etcd members back first."
        )
    for m in status.members:
        if not m.healthy:
            why = f": {m.reason}" if m.reason else ""
            status.problems.append(
                f"etcd on {m.host} answers but calls itself unhealthy{why}; see "
                f"'journalctl -u etcd' on {m.host}."
            )
    return status


def ca_file(env: Environment, host: str) -> Path:
    """The etcd CA certificate on the controller for HOST: etcd_pki_dir/ca.crt when the
    inventory sets it, else pki/etcd/ca.crt next to the inventory."""
    return pki.ca_file(env, hostvar(env, host, "etcd_pki_dir"), "etcd")


def probe_tasks(env: Environment, timeout_s: float) -> list[Task]:
    tasks: list[Task] = []
    contexts: dict[Path, Callable[[], ssl.SSLContext]] = {}
    for host in env.groups.get("etcd", []):
        address = hostvar(env, host, "etcd_address") or env.address(host)
        port = int(hostvar(env, host, "etcd_client_port") or ETCD_CLIENT_PORT)
        ca = ca_file(env, host)
        tls = contexts.setdefault(ca, pki.lazy_context(ca, "etcd", "etcd_pki_dir"))
        base = f"https://{address}:{port}"
        target = f"{address}:{port}"
        tasks.append(("etcd_health", host, target, _health_call(base, tls, timeout_s)))
        tasks.append(("etcd_status", host, target, _status_call(base, tls, timeout_s)))
    return tasks


def _health_call(
    base: str, tls: Callable[[], ssl.SSLContext], timeout_s: float
) -> Callable[[], Any]:
    def call() -> Any:
        # 503 carries the same JSON with health "false" and a reason: an answer, not an error
        response = httpx.get(base + "/health", timeout=timeout_s, verify=tls(), trust_env=False)
        if response.status_code not in (200, 503):
            response.raise_for_status()
        return response.json()

    return call


def _status_call(
    base: str, tls: Callable[[], ssl.SSLContext], timeout_s: float
) -> Callable[[], Any]:
    def call() -> Any:
        response = httpx.post(
            base + "/v3/maintenance/status",
            json={},
            timeout=timeout_s,
            verify=tls(),
            trust_env=False,
        )
        response.raise_for_status()
        return response.json()

    return call


def etcd_status(env: Environment, timeout_s: float = 2.0) -> EtcdStatus:
    seen = run_probes(probe_tasks(env, timeout_s), timeout_s)
    return summarize(
        [o for kind, o in seen if kind == "etcd_health"],
        [o for kind, o in seen if kind == "etcd_status"],
    )
