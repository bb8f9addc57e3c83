"""Rolling: batches of hosts updated in place in their live slot. Per batch: drain it in the LB,
start the new release in the slot, gate it, put it back. Returning one batch and draining the
next is one reload. Needs one slot's memory per host; the idle slot stays untouched."""

from __future__ import annotations

from inkdeploy.config import Policy, parse_count
from inkdeploy.errors import PlanError
from inkdeploy.fleet import Fleet
from inkdeploy.steps import Analysis, HttpCheck, SetWeights, StartSlot, Step
from inkdeploy.strategies.common import base_weights, epilogue, prologue, weights_for


def batches(hosts: tuple[str, ...], size: int) -> list[tuple[str, ...]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), size)]


def weights_without(
    serving: dict[str, int], live: dict[str, str], batch: tuple[str, ...]
) -> dict[str, int]:
    """SERVING (every host's live slot at its base weight) with BATCH's live slots at 0: what
    weights_for gives with those hosts' base at 0, as a copy (one per batch of a 1,000-host
    fleet, so not rebuilt key by key)."""
    weights = dict(serving)
    for host in batch:
        weights[f"{host}:{live[host]}"] = 0
    return weights


def build(fleet: Fleet, policy: Policy, version: str, workers: tuple[str, ...]) -> list[Step]:
    total = len(fleet.hosts)
    size = parse_count(policy.rolling.max_unavailable, total)
    min_healthy = parse_count(policy.rolling.min_healthy, total)
    if total - size < min_healthy:
        raise PlanError(
            f"Rolling over {total} app host(s) {size} at a time would leave {total - size} "
            f"serving, below rolling.min_healthy = {min_healthy}; lower max_unavailable, add "
            "hosts, or use --strategy blue-green (it never takes a host out)."
        )
    live = {h: fleet.live_slot(h) or "blue" for h in fleet.hosts}
    base = base_weights(fleet)
    steps = prologue(version, fleet.hosts, policy.migrate, policy.hooks.pre, workers)
    groups = batches(fleet.hosts, size)
    scrape = fleet.scrape()  # the same targets for every batch (steps never change them)
    serving = weights_for(live, base)
    done: list[str] = []
    for index, batch in enumerate(groups, 1):
        weights = weights_without(serving, live, batch)
        label = f"drain batch {index}/{len(groups)} ({', '.join(batch)})"
        if done:
            label += f", return {', '.join(groups[index - 2])}"
        steps.append(SetWeights(weights, label, new_share=len(done) / total))
        slots = {h: live[h] for h in batch}
        steps.append(StartSlot(slots, version, scrape))
        steps.append(HttpCheck(slots, version))
        done.extend(batch)
    steps.append(SetWeights(serving, f"return batch {len(groups)}/{len(groups)}", 1.0))
    steps.append(Analysis("after the last batch", version, policy.blue_green.bake_s))
    steps += epilogue(version, workers, {}, fleet.scrape(), policy.hooks.post, live)
    return steps
