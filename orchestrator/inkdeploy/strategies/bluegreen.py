"""Blue-green: the new release in every host's idle slot, gated directly (no user traffic), then
all traffic switched in one validated reload, a bake under full traffic, and the old slots
stopped (or kept running for instant rollback)."""

from __future__ import annotations

from inkdeploy.config import Policy
from inkdeploy.fleet import Fleet
from inkdeploy.steps import Analysis, HttpCheck, SetWeights, StartSlot, Step
from inkdeploy.strategies.common import (
    base_weights,
    epilogue,
    idle_slots,
    prologue,
    scrape_only,
    scrape_with,
    weights_for,
)


def build(fleet: Fleet, policy: Policy, version: str, workers: tuple[str, ...]) -> list[Step]:
    live = {h: fleet.live_slot(h) or "blue" for h in fleet.hosts}
    new = idle_slots(fleet, fleet.hosts)
    steps = prologue(version, fleet.hosts, policy.migrate, policy.hooks.pre, workers)
    steps.append(StartSlot(new, version, scrape_with(fleet, new)))
    steps.append(HttpCheck(new, version))
    steps.append(SetWeights(weights_for(new, base_weights(fleet)), "switch all traffic", 1.0))
    steps.append(Analysis("bake", version, policy.blue_green.bake_s))
    stop = live if policy.blue_green.stop_old else {}
    steps += epilogue(
        version, workers, stop, scrape_only(new), policy.hooks.post, new,
        policy.blue_green.stop_old_after_s,
    )  # fmt: skip
    return steps
