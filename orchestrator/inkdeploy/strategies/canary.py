"""Canary: the new release in the idle slot of some hosts, traffic moved to it by LB weights in
steps (10%, 50%, 100% by default); at each step the metric gates and the canary judge (against
the old release serving at the same time) run for the analysis window. At 100% the remaining
hosts get the new release first, so the canaries never carry the whole load alone."""

from __future__ import annotations

from inkdeploy.config import Policy, parse_count
from inkdeploy.fleet import Fleet
from inkdeploy.steps import Analysis, Approval, HttpCheck, SetWeights, StartSlot, Step
from inkdeploy.strategies.common import (
    base_weights,
    epilogue,
    idle_slots,
    prologue,
    scrape_only,
    scrape_with,
    split_weights,
    weights_for,
)


def canary_hosts(fleet: Fleet, policy: Policy) -> tuple[str, ...]:
    spec = policy.canary.hosts
    count = len(fleet.hosts) if spec == "all" else parse_count(spec, len(fleet.hosts))
    return fleet.hosts[:count]


def build(
    fleet: Fleet, policy: Policy, version: str, previous: str, workers: tuple[str, ...]
) -> list[Step]:
    live = {h: fleet.live_slot(h) or "blue" for h in fleet.hosts}
    new_all = idle_slots(fleet, fleet.hosts)
    first = canary_hosts(fleet, policy)
    canaries = {h: new_all[h] for h in first}
    rest = {h: s for h, s in new_all.items() if h not in canaries}
    steps = prologue(version, fleet.hosts, policy.migrate, policy.hooks.pre, workers)
    steps.append(StartSlot(canaries, version, scrape_with(fleet, canaries)))
    steps.append(HttpCheck(canaries, version))
    window = policy.canary.analysis_s
    for percent in policy.canary.steps:
        if percent < 100:
            weights = split_weights(fleet, live, canaries, percent)
            steps.append(SetWeights(weights, f"canary at {percent}%", percent / 100))
            steps.append(
                Analysis(
                    f"canary at {percent}%", version, window, previous, judge=policy.judge.enabled
                )
            )
        else:
            if rest:
                steps.append(StartSlot(rest, version, scrape_with(fleet, new_all)))
                steps.append(HttpCheck(rest, version))
            steps.append(
                SetWeights(weights_for(new_all, base_weights(fleet)), "promote: 100%", 1.0)
            )
            steps.append(Analysis("at 100%", version, window))
        if percent in policy.canary.manual_approval and percent < 100:
            steps.append(Approval(f"after canary at {percent}%"))
    stop = live if policy.canary.stop_old else {}
    steps += epilogue(
        version, workers, stop, scrape_only(new_all), policy.hooks.post, new_all,
        policy.canary.stop_old_after_s,
    )  # fmt: skip
    return steps
