"""`inkdeploy backup now | list | check`: pgBackRest over the SSH fast path.

`info` and backups run on the repository host (first host of group backup) as the repository's
OS user; a backup runs through its systemd unit (pgbackrest-backup@TYPE.service, role
pgbackrest), the same one the timers start, so it is logged in the journal and refreshes the
metrics. `check` runs on the leader (archive_check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from inkdeploy.inventory import Environment
from inkdeploy.ops.backup import BackupError, BackupSet, Repo, parse_info
from inkdeploy.ops.db import db_status
from inkdeploy.preflight import hostvar
from inkdeploy.remote import Remote, Reply


@dataclass(frozen=True)
class Where:
    """The repository host and how pgBackRest is called there."""

    repo_host: str
    stanza: str
    user: str

    def argv(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.user, "--", "pgbackrest", f"--stanza={self.stanza}", *args]


def where(env: Environment) -> Where:
    hosts = env.groups.get("backup") or []
    if not hosts:
        raise BackupError(
            "The inventory has no host in group backup, so there is no pgBackRest repository; "
            "add one (docs/backup.md) and run site.yml."
        )
    host = hosts[0]
    db = env.groups.get("db") or [host]
    stanza = (
        hostvar(env, host, "pgbackrest_stanza")
        or hostvar(env, db[0], "patroni_scope")
        or "inkdeploy"
    )
    user = hostvar(env, host, "pgbackrest_user") or "postgres"
    return Where(host, str(stanza), str(user))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_repo(env: Environment, remote: Remote | None = None) -> tuple[Where, Repo]:
    at = where(env)
    remote = remote or Remote(env.hostvars)
    reply = remote.command(at.repo_host, at.argv("--output=json", "info"), timeout_s=60)
    if reply.unreachable:
        raise BackupError(
            f"The repository host {at.repo_host} {reply.problem()}; backups and restores need it."
        )
    if reply.rc != 0:
        raise BackupError(
            f"pgbackrest info failed on {at.repo_host}: {_last_line(reply.stderr + reply.stdout)}."
        )
    return at, parse_info(reply.stdout, at.stanza)


@dataclass
class BackupResult:
    type: str
    repo_host: str
    ok: bool
    seconds: float
    backup: BackupSet | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "repo_host": self.repo_host,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "backup": self.backup.to_dict() if self.backup else None,
            "message": self.message,
        }


def backup_now(env: Environment, kind: str) -> BackupResult:
    """Take a backup of KIND now and wait for it; the new backup set, or why it failed."""
    at = where(env)
    remote = Remote(env.hostvars)
    _, before = read_repo(env, remote)
    began = time.monotonic()
    unit = f"pgbackrest-backup@{kind}.service"
    reply = remote.command(at.repo_host, ["systemctl", "start", unit], timeout_s=24 * 3600)
    seconds = time.monotonic() - began
    if reply.unreachable:
        raise BackupError(f"The repository host {at.repo_host} {reply.problem()}.")
    if reply.rc != 0:
        journal = remote.command(
            at.repo_host,
            ["journalctl", "-u", unit, "-n", "30", "--no-pager", "-o", "cat"],
            timeout_s=20,
        )
        said = [ln for ln in journal.stdout.splitlines() if "ERROR" in ln or "error" in ln]
        raise BackupError(
            f"The {kind} backup failed on {at.repo_host} after {seconds:.0f} s: "
            f"{_last_line(said[-1] if said else journal.stdout) or 'see journalctl -u ' + unit}.",
            detail=journal.stdout.strip()[-2000:] or None,
        )
    _, after = read_repo(env, remote)
    known = {s.label for s in before.sets}
    new = [s for s in after.good if s.label not in known]
    backup = new[-1] if new else None
    if backup is None:
        raise BackupError(
            f"The {kind} backup unit finished on {at.repo_host}, but pgbackrest info lists no new "
            "backup; see journalctl -u " + unit + "."
        )
    if backup.type != kind:
        message = f"pgBackRest took a {backup.type} backup instead of {kind} (no full backup yet)."
    else:
        message = ""
    return BackupResult(kind, at.repo_host, True, seconds, backup, message)


@dataclass
class CheckResult:
    repo_host: str
    ok: bool
    seconds: float
    problems: list[str] = field(default_factory=list)
    newest: BackupSet | None = None
    newest_age_s: float | None = None
    repo: Repo | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_host": self.repo_host,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "problems": self.problems,
            "newest": self.newest.to_dict() if self.newest else None,
            "newest_age_s": round(self.newest_age_s, 1) if self.newest_age_s is not None else None,
            "repo": self.repo.to_dict() if self.repo else None,
        }


def archive_check(env: Environment, at: Where, leader: str | None, remote: Remote) -> Reply:
    """`pgbackrest check` where it proves archiving: on the leader, which switches a WAL
    segment and waits for it in the repository. Run on the repository host instead, pgBackRest
    2.45 fails when any db host does not answer over SSH, so it runs there only when no leader
    is known."""
    host = leader if leader and remote.usable([leader]) else at.repo_host
    return remote.command(host, at.argv("check"), timeout_s=180)


def check(env: Environment, max_age_h: float = 26.0) -> CheckResult:
    """`pgbackrest check` (a WAL switch on the primary reaches the repository), the stanza's
    status and the age of the newest good backup."""
    began = time.monotonic()
    at, repo = read_repo(env)
    remote = Remote(env.hostvars)
    reply = archive_check(env, at, db_status(env).leader, remote)
    problems: list[str] = []
    if reply.rc != 0:
        problems.append(
            f"pgbackrest check on {reply.host} failed: {_last_line(reply.stderr + reply.stdout)} "
            "(WAL does not reach the repository: see docs/backup.md, 'Monitoring')."
        )
    if repo.status_code != 0:
        problems.append(f"The stanza's status is: {repo.status}.")
    newest = repo.newest
    age = time.time() - newest.stop if newest else None
    if newest is None:
        problems.append("There is no good backup; take one with `inkdeploy backup now`.")
    elif age is not None and age > max_age_h * 3600:
        problems.append(
            f"The newest good backup ({newest.label}) is {age / 3600:.1f} h old, more than "
            f"{max_age_h:g} h: are the timers running (systemctl list-timers 'pgbackrest*')?"
        )
    return CheckResult(
        at.repo_host, not problems, time.monotonic() - began, problems, newest, age, repo
    )


@dataclass
class BackupOverview:
    """The repository as `inkdeploy status` shows it: newest good backup per type, its age."""

    repo_host: str
    stanza: str = ""
    status: str = ""
    newest: dict[str, BackupSet] = field(default_factory=dict)  # type -> newest good backup
    wal_max: str | None = None
    unreachable: dict[str, str] = field(default_factory=dict)  # the repository host -> why
    problems: list[str] = field(default_factory=list)

    def describe(self, now: float) -> str:
        if self.unreachable:
            return f"Backups: the repository host {self.repo_host} did not answer"
        kinds = [
            f"{kind} {(now - s.stop) / 3600:.1f} h ago"
            for kind, s in sorted(self.newest.items(), key=lambda kv: -kv[1].stop)
        ]
        return (
            f"Backups on {self.repo_host}: newest {', '.join(kinds) or 'none'}; "
            f"WAL archived up to {self.wal_max or 'none'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_host": self.repo_host,
            "stanza": self.stanza,
            "status": self.status,
            "newest": {kind: s.to_dict() for kind, s in self.newest.items()},
            "wal_max": self.wal_max,
            "unreachable": self.unreachable,
            "problems": self.problems,
        }


def overview(env: Environment, timeout_s: float, max_age_h: float = 26.0) -> BackupOverview | None:
    """None without a backup group; never raises (status shows what it could read)."""
    try:
        at = where(env)
    except BackupError:
        return None
    seen = BackupOverview(at.repo_host, at.stanza)
    remote = Remote(env.hostvars)
    if not remote.usable([at.repo_host]):
        seen.unreachable[at.repo_host] = "its connection settings need Ansible"
        return seen
    reply = remote.command(at.repo_host, at.argv("--output=json", "info"), timeout_s=timeout_s)
    if reply.unreachable:
        seen.unreachable[at.repo_host] = reply.problem()
        return seen
    if reply.rc != 0:
        seen.problems.append(f"pgbackrest info failed on {at.repo_host}: {reply.problem()}.")
        return seen
    try:
        repo = parse_info(reply.stdout, at.stanza)
    except BackupError as exc:
        seen.problems.append(exc.message)
        return seen
    seen.status, seen.wal_max = repo.status, repo.wal_max
    for backup in repo.good:
        seen.newest[backup.type] = backup  # good is oldest first: the last one of a type wins
    if repo.status_code != 0:
        seen.problems.append(f"The backup repository's status is: {repo.status}.")
    newest = repo.newest
    if newest and time.time() - newest.stop > max_age_h * 3600:
        seen.problems.append(
            f"The newest good backup is {(time.time() - newest.stop) / 3600:.0f} h old "
            "(`inkdeploy backup check`)."
        )
    return seen
