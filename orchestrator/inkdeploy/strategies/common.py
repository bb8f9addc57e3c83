"""Building blocks the strategies share: weights, scrape targets, base weights."""

from __future__ import annotations

from math import gcd

from inkdeploy.fleet import SLOTS, Fleet, other
from inkdeploy.steps import Celery, Hook, Install, Record, Step, StopSlot

DEFAULT_WEIGHT = 100


def base_weights(fleet: Fleet) -> dict[str, int]:
    """Per host, the weight its live slot has now (100 when the host carries no traffic)."""
    return {
        h: max((fleet.slot(h, s).weight for s in SLOTS), default=0) or DEFAULT_WEIGHT
        for h in fleet.hosts
    }


def weights_for(live: dict[str, str], base: dict[str, int]) -> dict[str, int]:
    """Each host's LIVE slot at its base weight, every other slot at 0 (drained)."""
    return {
        f"{host}:{slot}": base_weight if live.get(host) == slot else 0
        for host, base_weight in base.items()
        for slot in SLOTS
    }


def split_weights(
    fleet: Fleet, old: dict[str, str], new: dict[str, str], percent: int
) -> dict[str, int]:
    """Weights that send PERCENT of the traffic to the NEW slots ({host: slot}, the canaries)
    and the rest to the OLD slots of every host, evenly per slot."""
    n_new, n_old = len(new), len(old)
    if percent >= 100:
        per_new, per_old = 1, 0
    else:
        # n_new * c / (n_new * c + n_old * b) == percent / 100
        # with c = percent * n_old and b = (100 - percent) * n_new
        per_new, per_old = percent * n_old, (100 - percent) * n_new
        divisor = gcd(per_new, per_old)
        per_new, per_old = per_new // divisor, per_old // divisor
        scale = max(1, 1000 // max(per_new, per_old))  # finer integers, at most 1000 each
        per_new, per_old = per_new * min(scale, 10), per_old * min(scale, 10)
        if max(per_new, per_old) > 1000:  # nginx_lb accepts weights up to 1000
            top = max(per_new, per_old)
            per_new = max(1, round(per_new * 1000 / top))
            per_old = max(1, round(per_old * 1000 / top))
    weights = {f"{h}:{s}": 0 for h in fleet.hosts for s in SLOTS}
    for host, slot in old.items():
        weights[f"{host}:{slot}"] = per_old
    for host, slot in new.items():
        weights[f"{host}:{slot}"] = per_new
    return weights


def scrape_with(fleet: Fleet, extra: dict[str, str]) -> dict[str, list[str]]:
    """Prometheus targets: the slots running now plus EXTRA ({host: slot})."""
    targets = {h: set(v) for h, v in fleet.scrape().items()}
    for host, slot in extra.items():
        targets.setdefault(host, set()).add(slot)
    return {h: sorted(v) for h, v in targets.items()}


def scrape_only(live: dict[str, str]) -> dict[str, list[str]]:
    return {h: [s] for h, s in sorted(live.items())}


def idle_slots(fleet: Fleet, hosts: list[str] | tuple[str, ...]) -> dict[str, str]:
    result = {}
    for host in hosts:
        live = fleet.live_slot(host) or "green"
        result[host] = other(live)
    return result


def record(version: str, live: dict[str, str], workers: tuple[str, ...]) -> Record:
    return Record(
        {h: {"slot": s, "version": version} for h, s in sorted(live.items())}, version, workers
    )


def prologue(
    version: str,
    hosts: tuple[str, ...],
    migrate: bool,
    pre: list[str],
    workers: tuple[str, ...] = (),
) -> list[Step]:
    """The pre-deploy hooks, then the release installed on the app hosts and the worker hosts
    at once, before any traffic moves: a worker host that cannot install it fails the rollout
    while nothing has changed, and the Celery step later only switches and restarts."""
    steps: list[Step] = []
    if pre:
        steps.append(Hook("pre", tuple(pre)))
    steps.append(Install(tuple(dict.fromkeys(hosts + workers)), version, migrate))
    return steps


def epilogue(
    version: str,
    workers: tuple[str, ...],
    stop: dict[str, str],
    scrape: dict[str, list[str]],
    post: list[str],
    live: dict[str, str],
    stop_after_s: float = 0.0,
) -> list[Step]:
    """After the last gate: record what is live, move the workers, stop the old slots, hooks."""
    steps: list[Step] = [record(version, live, workers)]
    if workers:
        steps.append(Celery(version, workers))
    if stop:
        reason = "the previous release, no longer in the LB"
        steps.append(StopSlot(stop, scrape, reason=reason, after_s=stop_after_s))
    if post:
        steps.append(Hook("post", tuple(post)))
    return steps
