"""`inkdeploy drain HOST` and `inkdeploy undrain HOST`: take an app host out of every load
balancer and say when it is safe to work on it; give it traffic back once it is healthy and runs
the release the fleet serves.

Drain works with the host down (it only talks to the load balancers): that is when it is used.
Both take the deploy lock for the change, so they never cross a rollout, and leave a line in the
release history. A rollout or rollback started while a host is drained leaves it drained
(plan.left_out). The decisions (which weights, may it go back) are pure functions here; the
side effects go through the SSH fast path, or lb-weights.yml where that cannot serve.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.deploy import Session
from inkdeploy.errors import InkdeployError
from inkdeploy.fleet import SLOTS, Fleet
from inkdeploy.inventory import ConfigError
from inkdeploy.ops.held import held
from inkdeploy.remote import RemoteError
from inkdeploy.strategies.common import DEFAULT_WEIGHT


class DrainRefused(ConfigError):
    """The host cannot be drained or undrained as asked; nothing was changed."""


@dataclass
class DrainResult:
    host: str
    action: str  # drain | undrain
    changed: bool
    weights: dict[str, int]
    load_balancers: list[str]
    message: str
    dry_run: bool = False
    seconds: float = 0.0
    # drain: seconds until no load balancer had a connection open to the host (None: not seen)
    idle_after_s: float | None = None
    # drain: load balancer -> connections still open to the host when the wait ended
    open_connections: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_host(fleet: Fleet, host: str) -> None:
    if host not in fleet.hosts:
        raise DrainRefused(
            f"{host} is not an app host of this inventory ({', '.join(fleet.hosts)}); "
            "name one of those."
        )


def drain_weights(fleet: Fleet, host: str) -> dict[str, int]:
    """Weights that take HOST out of every load balancer ({} when it is drained already)."""
    check_host(fleet, host)
    others = [h for h in fleet.hosts if h != host and any(fleet.slot(h, s).serving for s in SLOTS)]
    if not others:
        raise DrainRefused(
            f"No other app host serves, so draining {host} would leave the site answering 502; "
            "bring another host back first (`inkdeploy status`)."
        )
    if host in fleet.drained:
        return {}
    return {f"{host}:{s}": 0 for s in SLOTS}


def undrain_weights(fleet: Fleet, host: str) -> dict[str, int]:
    """Weights that give HOST its share back on the slot running the release the fleet serves
    ({} when it has traffic already); DrainRefused when it is not ready for traffic."""
    check_host(fleet, host)
    if host not in fleet.idle:
        return {}
    if host in fleet.unreachable:
        raise DrainRefused(f"{host} does not answer; it stays drained until it is back up.")
    current = fleet.current_version
    ready = [
        s
        for s in SLOTS
        if fleet.slot(host, s).version == current
        and fleet.slot(host, s).active
        and fleet.slot(host, s).healthy
    ]
    if not ready:
        running = {
            s: fleet.slot(host, s).version
            for s in SLOTS
            if fleet.slot(host, s).active and fleet.slot(host, s).version
        }
        what = ", ".join(f"{v} in {s}" for s, v in running.items()) or "nothing healthy"
        raise DrainRefused(
            f"{host} runs {what} but the fleet serves {current}, healthy; it stays drained. "
            f"Put {current} on it (playbooks/app.yml --limit {host} installs the recorded live "
            "release) and undrain again."
        )
    weight = max(
        (fleet.slot(h, s).weight for h in fleet.hosts for s in SLOTS if h != host),
        default=0,
    )
    return {f"{host}:{s}": (weight or DEFAULT_WEIGHT) if s == ready[0] else 0 for s in SLOTS}


def _apply(session: Session, weights: dict[str, int]) -> None:
    fast = session.fast
    try:
        if fast is not None and fast.set_weights(weights) is not None:
            return
    except RemoteError as exc:
        if exc.refused or exc.unreachable:
            raise InkdeployError(f"The load balancer refused the weights: {exc}.") from None
    result = session.runner.run("lb-weights.yml", {"nginx_lb_slot_weights": weights})
    if not result.ok:
        raise InkdeployError(f"lb-weights.yml failed: {result.first_failure()}.")


def open_connections(session: Session, fleet: Fleet, host: str) -> dict[str, int] | None:
    """Load balancer -> TCP connections established to HOST's slot ports (requests in flight:
    nginx keeps no idle upstream connection to a server marked down). None: cannot see."""
    fast = session.fast
    if fast is None or not fast.remote.usable(list(fleet.lb_hosts)):
        return None
    address = fleet.addresses.get(host, host)
    ports = {str(p) for p in session.env.slot_ports(host).values()}
    argv = ["ss", "-Htn", "state", "established", "dst", address]
    replies = fast.remote.commands({lb: argv for lb in fleet.lb_hosts}, timeout_s=10)
    counts = {}
    for lb, reply in replies.items():
        if reply.rc != 0:
            return None
        counts[lb] = sum(
            1
            for line in reply.stdout.splitlines()
            if line.split() and line.split()[-1].rsplit(":", 1)[-1] in ports
        )
    return counts


def _change(
    inventory: Path,
    host: str,
    action: str,
    dry_run: bool,
    message: str,
    wait_s: float,
) -> DrainResult:
    began = time.monotonic()
    session = Session.open(inventory)
    if host not in session.env.app_hosts:  # before the lock: a typo leaves no trace
        raise DrainRefused(
            f"{host} is not an app host of this inventory "
            f"({', '.join(session.env.app_hosts)}); name one of those."
        )
    decide = drain_weights if action == "drain" else undrain_weights
    if dry_run:
        fleet = session.read_fleet(tolerate_unreachable=True)
        weights = decide(fleet, host)
        return DrainResult(host, action, bool(weights), weights, list(fleet.lb_hosts),
                           _plan_message(host, action, weights), dry_run=True)  # fmt: skip
    with held(session.env, action, message or f"{action} {host}", host, session=session):
        # read under the lock: nothing moves between reading and changing
        fleet = session.read_fleet(tolerate_unreachable=True)
        weights = decide(fleet, host)
        # a drain always leaves its mark in the history (plans leave the host out), even of a
        # host that had no weight already
        changed = bool(weights) or (action == "undrain" and host in fleet.drain_marks)
        result = DrainResult(host, action, changed, weights, list(fleet.lb_hosts), "")
        if weights:
            _apply(session, weights)
        if action == "drain":
            _wait_idle(session, fleet, host, wait_s, result)
        result.message = _done_message(host, action, result)
    result.seconds = round(time.monotonic() - began, 2)
    return result


def _wait_idle(
    session: Session, fleet: Fleet, host: str, wait_s: float, result: DrainResult
) -> None:
    began = time.monotonic()
    while True:
        counts = open_connections(session, fleet, host)
        if counts is None:
            return
        result.open_connections = counts
        if not any(counts.values()):
            result.idle_after_s = round(time.monotonic() - began, 2)
            return
        if time.monotonic() - began >= wait_s:
            return
        time.sleep(0.25)


def _plan_message(host: str, action: str, weights: dict[str, int]) -> str:
    if not weights:
        return f"{host} is {'drained' if action == 'drain' else 'not drained'} already."
    shown = ", ".join(f"{k}={v}" for k, v in sorted(weights.items()))
    return f"Would set {shown} on every load balancer."


def _done_message(host: str, action: str, result: DrainResult) -> str:
    if action == "undrain":
        if not result.changed:
            return f"{host} was not drained; nothing changed."
        return f"{host} serves again ({', '.join(f'{k}={v}' for k, v in result.weights.items())})."
    head = f"{host} is drained" + ("" if result.changed else " (it was already)")
    if result.idle_after_s is not None:
        return (
            f"{head}: no load balancer has a connection open to it "
            f"({result.idle_after_s:.1f} s after the switch); safe to work on it."
        )
    if result.open_connections:
        still = ", ".join(f"{lb}: {n}" for lb, n in result.open_connections.items() if n)
        return (
            f"{head}, but connections were still open when the wait ended ({still}); requests "
            "to a host that does not answer end at nginx's proxy timeouts."
        )
    return f"{head}; in-flight requests could not be watched (no fast path to the LBs)."


def drain(
    inventory: Path, host: str, *, dry_run: bool = False, message: str = "", wait_s: float = 60
) -> DrainResult:
    return _change(inventory, host, "drain", dry_run, message, wait_s)


def undrain(inventory: Path, host: str, *, dry_run: bool = False, message: str = "") -> DrainResult:
    return _change(inventory, host, "undrain", dry_run, message, 0)
