"""Pure planning: fleet + policy + version -> the Steps a rollout (or a rollback) will take."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.config import Policy, Strategy
from inkdeploy.errors import PlanError
from inkdeploy.fleet import SLOTS, Fleet, other
from inkdeploy.steps import (
    Celery,
    HttpCheck,
    KeepSlot,
    SetWeights,
    StartSlot,
    Step,
    StopSlot,
    step_from_dict,
)
from inkdeploy.strategies import bluegreen, canary, rolling
from inkdeploy.strategies.common import base_weights, record, scrape_only, weights_for


def new_rollout_id(version: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{version}-{secrets.token_hex(2)}"


@dataclass(frozen=True)
class Plan:
    rollout: str
    kind: str  # "rollout" | "rollback"
    strategy: str
    version: str
    previous: str | None
    steps: list[Step]
    base_weights: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # the LB weights before the rollout ("host:slot" -> weight): the emergency way back
    weights: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        memo: dict[int, Any] = {}  # containers the steps share are copied once (Step.to_dict)
        return {
            "rollout": self.rollout,
            "kind": self.kind,
            "strategy": self.strategy,
            "version": self.version,
            "previous": self.previous,
            "base_weights": self.base_weights,
            "weights": self.weights,
            "notes": self.notes,
            "steps": [s.to_dict(memo) for s in self.steps],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """The plan as to_dict() wrote it (into the journal's rollout_started event)."""
        return cls(
            data["rollout"], data.get("kind", "rollout"), data["strategy"], data["version"],
            data.get("previous"), [step_from_dict(s) for s in data["steps"]],
            data.get("base_weights", {}), data.get("notes", []), data.get("weights", {}),
        )  # fmt: skip


def check_fleet(fleet: Fleet) -> str:
    """The release the fleet serves, or PlanError saying why it is not in a state to roll out."""
    versions = fleet.live_versions
    for lb in fleet.weights_disagree:
        # A reload that failed on one load balancer leaves it behind the others. The first
        # weights step of the next plan sets every LB, so that repairs it, unless it still
        # sends traffic to another release (a rollout half done there).
        other = sorted(set(fleet.served_by(lb)) - set(versions))
        if other:
            raise PlanError(
                f"Load balancer {lb} still sends traffic to {', '.join(other)} while the first "
                f"serves {', '.join(sorted(versions)) or 'nothing'}; finish the rollout with "
                "`inkdeploy rollout --resume` or `inkdeploy rollback` first."
            )
    if not versions:
        raise PlanError(
            "No app slot carries traffic in the load balancer; deploy the first release with "
            "playbooks/site.yml before rolling out."
        )
    if len(versions) > 1:
        split = ", ".join(f"{v} (weight {w})" for v, w in sorted(versions.items()))
        raise PlanError(
            f"Traffic is split between releases ({split}), as an interrupted rollout leaves it; "
            "finish it with `inkdeploy rollout --resume` or `inkdeploy rollback` first."
        )
    unhealthy = [
        s.key for s in fleet.slots.values() if s.weight > 0 and not (s.active and s.healthy)
    ]
    if unhealthy:
        raise PlanError(
            f"Slots in the load balancer are not healthy ({', '.join(sorted(unhealthy))}); "
            "fix them (`inkdeploy status`) before rolling out."
        )
    return next(iter(versions))


def make_plan(
    fleet: Fleet,
    policy: Policy,
    version: str,
    strategy: Strategy,
    workers: tuple[str, ...],
    rollout: str | None = None,
) -> Plan:
    full = fleet
    fleet = fleet.without(full.drained)
    previous = check_fleet(fleet)
    if previous == version:
        raise PlanError(
            f"{version} is already live on every app host; nothing to roll out "
            "(`inkdeploy status` shows the fleet)."
        )
    if strategy == "rolling":
        steps = rolling.build(fleet, policy, version, workers)
    elif strategy == "blue-green":
        steps = bluegreen.build(fleet, policy, version, workers)
    else:
        steps = canary.build(fleet, policy, version, previous, workers)
    notes = drained_notes(full)
    if fleet.weights_disagree:
        notes.append(
            f"Load balancer(s) {', '.join(fleet.weights_disagree)} serve other weights than "
            f"{fleet.lb_hosts[0]} (a reload that failed there); the first weights step sets "
            "every load balancer."
        )
    if policy.migrate:
        notes.append(
            "Migrations run once before traffic moves and are not undone by a rollback: "
            "they must work with the previous release too."
        )
    return Plan(
        rollout or new_rollout_id(version),
        "rollout",
        strategy,
        version,
        previous,
        steps,
        base_weights(fleet),
        notes,
        full.weights,
    )


def drained_notes(fleet: Fleet) -> list[str]:
    if not fleet.drained:
        return []
    hosts = ", ".join(fleet.drained)
    down = [h for h in fleet.drained if h in fleet.unreachable]
    return [
        f"Drained and left as they are (no release installed, no traffic): {hosts}"
        + (f" ({', '.join(down)} did not answer)" if down else "")
        + "; `inkdeploy undrain HOST` checks the release it runs before it gives traffic back."
    ]


def emergency_weights(plan: Plan, failed_step: int | None) -> SetWeights | None:
    """The one reload that puts traffic back where it was, when that alone is safe: the slots
    that served before still run the old release (canary and blue-green start the new release
    in idle slots and stop old slots only at the very end; rolling replaces live slots)."""
    if plan.kind != "rollout" or plan.strategy == "rolling" or not plan.weights:
        return None
    done = plan.steps if failed_step is None else plan.steps[: failed_step + 1]
    if any(isinstance(s, StopSlot) for s in done):
        return None
    return SetWeights(dict(plan.weights), f"all traffic back to {plan.previous} at once", 1.0)


def restore_steps(
    fleet: Fleet,
    target: str,
    base: dict[str, int] | None = None,
    workers: tuple[str, ...] = (),
    stop_others: bool = True,
) -> list[Step]:
    """Steps that bring the fleet back to TARGET: per host a slot that runs it (started again
    if it was stopped, or the idle slot pointed at it; the release must still be installed; a
    running one whose health probe failed is HTTP-checked before it gets traffic, not restarted),
    one weights reload, the Celery workers, then the slots of other releases stopped. Drained
    hosts are left as they are (left_out)."""
    fleet = fleet.without(left_out(fleet, base))
    base = base or base_weights(fleet)
    chosen: dict[str, str] = {}
    start: dict[str, str] = {}
    check: dict[str, str] = {}  # running, but its health probe failed: checked, not restarted
    missing = []
    for host in fleet.hosts:
        ready = [s for s in SLOTS if fleet.slot(host, s).version == target]
        running = [s for s in ready if fleet.slot(host, s).active and fleet.slot(host, s).healthy]
        unsure = [s for s in ready if fleet.slot(host, s).active]
        if running:
            chosen[host] = max(running, key=lambda s: fleet.slot(host, s).weight)
        elif unsure:
            # a slow answer (a dead database host first in the DSN costs its connect timeout)
            # is no reason to restart it: the HTTP check waits for it, a restart would not
            chosen[host] = check[host] = unsure[0]
        elif ready:
            chosen[host] = ready[0]
            start[host] = ready[0]
        elif target in fleet.releases.get(host, ()):
            live = fleet.live_slot(host)
            slot = other(live) if live else "blue"
            chosen[host] = slot
            start[host] = slot
        else:
            missing.append(host)
    if missing:
        raise PlanError(
            f"Release {target} is no longer installed on {', '.join(missing)}; roll it out "
            f"again with `inkdeploy rollout --version {target} --artifact ...`."
        )
    steps: list[Step] = []
    keep = {h: s for h, s in chosen.items() if h not in start}
    if keep:
        steps.append(KeepSlot(keep))
    if start:
        scrape = {h: sorted(set(fleet.scrape().get(h, [])) | {chosen[h]}) for h in fleet.hosts}
        steps.append(StartSlot(start, target, scrape))
    if start or check:
        steps.append(HttpCheck({h: s for h, s in chosen.items() if h in start or h in check},
                               target))  # fmt: skip
    weights = weights_for(chosen, base)
    if weights != fleet.weights or start or fleet.weights_disagree:
        steps.append(SetWeights(weights, f"all traffic back to {target}", 1.0))
    steps.append(record(target, chosen, workers))
    stale_workers = tuple(h for h in workers if fleet.workers.get(h) != target)
    if stale_workers:
        steps.append(Celery(target, stale_workers))
    if stop_others:
        stop = {
            h: s for h in fleet.hosts for s in SLOTS if s != chosen[h] and fleet.slot(h, s).active
        }
        if stop:
            # one slot per host at most (there are two slots)
            steps.append(StopSlot(stop, scrape_only(chosen), reason=f"not {target}"))
    return steps


def rollback_plan(
    fleet: Fleet,
    target: str,
    current: str | None,
    workers: tuple[str, ...],
    base: dict[str, int] | None = None,
    rollout: str | None = None,
) -> Plan:
    steps = restore_steps(fleet, target, base, workers)
    left = left_out(fleet, base)
    return Plan(
        rollout or new_rollout_id(f"rollback-{target}"),
        "rollback",
        "rollback",
        target,
        current,
        steps,
        base or base_weights(fleet.without(left)),
        drained_notes(fleet) if left else [],
    )


def left_out(fleet: Fleet, base: dict[str, int] | None) -> tuple[str, ...]:
    """Hosts a restore leaves as they are: those the rollout being undone left out (absent
    from its base weights: drained before it began), else the hosts drained now. A host the
    rollout drained itself (a rolling batch) is in its base weights and gets traffic back."""
    if base:
        return tuple(h for h in fleet.hosts if h not in base)
    return fleet.drained


def first_new_share_step(steps: list[Step]) -> int | None:
    """Index of the first step that puts all traffic on the new release (promote jumps there)."""
    for index, step in enumerate(steps):
        if isinstance(step, SetWeights) and step.new_share >= 1.0:
            return index
    return None


__all__ = [
    "Plan",
    "PlanError",
    "check_fleet",
    "first_new_share_step",
    "make_plan",
    "restore_steps",
    "rollback_plan",
    "scrape_only",
]
