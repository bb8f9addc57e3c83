"""The data tier and the alerts for `inkdeploy status`: Patroni, etcd, the sentinels, the backup
repository and the alerts firing now, probed at once (read-only, 2 s per probe), beside the app
tier's fleet read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.fleet import Fleet, WorkerUnit
from inkdeploy.inventory import ConfigError, Environment
from inkdeploy.ops.backup_run import BackupOverview
from inkdeploy.ops.backup_run import overview as backup_overview
from inkdeploy.ops.db import DbStatus, db_status
from inkdeploy.ops.etcd import EtcdStatus, etcd_status
from inkdeploy.ops.redis import RedisStatus, redis_status
from inkdeploy.ops.workers import celery_host
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
    etcd: EtcdStatus = field(default_factory=EtcdStatus)
    alerts: list[Alert] = field(default_factory=list)
    # why the alerts are not known ('' when they are, or when there is no monitoring host)
    alerts_unknown: str = ""
    backup: BackupOverview | None = None  # None: no backup group in the inventory

    def to_dict(self) -> dict[str, Any]:
        return {
            "db": self.db.to_dict(),
            "redis": self.redis.to_dict(),
            "etcd": self.etcd.to_dict(),
            "alerts": [a.__dict__ for a in self.alerts],
            "alerts_unknown": self.alerts_unknown,
            "backup": self.backup.to_dict() if self.backup else None,
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
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix="overview") as pool:
        db = pool.submit(db_status, env, timeout_s)
        redis = pool.submit(redis_status, env, timeout_s)
        alerts = pool.submit(alerts_of, env, timeout_s)
        etcd = pool.submit(etcd_status, env, timeout_s)
        # pgbackrest info is one SSH command on the repository host (its connect: 2 s)
        backup = pool.submit(backup_overview, env, timeout_s + 1.5)
        found, unknown = alerts.result()
        return DataTier(db.result(), redis.result(), etcd.result(), found, unknown, backup.result())


def worker_lines(
    fleet: Fleet, expected: dict[str, tuple[str, ...]] | None = None
) -> list[tuple[str, str]]:
    """(level, sentence) per Celery queue and problem, for status: which hosts consume each
    queue with which release, where beat runs, and what is wrong (pure). EXPECTED: the queues
    the inventory gives each worker host, for the hosts that did not answer."""
    queues = {q: list(units) for q, units in fleet.queues.items()}
    for host in fleet.workers_silent:
        for queue in (expected or {}).get(host, ()):
            queues.setdefault(queue, []).append(WorkerUnit(host, queue, "unreachable", None))
    lines: list[tuple[str, str]] = []
    for queue, units in sorted(queues.items()):
        parts = []
        for unit in units:
            text = f"{unit.host} {unit.release or '-'} {unit.state}"
            linked = fleet.workers.get(unit.host)
            if unit.state == "active" and unit.release and linked and unit.release != linked:
                text += f" (installed {linked}: restart pending)"
            parts.append(text)
        lines.append(("", f"Celery queue {queue}: {', '.join(parts)}"))
        if not any(u.state == "active" for u in units):
            hosts = ", ".join(u.host for u in units)
            todo = (
                f"until {hosts} {'answers' if len(units) == 1 else 'answer'} again"
                if all(u.state == "unreachable" for u in units)
                else f"see `journalctl -u {fleet.app}-celery-worker@{queue}` on {hosts}, then "
                f"`inkdeploy workers restart --queue {queue}`"
            )
            said = (
                f"Celery queue {queue} has no running worker: its tasks wait in the broker {todo}."
            )
            lines.append(("red", said))
    for host, state in fleet.beat.items():
        lines.append(("" if state == "active" else "red", f"Celery beat on {host}: {state}"))
    for host in fleet.workers_silent:
        lines.append((
            "red",
            f"Worker host {host} is unreachable: only the other worker hosts serve its queues.",
        ))  # fmt: skip
    return lines


def expected_queues(env: Environment) -> dict[str, tuple[str, ...]]:
    """The queues the inventory gives each worker host ({} for a host it cannot tell)."""
    found = {}
    for host in env.worker_hosts:
        try:
            found[host] = celery_host(env, host).queues
        except ConfigError:
            continue
    return found
