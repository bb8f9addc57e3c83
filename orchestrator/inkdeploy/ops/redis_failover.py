"""`inkdeploy redis failover`: move the Redis master to a replica through the sentinels, for
planned work on the master's host, without losing a write the old master acknowledged.

Sentinel's own SENTINEL FAILOVER promotes a replica while the old master keeps taking writes
until the sentinels turn it into a replica (about ten seconds later); what it takes meanwhile is
discarded when it resynchronises. So the command, like Redis's FAILOVER command:

1. reads what the sentinels say (`inkdeploy redis status`) and refuses, changing nothing, when
   they disagree, fewer than a majority answer, or no replica is fit to take over
   (``plan_failover``, pure);
2. holds writes on the old master (CLIENT PAUSE WRITE: clients wait, none is refused) and waits
   up to 2 s until the replicas have every write it acknowledged;
3. sends SENTINEL FAILOVER to one sentinel that answered, then asks every sentinel (1 s
   timeouts) until a majority of those that answered name a new master and that server's ROLE
   says master;
4. disconnects the clients of the old master (they ask the sentinels again and find the new one)
   and lifts the hold; then watches, for a few seconds more, the old master come back as a
   replica of the new one, and says whether it has.

It holds the fleet deploy lock while it works when the inventory has one (state.lock.lock_hosts:
group deploy_lock, rollout_lock_host or the first load balancer), and leaves a "redis-failover"
record in the release history.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import ConfigError, Environment, load_environment
from inkdeploy.ops.held import held
from inkdeploy.ops.redis import RedisStatus, redis_status
from inkdeploy.preflight import (
    ask_resp,
    inventory_secret,
    redis_tls,
    resp_client,
    run_probes,
    sentinel_tasks,
)
from inkdeploy.state.lock import lock_hosts

REDIS_PORT = 6379  # roles/redis: redis_port
BAD_REPLICA_FLAGS = frozenset({"s_down", "o_down", "disconnected"})
BUSY_MASTER_FLAGS = frozenset({"failover_in_progress", "promoted"})
PROBE_TIMEOUT_S = 1.0  # per connect and read while polling
CATCH_UP_S = 2.0  # how long the replicas get to confirm the old master's last writes
OLD_MASTER_WAIT_S = 10.0  # after the switch: how long to watch the old master rejoin
POLL_S = 0.25
NO_LOCK = "no deploy lock in this inventory"
NO_SUCH_MASTER = "No such master with that name"  # Sentinel's error for an unknown name


class FailoverRefused(ConfigError):
    """The failover cannot start as things are; nothing was changed."""


@dataclass(frozen=True)
class FailoverPlan:
    master_name: str
    master: str  # ip:port the sentinels agree on
    master_host: str | None
    candidates: list[str]  # replicas fit to take over, ip:port
    candidate_hosts: list[str | None]
    sentinels: list[str]  # the sentinels that name the master, in inventory order
    answered: int  # sentinels that answered
    needed: int  # sentinels that must name the new master: a majority of those that answered


@dataclass
class FailoverResult:
    master_name: str
    old_master: str
    old_master_host: str | None
    candidates: list[str]
    lock: str  # "held" | NO_LOCK
    message: str = ""
    dry_run: bool = False
    new_master: str | None = None
    new_master_host: str | None = None
    sentinel: str | None = None  # the sentinel that was sent SENTINEL FAILOVER
    # seconds from SENTINEL FAILOVER until a majority named the new master and it said master
    agreed_after_s: float | None = None
    sentinels: dict[str, str | None] = field(default_factory=dict)  # each one's last answer
    # writes held on the old master (CLIENT PAUSE WRITE) until its clients were sent away
    writes_held_s: float | None = None
    replicas_caught_up: bool | None = None
    old_master_replicates: bool | None = None
    old_master_role: str = ""  # what ROLE on the old master said last
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- deciding (pure) ---------------------------------------------------------------------------


def majority(count: int) -> int:
    return count // 2 + 1


def _label(host: str | None, address: str) -> str:
    return f"{host} ({address})" if host else address


def plan_failover(status: RedisStatus, sentinel_hosts: list[str]) -> FailoverPlan:
    """May a failover start? The plan, or FailoverRefused saying what is wrong and what to do."""
    name = status.master_name
    if not sentinel_hosts:
        raise FailoverRefused(
            "The inventory has no host in group sentinel, so nothing can move the Redis master; "
            "name the Sentinel hosts in group sentinel."
        )
    named = {h: a for h, a in status.said.items() if a}
    silent = dict(status.unreachable)
    for host in (h for h, a in status.said.items() if not a):
        silent[host] = f'monitors no master named "{name}"'
    quiet = "; ".join(f"{h}: {why}" for h, why in silent.items())
    needed = majority(len(sentinel_hosts))
    if len(set(named.values())) > 1:
        said = ", ".join(f"{h} says {a}" for h, a in named.items())
        raise FailoverRefused(
            f'The sentinels disagree on the Redis master of "{name}" ({said}): a failover in '
            "progress or a split; wait until `inkdeploy redis status` shows one master, then "
            "run the failover again."
        )
    # SENTINEL MASTER answers an error for a name it does not monitor, so the status names
    # those sentinels unreachable
    unknown = [h for h, a in status.said.items() if not a]
    unknown += [h for h, why in status.unreachable.items() if NO_SUCH_MASTER in why]
    if not named and unknown and len(unknown) == len(status.said) + len(status.unreachable):
        raise FailoverRefused(
            f"The sentinels ({', '.join(unknown)}) answer but monitor no master named "
            f'"{name}"; set redis_sentinel_master_name in the inventory to the name their '
            'sentinel.conf monitors ("sentinel monitor NAME ...").'
        )
    if len(named) < needed:
        raise FailoverRefused(
            f"Only {len(named)} of {len(sentinel_hosts)} sentinels named a Redis master for "
            f'"{name}" ({quiet}), {needed} needed to agree on a new one; bring the sentinels '
            "back first (`inkdeploy redis status`)."
        )
    master = next(iter(named.values()))
    busy = BUSY_MASTER_FLAGS & set(status.master_flags)
    if busy:
        raise FailoverRefused(
            f'A failover of "{name}" is under way already (the sentinels flag {master} '
            f"{','.join(status.master_flags)}); wait until `inkdeploy redis status` shows it done."
        )
    fit = [r for r in status.replicas if r.link == "ok" and not BAD_REPLICA_FLAGS & set(r.flags)]
    if not fit:
        seen = "; ".join(
            f"{_label(r.host, r.address)}: flags {','.join(r.flags) or '-'}, link {r.link}"
            for r in status.replicas
        )
        raise FailoverRefused(
            f"No replica of the Redis master {_label(status.master_host, master)} could take "
            f"over ({seen or 'the sentinels know no replica'}); get one replicating "
            "('systemctl status redis-server' on it, `inkdeploy redis status`) and try again."
        )
    return FailoverPlan(
        master_name=name,
        master=master,
        master_host=status.master_host,
        candidates=[r.address for r in fit],
        candidate_hosts=[r.host for r in fit],
        sentinels=[h for h in sentinel_hosts if named.get(h) == master],
        answered=len(status.said),
        needed=majority(len(status.said)),
    )


def agreed_master(views: dict[str, str | None], old: str, needed: int) -> str | None:
    """The new master, once NEEDED sentinels name the same address other than OLD."""
    votes = Counter(a for a in views.values() if a and a != old)
    if not votes:
        return None
    address, count = votes.most_common(1)[0]
    return address if count >= needed else None


def replicates_from(role: Any, master: str) -> bool:
    """ROLE's answer says: a replica of MASTER (ip:port) with its link up."""
    return (
        isinstance(role, list)
        and len(role) >= 4
        and role[0] == "slave"
        and f"{role[1]}:{role[2]}" == master
        and role[3] == "connected"
    )


def describe_role(role: Any) -> str:
    if isinstance(role, list) and role and role[0] == "slave" and len(role) >= 4:
        return f"replica of {role[1]}:{role[2]} ({role[3]})"
    if isinstance(role, list) and role:
        return str(role[0])
    return str(role)


def plan_message(plan: FailoverPlan, lock: str | None) -> str:
    candidates = ", ".join(
        _label(h, a) for h, a in zip(plan.candidate_hosts, plan.candidates, strict=True)
    )
    where = f"holding the deploy lock on {lock}" if lock else NO_LOCK
    return (
        f'Would move the Redis master of "{plan.master_name}" away from '
        f"{_label(plan.master_host, plan.master)}: hold writes on it, send SENTINEL FAILOVER to "
        f"sentinel {plan.sentinels[0]}, and wait until {plan.needed} of the {plan.answered} "
        f"sentinels that answered name one of: {candidates} ({where}). Nothing was changed."
    )


# --- doing -------------------------------------------------------------------------------------


def redis_failover(
    inventory: Path, *, dry_run: bool = False, message: str = "", wait_s: float = 30.0
) -> FailoverResult:
    began = time.monotonic()
    env = load_environment(inventory, require_app=False)
    plan = plan_failover(redis_status(env), env.groups.get("sentinel", []))
    lock_host = ", ".join(lock_hosts(env)) or None
    if dry_run:
        return FailoverResult(
            plan.master_name, plan.master, plan.master_host, plan.candidates,
            lock=f"would be taken on {lock_host}" if lock_host else NO_LOCK,
            message=plan_message(plan, lock_host), dry_run=True,
            seconds=round(time.monotonic() - began, 2),
        )  # fmt: skip
    reason = message or f"redis failover away from {_label(plan.master_host, plan.master)}"
    with held(env, "redis-failover", reason, plan.master_host or plan.master) as lock:
        if lock.session is not None:
            # decided again under the lock: nothing moved between deciding and changing
            plan = plan_failover(redis_status(env), env.groups.get("sentinel", []))
        result = _failover(env, plan, wait_s, "held" if lock.session else NO_LOCK)
        lock.record["new_master"] = result.new_master_host or result.new_master
    result.seconds = round(time.monotonic() - began, 2)
    return result


@dataclass
class _Redis:
    """One Redis server, asked with the inventory's redis_password (as the roles know it), over
    TLS when the inventory turns redis_tls on."""

    password: str | None
    timeout_s: float = PROBE_TIMEOUT_S
    tls: Callable[[], ssl.SSLContext] | None = None

    def ask(self, address: str, *command: str) -> Any:
        ip, port = address.rsplit(":", 1)
        return ask_resp(ip, int(port), self.password, [command], self.timeout_s, self.tls)[0]

    def try_ask(self, address: str, *command: str) -> Any:
        """The reply, or the exception (an answer for the record, not a crash)."""
        try:
            return self.ask(address, *command)
        except Exception as exc:  # a dead server is an observation here, not a crash
            return exc


def redis_password(env: Environment) -> str | None:
    hosts = env.groups.get("redis", []) or env.groups.get("sentinel", [])
    for host in hosts[:1]:
        for name in ("redis_password", "redis_sentinel_redis_password"):
            value, _source = inventory_secret(env, host, name)
            if value:
                return value
    return None


def _failover(env: Environment, plan: FailoverPlan, wait_s: float, lock: str) -> FailoverResult:
    result = FailoverResult(
        plan.master_name, plan.master, plan.master_host, plan.candidates, lock=lock
    )
    hosts = env.groups.get("redis", []) or env.groups.get("sentinel", [])
    by_address = {env.address(h): h for h in hosts}
    server = _Redis(redis_password(env), tls=redis_tls(env, hosts[0]) if hosts else None)
    # a safety net should this process die: lifted explicitly below
    pause_s = wait_s + 10
    paused = not isinstance(
        server.try_ask(plan.master, "CLIENT", "PAUSE", str(int(pause_s * 1000)), "WRITE"),
        Exception,
    )
    paused_at = time.monotonic()
    try:
        if paused:
            result.replicas_caught_up = _catch_up(server, plan)
        result.sentinel = _send_failover(env, plan)
        sent_at = time.monotonic()
        result.new_master, result.sentinels = _wait_new_master(env, plan, server, wait_s)
        result.agreed_after_s = round(time.monotonic() - sent_at, 2)
        result.new_master_host = by_address.get(result.new_master.rsplit(":", 1)[0])
        if paused:
            _hand_over(server, plan.master, result.new_master)
            paused = False
            result.writes_held_s = round(time.monotonic() - paused_at, 2)
        _watch_old_master(server, result)
    finally:
        if paused:  # the failover did not happen: the old master serves again
            server.try_ask(plan.master, "CLIENT", "UNPAUSE")
    result.message = _done_message(result)
    return result


def _hand_over(server: _Redis, old: str, new: str) -> None:
    """The old master, still holding writes, turns itself into a replica of the new one (as
    Redis's FAILOVER command does; the sentinels would only after about ten seconds, and the
    hold stalls their link to it meanwhile), its clients are sent away to ask the sentinels
    again, and the hold is lifted: a write it held now meets a replica and is refused
    (READONLY), never acknowledged."""
    ip, port = new.rsplit(":", 1)
    server.try_ask(old, "REPLICAOF", ip, port)
    server.try_ask(old, "CONFIG", "REWRITE")  # as the sentinels do: a restart keeps replicaof
    server.try_ask(old, "CLIENT", "KILL", "TYPE", "normal")
    server.try_ask(old, "CLIENT", "UNPAUSE")


def _catch_up(server: _Redis, plan: FailoverPlan) -> bool:
    """Wait until every candidate has processed the old master's replication stream up to
    where it was when writes were held (ROLE: the offset each side is at)."""
    master_role = server.try_ask(plan.master, "ROLE")
    if not isinstance(master_role, list) or len(master_role) < 2:
        return False
    target = int(master_role[1])
    deadline = time.monotonic() + CATCH_UP_S
    while True:
        offsets = [server.try_ask(a, "ROLE") for a in plan.candidates]
        if all(isinstance(r, list) and len(r) >= 5 and int(r[4]) >= target for r in offsets):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _send_failover(env: Environment, plan: FailoverPlan) -> str:
    """SENTINEL FAILOVER to the first sentinel of the plan that takes it; its name."""
    tasks, _name, _auth = sentinel_tasks(
        env, 2.0, lambda master: [("SENTINEL", "FAILOVER", master)]
    )
    calls: dict[str, Callable[[], Any]] = {host: call for _kind, host, _target, call in tasks}
    errors = []
    for host in plan.sentinels:
        try:
            calls[host]()
            return host
        except resp_client().RedisError as exc:
            if "closed" not in str(exc):
                raise InkdeployError(
                    f'Sentinel {host} refused the failover of "{plan.master_name}": {exc}. '
                    f"The master is still {_label(plan.master_host, plan.master)}; check "
                    "`inkdeploy redis status` and try again."
                ) from None
            errors.append(f"{host}: {exc}")
        except OSError as exc:
            errors.append(f"{host}: {exc or type(exc).__name__}")
    raise InkdeployError(
        f"No sentinel took the failover ({'; '.join(errors)}); nothing was changed, the master "
        f"is still {_label(plan.master_host, plan.master)}."
    )


def _wait_new_master(
    env: Environment, plan: FailoverPlan, server: _Redis, wait_s: float
) -> tuple[str, dict[str, str | None]]:
    tasks, _name, _auth = sentinel_tasks(env, PROBE_TIMEOUT_S)
    deadline = time.monotonic() + wait_s
    views: dict[str, str | None] = {}
    role: Any = None
    while True:
        seen = run_probes(tasks, PROBE_TIMEOUT_S)
        views = {o.host: _address(o.data) if o.error is None else None for _kind, o in seen}
        new = agreed_master(views, plan.master, plan.needed)
        if new is not None:
            role = server.try_ask(new, "ROLE")
            if isinstance(role, list) and role and role[0] == "master":
                return new, views
        if time.monotonic() >= deadline:
            said = ", ".join(f"{h} says {a or 'nothing'}" for h, a in views.items())
            extra = f"; ROLE on {new} says {describe_role(role)}" if new else ""
            raise InkdeployError(
                f"Sentinel took the failover, but after {wait_s:g} s the sentinels do not agree "
                f"on a new master ({said}{extra}); they may still finish it: watch "
                "`inkdeploy redis status`, and pass a longer --wait next time."
            )
        time.sleep(POLL_S)


def _address(data: Any) -> str | None:
    if isinstance(data, list) and len(data) == 2:
        return f"{data[0]}:{data[1]}"
    return None


def _watch_old_master(server: _Redis, result: FailoverResult) -> None:
    new = result.new_master or ""
    deadline = time.monotonic() + OLD_MASTER_WAIT_S
    while True:
        role = server.try_ask(result.old_master, "ROLE")
        result.old_master_role = (
            f"no answer ({role})" if isinstance(role, Exception) else describe_role(role)
        )
        result.old_master_replicates = replicates_from(role, new)
        if result.old_master_replicates or time.monotonic() >= deadline:
            return
        time.sleep(0.5)


def _done_message(result: FailoverResult) -> str:
    old = _label(result.old_master_host, result.old_master)
    new = _label(result.new_master_host, result.new_master or "?")
    agreed = sum(1 for a in result.sentinels.values() if a == result.new_master)
    head = (
        f'The Redis master of "{result.master_name}" moved from {old} to {new}: {agreed} of '
        f"{len(result.sentinels)} sentinels named it {result.agreed_after_s:.1f} s after "
        f"SENTINEL FAILOVER (sent to {result.sentinel})."
    )
    if result.writes_held_s is not None:
        caught = (
            "" if result.replicas_caught_up
            else f" (the replicas had not confirmed all of them within {CATCH_UP_S:g} s)"
        )  # fmt: skip
        writes = (
            f" Writes were held on the old master for {result.writes_held_s:.1f} s{caught}, "
            "until it was a replica of the new one and its clients were sent there."
        )
    else:
        writes = (
            " Writes could not be held on the old master (CLIENT PAUSE failed): what it took "
            "after the switch is lost."
        )
    if result.old_master_replicates:
        tail = f" {old} replicates from {new} (link up)."
    else:
        tail = (
            f" {old} is not a replica of {new} yet (ROLE: {result.old_master_role}); the "
            "sentinels reconfigure it on their own: check `inkdeploy redis status` in a minute."
        )
    lock = " No deploy lock in this inventory." if result.lock == NO_LOCK else ""
    return head + writes + tail + lock


__all__ = [
    "FailoverPlan",
    "FailoverRefused",
    "FailoverResult",
    "agreed_master",
    "plan_failover",
    "redis_failover",
    "replicates_from",
]
