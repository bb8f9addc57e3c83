"""The data tier and the alerts for `inkdeploy status`: Patroni, the sentinels and the alerts
firing now, probed at once (read-only, 2 s per probe), beside the app tier's fleet read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.ops.db import DbStatus, db_status
from inkdeploy.ops.redis import RedisStatus, redis_status
from inkdeploy.preflight import alert_tasks, run_probes

IGNORED = {"Watchdog"}  # always firing on purpose (Alertmanager's dead man's switch)


@dataclass
class Alert:
    name: str
    severity: str
    where: str
    since: str
    summary: str

    def describe(self) -> str:
        text = f"{self.name} ({self.severity}) on {self.where}"
        text += f" since {self.since}" if self.since else ""
        return text + (f": {self.summary}" if self.summary else "")


@dataclass
class DataTier:
    db: DbStatus
    redis: RedisStatus
    alerts: list[Alert] = field(default_factory=list)
    # why the alerts are not known ('' when they are, or when there is no monitoring host)
    alerts_unknown: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "db": self.db.to_dict(),
            "redis": self.redis.to_dict(),
            "alerts": [a.__dict__ for a in self.alerts],
            "alerts_unknown": self.alerts_unknown,
        }


def firing(raw: list[Any]) -> list[Alert]:
    """The firing alerts of Prometheus' GET /api/v1/alerts, the most severe first."""
    result = []
    for alert in raw:
        if not isinstance(alert, dict) or alert.get("state") != "firing":
            continue
        labels = alert.get("labels") or {}
        if labels.get("alertname") in IGNORED:
            continue
        result.append(
            Alert(
                name=str(labels.get("alertname", "?")),
                severity=str(labels.get("severity", "none")),
                where=str(labels.get("host") or labels.get("instance") or "the fleet"),
                since=str(alert.get("activeAt") or ""),
                summary=str((alert.get("annotations") or {}).get("summary", "")).strip(),
            )
        )
    order = {"critical": 0, "warning": 1}
    return sorted(result, key=lambda a: (order.get(a.severity, 2), a.name, a.where))


def alerts_of(env: Environment, timeout_s: float) -> tuple[list[Alert], str]:
    tasks = alert_tasks(env, timeout_s)
    if not tasks:
        return [], ""
    ((_, seen),) = run_probes(tasks, timeout_s)
    if seen.error:
        return [], f"Prometheus at {seen.target} did not answer: {seen.error}"
    return firing(list(seen.data or [])), ""


def data_tier(env: Environment, timeout_s: float = 2.0) -> DataTier:
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="overview") as pool:
        db = pool.submit(db_status, env, timeout_s)
        redis = pool.submit(redis_status, env, timeout_s)
        alerts = pool.submit(alerts_of, env, timeout_s)
        found, unknown = alerts.result()
        return DataTier(db.result(), redis.result(), found, unknown)
