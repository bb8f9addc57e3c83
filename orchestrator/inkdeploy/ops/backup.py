"""What the pgBackRest repository holds, and what a point-in-time restore of the Patroni cluster
will do. Pure: `pgbackrest info` output, a target time and which db hosts answer go in; a
RestorePlan comes out, so `inkdeploy restore --dry-run` prints exactly what `restore` runs and a
unit test can check it without a fleet. ops/restore.py carries it out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inkdeploy.errors import InkdeployError

BACKUP_TYPES = ("full", "diff", "incr")


class BackupError(InkdeployError):
    """The repository cannot be read, or the restore asked for cannot be done."""


@dataclass(frozen=True)
class BackupSet:
    label: str
    type: str  # full | diff | incr
    start: float  # unix time the backup started
    stop: float  # unix time it ended: the earliest point it can restore to
    size: int  # database size
    repo_size: int  # bytes this backup added to the repository
    prior: str | None  # the backup a diff or incr builds on
    wal_start: str | None
    wal_stop: str | None
    error: bool = False  # pgBackRest found page checksum errors while copying

    @property
    def seconds(self) -> float:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class Repo:
    stanza: str
    status_code: int  # 0 ok; pgBackRest's codes otherwise (2: no backup yet, ...)
    status: str
    sets: tuple[BackupSet, ...] = ()
    wal_min: str | None = None  # oldest WAL segment archived
    wal_max: str | None = None  # newest

    @property
    def good(self) -> list[BackupSet]:
        """Backups without errors, oldest first."""
        return sorted((s for s in self.sets if not s.error), key=lambda s: s.stop)

    @property
    def newest(self) -> BackupSet | None:
        good = self.good
        return good[-1] if good else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stanza": self.stanza,
            "status_code": self.status_code,
            "status": self.status,
            "wal_min": self.wal_min,
            "wal_max": self.wal_max,
            "backups": [s.to_dict() for s in sorted(self.sets, key=lambda s: s.stop)],
        }


def parse_info(text: str, stanza: str) -> Repo:
    """The stanza's part of `pgbackrest --output=json info`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BackupError(f"pgbackrest info printed no JSON ({exc}); run it on the repository "
                          "host to see why.") from None  # fmt: skip
    found = next((s for s in data if isinstance(s, dict) and s.get("name") == stanza), None)
    if found is None:
        raise BackupError(
            f"The repository has no stanza {stanza}; run site.yml (playbooks/backup.yml) "
            "to create it."
        )
    status = found.get("status") or {}
    sets = tuple(_backup_set(b) for b in found.get("backup") or [])
    wal = [a for a in found.get("archive") or [] if a.get("min")]
    return Repo(
        stanza=stanza,
        status_code=int(status.get("code", -1)),
        status=str(status.get("message", "unknown")),
        sets=sets,
        wal_min=min((a["min"] for a in wal), default=None),
        wal_max=max((a.get("max") or a["min"] for a in wal), default=None),
    )


def _backup_set(raw: dict[str, Any]) -> BackupSet:
    stamp = raw.get("timestamp") or {}
    info = raw.get("info") or {}
    archive = raw.get("archive") or {}
    return BackupSet(
        label=str(raw.get("label")),
        type=str(raw.get("type", "full")),
        start=float(stamp.get("start", 0)),
        stop=float(stamp.get("stop", 0)),
        size=int(info.get("size", 0)),
        repo_size=int((info.get("repository") or {}).get("delta", 0)),
        prior=raw.get("prior"),
        wal_start=archive.get("start"),
        wal_stop=archive.get("stop"),
        error=bool(raw.get("error", False)),
    )


def parse_target(text: str, now: datetime) -> datetime:
    """A restore target: ISO 8601 date and time; without a zone it is UTC. Not in the future."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackupError(
            f'"{text}" is not a time; give it as "2026-12-06 21:03:04" (UTC) or with a zone, '
            'like "2026-12-06 22:03:04+01:00".'
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment > now:
        raise BackupError(
            f"{stamp(moment)} is in the future; to restore everything archived use --latest."
        )
    return moment.astimezone(UTC)


def stamp(moment: datetime | float) -> str:
    """UTC, to the millisecond: what the plan prints and what pgBackRest is given."""
    if isinstance(moment, float | int):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "+00"


@dataclass(frozen=True)
class RestorePlan:
    stanza: str
    repo_host: str
    target: datetime | None  # None: the end of the archived WAL (--latest)
    backup: BackupSet
    restore_on: str  # the db host restored from the repository, the new leader
    recreate: tuple[str, ...]  # db hosts wiped and re-cloned from it as replicas
    down: dict[str, str] = field(default_factory=dict)  # db hosts left out -> why
    leader_before: str | None = None

    @property
    def pgbackrest_args(self) -> list[str]:
        """The restore command's options after `pgbackrest --stanza=S`."""
        args = ["--delta", f"--set={self.backup.label}"]
        if self.target is None:
            return [*args, "--type=default"]
        return [*args, "--type=time", f"--target={stamp(self.target)}", "--target-action=promote"]

    @property
    def summary(self) -> str:
        point = f"to {stamp(self.target)}" if self.target else "to the newest archived WAL"
        text = (
            f"Restore the PostgreSQL cluster {point} from backup {self.backup.label} "
            f"({self.backup.type}, ended {stamp(self.backup.stop)}): Patroni stops on every db "
            f"host, {self.restore_on} is restored and becomes the leader"
        )
        if self.recreate:
            text += f", {', '.join(self.recreate)} {'is' if len(self.recreate) == 1 else 'are'} "
            text += "wiped and cloned from it"
        text += ". Every write after the target is lost."
        if self.down:
            verb = "is" if len(self.down) == 1 else "are"
            text += (
                f" {', '.join(self.down)} did not answer and {verb} left out: run "
                "`inkdeploy db reinit HOST` once it is back."
            )
        return text

    @property
    def steps(self) -> list[str]:
        steps = [
            f"pgbackrest check on {self.leader_before}: the leader's current WAL reaches the "
            "archive before anything stops"
            if self.leader_before and self.leader_before not in self.down
            else "no leader answers: nothing to archive first (the archive ends where it ends)",
            f"stop Patroni (and PostgreSQL) on {', '.join([*self.recreate, self.restore_on])}",
            "remove the cluster's state from etcd (patronictl remove)",
            f"on {self.restore_on}: pgbackrest restore {' '.join(self.pgbackrest_args)}",
            f"on {self.restore_on}: start PostgreSQL without network listeners until the "
            "recovery ends and it promotes, then stop it",
            f"start Patroni on {self.restore_on} and wait for it to lead",
        ]
        if self.recreate:
            steps.append(
                f"wipe the data directory of {', '.join(self.recreate)}, start Patroni there and "
                "wait for each to stream from the leader"
            )
        steps += [
            "check that the app answers with the database (GET /healthz on its serving slots)",
            f"pgbackrest check on {self.restore_on} (WAL of the new timeline reaches the archive)",
        ]
        return steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "stanza": self.stanza,
            "repo_host": self.repo_host,
            "target": stamp(self.target) if self.target else None,
            "latest": self.target is None,
            "backup": self.backup.to_dict(),
            "restore_on": self.restore_on,
            "recreate": list(self.recreate),
            "down": self.down,
            "leader_before": self.leader_before,
            "summary": self.summary,
            "steps": self.steps,
        }


def plan_restore(
    repo: Repo,
    target: datetime | None,
    db_hosts: list[str],
    reachable: dict[str, str],
    leader: str | None,
    repo_host: str,
) -> RestorePlan:
    """Which backup to restore and where. REACHABLE: db host -> "" if it answered over SSH, else
    why not. The leader is restored when it answers (its host is known good), else the first
    db host that does."""
    good = repo.good
    if not good:
        raise BackupError(
            f"The repository on {repo_host} has no usable backup of {repo.stanza} "
            f"({repo.status}); take one with `inkdeploy backup now`."
        )
    if target is None:
        chosen = good[-1]
    else:
        before = [s for s in good if s.stop <= target.timestamp()]
        if not before:
            raise BackupError(
                f"No backup ended before {stamp(target)}; the earliest point a restore can reach "
                f"is {stamp(good[0].stop)} (backup {good[0].label})."
            )
        chosen = before[-1]
    up = [h for h in db_hosts if not reachable.get(h, "no answer")]
    down = {h: reachable.get(h) or "no answer" for h in db_hosts if h not in up}
    if not up:
        raise BackupError(
            "No db host answered over SSH ("
            + "; ".join(f"{h}: {why}" for h, why in down.items())
            + "); bring one up first."
        )
    restore_on = leader if leader in up else up[0]
    return RestorePlan(
        stanza=repo.stanza,
        repo_host=repo_host,
        target=target,
        backup=chosen,
        restore_on=restore_on,
        recreate=tuple(h for h in up if h != restore_on),
        down=down,
        leader_before=leader,
    )
