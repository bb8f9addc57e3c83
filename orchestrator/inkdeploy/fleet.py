"""What the fleet runs now: per app host and slot the release, unit state, health and LB weight.

Built from the results of playbooks/rollout/facts.yml (see runner.read_fleet); pure otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

SLOTS = ("blue", "green")
SLOT_PORTS = {"blue": 8001, "green": 8002}
_WEIGHTS_LINE = re.compile(r"^# inkdeploy-weights: (\{.*\})\s*$", re.M)


def other(slot: str) -> str:
    return "green" if slot == "blue" else "blue"


@dataclass(frozen=True)
class Slot:
    host: str
    slot: str
    version: str | None  # the release the slot's link points at, None if never used
    active: bool
    healthy: bool
    weight: int  # LB weight (0 = drained)
    health_version: str | None = None
    health_status: int | None = None

    @property
    def key(self) -> str:
        return f"{self.host}:{self.slot}"

    @property
    def serving(self) -> bool:
        return self.active and self.weight > 0


@dataclass(frozen=True)
class WorkerUnit:
    host: str
    queue: str
    state: str  # systemd ActiveState: active, inactive, failed, activating, ...
    release: str | None  # the release the running worker was started from (None: not running)


@dataclass(frozen=True)
class Fleet:
    app: str
    hosts: tuple[str, ...]  # app hosts, inventory order
    addresses: dict[str, str]
    slots: dict[str, Slot]  # "host:slot" -> Slot
    releases: dict[str, tuple[str, ...]] = field(default_factory=dict)  # host -> installed
    workers: dict[str, str | None] = field(default_factory=dict)  # worker host -> release
    # worker host -> its Celery worker units (one per queue): state and running release
    worker_units: dict[str, tuple[WorkerUnit, ...]] = field(default_factory=dict)
    beat: dict[str, str] = field(default_factory=dict)  # worker host with a beat unit -> state
    workers_silent: tuple[str, ...] = ()  # worker hosts that did not answer
    lb_hosts: tuple[str, ...] = ()
    weights_disagree: tuple[str, ...] = ()  # LB hosts whose weights differ from the first
    lb_weights: dict[str, dict[str, int]] = field(default_factory=dict)  # LB -> its weights
    # app hosts that did not answer; only drained ones are tolerated (Session.read_fleet)
    unreachable: tuple[str, ...] = ()
    # load balancers that did not answer (`inkdeploy status` only: a rollout refuses them)
    lb_unreachable: tuple[str, ...] = ()
    # deploy lock hosts that did not answer (a majority did, or nothing could be read)
    lock_silent: tuple[str, ...] = ()
    # app hosts whose last drain/undrain in the release history was `inkdeploy drain`
    drain_marks: frozenset[str] = frozenset()

    def slot(self, host: str, slot: str) -> Slot:
        return self.slots[f"{host}:{slot}"]

    @property
    def weights(self) -> dict[str, int]:
        return {key: s.weight for key, s in sorted(self.slots.items())}

    def live_slot(self, host: str) -> str | None:
        """The slot of HOST that carries its traffic (the higher weight), None if drained."""
        best = max((self.slot(host, s) for s in SLOTS), key=lambda s: s.weight)
        return best.slot if best.weight > 0 else None

    def live_version(self, host: str) -> str | None:
        slot = self.live_slot(host)
        return self.slot(host, slot).version if slot else None

    @property
    def live_versions(self) -> dict[str, int]:
        """Release -> summed LB weight of the slots serving it."""
        result: dict[str, int] = {}
        for s in self.slots.values():
            if s.weight > 0 and s.version:
                result[s.version] = result.get(s.version, 0) + s.weight
        return result

    @property
    def current_version(self) -> str | None:
        """The release carrying most of the traffic."""
        versions = self.live_versions
        return max(versions, key=lambda v: versions[v]) if versions else None

    def scrape(self) -> dict[str, list[str]]:
        """Slots Prometheus should scrape: every active slot. (A plan asks once per step: the
        answer is worked out once per fleet, each caller gets its own copy.)"""
        cached = self.__dict__.get("_scrape")
        if cached is None:
            cached = {
                host: [s for s in SLOTS if self.slot(host, s).active]
                or [self.live_slot(host) or "blue"]
                for host in self.hosts
            }
            self.__dict__["_scrape"] = cached
        return {host: list(slots) for host, slots in cached.items()}

    def served_by(self, lb: str) -> dict[str, int]:
        """Release -> summed weight of the running slots load balancer LB sends traffic to."""
        result: dict[str, int] = {}
        for key, weight in self.lb_weights.get(lb, {}).items():
            slot = self.slots.get(key)
            if weight > 0 and slot and slot.active and slot.version:
                result[slot.version] = result.get(slot.version, 0) + weight
        return result

    @property
    def idle(self) -> tuple[str, ...]:
        """App hosts that no load balancer sends traffic to."""
        return tuple(
            h
            for h in self.hosts
            if not any(w.get(f"{h}:{s}", 0) for w in self.lb_weights.values() for s in SLOTS)
            and not any(self.slot(h, s).weight for s in SLOTS)
        )

    @property
    def drained(self) -> tuple[str, ...]:
        """Idle app hosts an operator drained (`inkdeploy drain`, in the history) while
        others serve: rollouts and rollbacks leave them as they are. A host a rolling batch or
        a failed rollback left at weight 0 is not drained: a restore gives it traffic back."""
        drained = tuple(h for h in self.idle if h in self.drain_marks)
        return drained if len(drained) < len(self.hosts) else ()

    def without(self, hosts: tuple[str, ...]) -> Fleet:
        """This fleet without HOSTS (the drained ones, for a plan)."""
        if not hosts:
            return self
        keep = tuple(h for h in self.hosts if h not in hosts)
        return replace(
            self,
            hosts=keep,
            addresses={h: a for h, a in self.addresses.items() if h not in hosts},
            slots={k: v for k, v in self.slots.items() if v.host not in hosts},
            releases={h: r for h, r in self.releases.items() if h not in hosts},
            lb_weights={
                lb: {k: w for k, w in weights.items() if k.split(":", 1)[0] not in hosts}
                for lb, weights in self.lb_weights.items()
            },
            unreachable=tuple(h for h in self.unreachable if h not in hosts),
        )

    def installed_everywhere(self, version: str) -> bool:
        return all(version in self.releases.get(host, ()) for host in self.hosts)

    @property
    def queues(self) -> dict[str, tuple[WorkerUnit, ...]]:
        """Queue -> the worker units consuming it, host order (inventory)."""
        found: dict[str, list[WorkerUnit]] = {}
        for units in self.worker_units.values():
            for unit in units:
                found.setdefault(unit.queue, []).append(unit)
        return {q: tuple(units) for q, units in sorted(found.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "current_version": self.current_version,
            "live_versions": self.live_versions,
            "hosts": {
                host: {
                    "address": self.addresses.get(host),
                    "live_slot": self.live_slot(host),
                    "releases": list(self.releases.get(host, ())),
                    "slots": {
                        s: {
                            "version": self.slot(host, s).version,
                            "active": self.slot(host, s).active,
                            "healthy": self.slot(host, s).healthy,
                            "weight": self.slot(host, s).weight,
                        }
                        for s in SLOTS
                    },
                }
                for host in self.hosts
            },
            "workers": self.workers,
            "queues": {q: [u.__dict__ for u in units] for q, units in self.queues.items()},
            "beat": self.beat,
            "workers_silent": list(self.workers_silent),
            "lb_hosts": list(self.lb_hosts),
            "lb_weights": {lb: dict(w) for lb, w in self.lb_weights.items()},
            "weights_disagree": list(self.weights_disagree),
            "lb_unreachable": list(self.lb_unreachable),
            "lock_silent": list(self.lock_silent),
            "drained": list(self.drained),
            "unreachable": list(self.unreachable),
        }


def parse_weights(upstreams_conf: str, app: str) -> dict[str, int]:
    """{"host:slot": weight} for APP from the line nginx_lb writes into upstreams.conf."""
    match = _WEIGHTS_LINE.search(upstreams_conf)
    if not match:
        return {}
    raw: dict[str, int] = json.loads(match.group(1))
    prefix = f"{app}:"
    return {key[len(prefix) :]: int(w) for key, w in raw.items() if key.startswith(prefix)}


def build_fleet(
    app: str,
    app_hosts: list[str],
    addresses: dict[str, str],
    slot_facts: dict[str, dict[str, Any]],
    lb_confs: dict[str, str],
    worker_hosts: list[str] | None = None,
    unreachable: tuple[str, ...] = (),
    drain_marks: frozenset[str] = frozenset(),
) -> Fleet:
    """Combine inkdeploy_slots results per host and upstreams.conf per LB into a Fleet."""
    lb_weights = {lb: parse_weights(text, app) for lb, text in sorted(lb_confs.items())}
    first = next(iter(lb_weights.values()), {})
    disagree = tuple(lb for lb, w in lb_weights.items() if w != first)
    slots: dict[str, Slot] = {}
    releases: dict[str, tuple[str, ...]] = {}
    for host in app_hosts:
        facts = slot_facts.get(host, {})
        releases[host] = tuple(facts.get("releases", ()))
        for name in SLOTS:
            info = facts.get("slots", {}).get(name, {})
            health = info.get("health") or {}
            slots[f"{host}:{name}"] = Slot(
                host=host,
                slot=name,
                version=info.get("version"),
                active=bool(info.get("active")),
                healthy=bool(info.get("healthy")),
                weight=int(first.get(f"{host}:{name}", 0)),
                health_version=health.get("version"),
                health_status=health.get("status"),
            )
    celery = {
        h: slot_facts.get(h, {}).get("slots", {}).get("celery") or {} for h in worker_hosts or []
    }
    workers = {host: info.get("version") for host, info in celery.items()}
    worker_units = {
        host: tuple(
            WorkerUnit(host, str(u.get("queue")), str(u.get("state")), u.get("release"))
            for u in info.get("workers") or []
        )
        for host, info in celery.items()
    }
    beat = {host: str(info["beat"]) for host, info in celery.items() if info.get("beat")}
    return Fleet(
        app=app,
        hosts=tuple(app_hosts),
        addresses=addresses,
        slots=slots,
        releases=releases,
        workers=workers,
        worker_units=worker_units,
        beat=beat,
        lb_hosts=tuple(sorted(lb_confs)),
        weights_disagree=disagree,
        lb_weights=lb_weights,
        unreachable=unreachable,
        drain_marks=drain_marks,
    )


def drain_marks(history: list[dict[str, Any]]) -> frozenset[str]:
    """Hosts whose last successful drain or undrain in HISTORY (oldest first) was a drain."""
    last: dict[str, str] = {}
    for row in history:
        if row.get("kind") in {"drain", "undrain"} and row.get("result") == "succeeded":
            last[str(row.get("host"))] = str(row["kind"])
    return frozenset(h for h, kind in last.items() if kind == "drain")
