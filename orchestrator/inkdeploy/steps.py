"""The steps of a rollout, as data. Strategies build them, `inkdeploy plan` prints them, the
executor walks them and the journal stores them; none of them does anything by itself."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


def _hosts(slots: dict[str, str]) -> str:
    return ", ".join(f"{host} {slot}" for host, slot in sorted(slots.items()))


@dataclass(frozen=True)
class Step:
    kind: ClassVar[str] = "step"

    def describe(self) -> str:
        raise NotImplementedError

    def to_dict(self, memo: dict[int, Any] | None = None) -> dict[str, Any]:
        """The step as plain data that shares no container with the step. Steps hold only
        plain values (no nested dataclasses): a copy of the containers, not dataclasses.asdict's
        recursive deepcopy, which took seconds for a 1,000-host plan. MEMO (id -> copy, one per
        plan): a container several steps hold (a rolling plan's scrape targets, in every batch)
        is copied once and that copy shared the way the steps share the original."""
        data: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (dict, list)):
                copied = memo.get(id(value)) if memo is not None else None
                if copied is None:
                    copied = _copy(value)
                    if memo is not None:
                        memo[id(value)] = copied
                value = copied
            data[f.name] = value
        return data


def _copy(value: Any) -> Any:
    """VALUE with each dict and list in it copied, at any depth (other values are immutable).
    A dict is copied whole in C, then its nested containers replaced: a 2,000-slot weights map
    costs a scan for containers, not a Python-level rebuild of every entry."""
    if isinstance(value, dict):
        nested = [k for k, v in value.items() if isinstance(v, (dict, list))]
        copied = dict(value)
        for key in nested:
            copied[key] = _copy(value[key])
        return copied
    if isinstance(value, list):
        return [_copy(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


@dataclass(frozen=True)
class Hook(Step):
    """Run the environment's pre or post hooks on the controller."""

    kind: ClassVar[str] = "hook"
    phase: str  # "pre" | "post"
    commands: tuple[str, ...]

    def describe(self) -> str:
        return f"run {len(self.commands)} {self.phase}-deploy hook(s)"


@dataclass(frozen=True)
class Install(Step):
    """Install the release on hosts without touching a slot; migrations once if asked."""

    kind: ClassVar[str] = "install"
    hosts: tuple[str, ...]
    version: str
    migrate: bool

    def describe(self) -> str:
        migrate = ", then apply its database migrations once" if self.migrate else ""
        return f"install {self.version} on {', '.join(self.hosts)}{migrate}"


@dataclass(frozen=True)
class StartSlot(Step):
    """Point each host's slot at the release, start it, wait for its own health check."""

    kind: ClassVar[str] = "start_slot"
    slots: dict[str, str]  # host -> slot
    version: str
    scrape: dict[str, list[str]]  # Prometheus targets after this step

    def describe(self) -> str:
        return f"start {self.version} in {_hosts(self.slots)}"


@dataclass(frozen=True)
class StopSlot(Step):
    kind: ClassVar[str] = "stop_slot"
    slots: dict[str, str]
    scrape: dict[str, list[str]]
    reason: str = ""
    # > 0: leave the slots running and have a timer on each host stop them this much later
    # (cancelled if a later step starts or re-uses the slot).
    after_s: float = 0.0

    def describe(self) -> str:
        when = f" in {self.after_s:.0f} s (a timer on the host)" if self.after_s else ""
        return f"stop {_hosts(self.slots)}{when}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class KeepSlot(Step):
    """Cancel a pending delayed stop of slots that serve again (a rollback onto them)."""

    kind: ClassVar[str] = "keep_slot"
    slots: dict[str, str]

    def describe(self) -> str:
        return f"keep {_hosts(self.slots)} running (cancel its pending stop)"


@dataclass(frozen=True)
class SetWeights(Step):
    """One validated load balancer reload with these weights ("host:slot" -> 0..1000)."""

    kind: ClassVar[str] = "set_weights"
    weights: dict[str, int]
    label: str
    new_share: float = 0.0  # share of traffic on the new release after this step, 0..1

    def describe(self) -> str:
        live = ", ".join(f"{k}={w}" for k, w in sorted(self.weights.items()) if w > 0)
        return f"{self.label}: weights {live} (others 0)"


@dataclass(frozen=True)
class HttpCheck(Step):
    """The HTTP gate against each slot directly, not through the load balancer."""

    kind: ClassVar[str] = "http_check"
    slots: dict[str, str]
    version: str

    def describe(self) -> str:
        return f"gate: HTTP health of {self.version} on {_hosts(self.slots)}"


@dataclass(frozen=True)
class Analysis(Step):
    """Metric gates over a window while traffic flows: Prometheus thresholds for VERSION, and
    the canary judge against BASELINE when the baseline still has traffic."""

    kind: ClassVar[str] = "analysis"
    label: str
    version: str
    window_s: float
    baseline: str | None = None
    judge: bool = False

    def describe(self) -> str:
        judge = f", canary judge against {self.baseline}" if self.judge else ""
        return f"gate: {self.label}, {self.window_s:.0f} s of metrics for {self.version}{judge}"


@dataclass(frozen=True)
class Approval(Step):
    kind: ClassVar[str] = "approval"
    label: str

    def describe(self) -> str:
        return f"wait for approval ({self.label}): `inkdeploy promote` or `inkdeploy abort`"


@dataclass(frozen=True)
class Celery(Step):
    """Move the Celery workers to the release (warm shutdown: running tasks finish)."""

    kind: ClassVar[str] = "celery"
    version: str
    hosts: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return f"restart the Celery workers on {self.version} ({', '.join(self.hosts)})"


@dataclass(frozen=True)
class Record(Step):
    """Write on each host what is live now, so a later site.yml deploys that (not the
    inventory's app_version) and never undoes the rollout."""

    kind: ClassVar[str] = "record"
    live: dict[str, dict[str, str]]  # host -> {"slot": ..., "version": ...}
    version: str
    workers: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"record {self.version} as the live release on the hosts"


STEP_TYPES: dict[str, type[Step]] = {
    cls.kind: cls
    for cls in (
        Hook,
        Install,
        StartSlot,
        StopSlot,
        KeepSlot,
        Record,
        SetWeights,
        HttpCheck,
        Analysis,
        Approval,
        Celery,
    )
}


def step_from_dict(data: dict[str, Any]) -> Step:
    data = dict(data)
    cls = STEP_TYPES[data.pop("kind")]
    names = {f.name for f in fields(cls)}
    values = {k: (tuple(v) if isinstance(v, list) and k in {"hosts", "commands", "workers"} else v)
              for k, v in data.items() if k in names}  # fmt: skip
    return cls(**values)
