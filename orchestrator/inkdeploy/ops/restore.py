"""`inkdeploy restore`: carry out a RestorePlan (ops/backup.py) on the Patroni cluster.

The order is the one Patroni's documentation and the larger Patroni toolkits use: Patroni stops
everywhere (replicas first), the cluster's keys leave etcd, pgBackRest restores one member, that
member's PostgreSQL replays WAL to the target without network listeners and promotes, Patroni
takes the promoted data directory over as a new cluster (its leader), and the other members are
wiped and cloned from it. Then the app's serving slots must answer with the database, and
`pgbackrest check` must see the new timeline's WAL reach the repository.

Every step is one SSH command on one host (the fast path, remote.py); the cluster is watched
from the controller with `db status`'s reads. Under the deploy lock, so no rollout's migrations
run against a database that is being replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from inkdeploy.config import HttpGate
from inkdeploy.deploy import Session
from inkdeploy.fleet import SLOT_PORTS
from inkdeploy.gates.http import check_http
from inkdeploy.inventory import Environment
from inkdeploy.ops.backup import BackupError, RestorePlan, parse_target, plan_restore
from inkdeploy.ops.backup_run import archive_check, read_repo, where
from inkdeploy.ops.db import DbStatus, db_status
from inkdeploy.ops.held import held
from inkdeploy.preflight import LEADER_ROLES, hostvar
from inkdeploy.remote import Remote, Reply

POLL_S = 1.0
PATRONI_CONFIG = "/etc/patroni/config.yml"
RESTORE_LOG = "/var/log/postgresql/inkdeploy-restore.log"
# Recovery settings pgBackRest writes into postgresql.auto.conf; reset once the member promoted,
# so they never apply again when it later follows another leader.
RECOVERY_SETTINGS = (
    "restore_command", "recovery_target", "recovery_target_time", "recovery_target_action",
    "recovery_target_timeline", "recovery_target_lsn", "recovery_target_xid",
    "recovery_target_name", "recovery_target_inclusive",
)  # fmt: skip

# $1 data directory, $2 PostgreSQL's bin directory: Patroni stops PostgreSQL with itself; a
# postmaster left over (Patroni dead, PostgreSQL not) is stopped too.
STOP = (
    'systemctl stop patroni && if runuser -u postgres -- "$2/pg_ctl" -D "$1" status >/dev/null; '
    'then runuser -u postgres -- "$2/pg_ctl" -D "$1" stop -m fast -w -t 120; fi'
)
# $1 scope, $2 the leader Patroni last knew (patronictl asks for it while its key lives).
REMOVE = (
    'printf "%s\\n%s\\n%s\\n" "$1" "Yes I am aware" "$2" '
    f'| patronictl -c {PATRONI_CONFIG} remove "$1" >/dev/null'
)
# $1 data directory, $2 bin directory, $3 port, $4 seconds: replay to the target with no
# network listener (no client sees a half-recovered database), wait for the promotion, reset
# the recovery settings, stop.
PROMOTE = (
    'runuser -u postgres -- "$2/pg_ctl" -D "$1" -w -t "$4" -l '
    + RESTORE_LOG
    + " -o \"-c listen_addresses=''\" start >/dev/null || true; "
    'r=""; i=0; while [ "$i" -lt "$4" ]; do '
    'r=$(runuser -u postgres -- psql -p "$3" -XAtc "select pg_is_in_recovery()" 2>/dev/null) '
    '|| r=""; [ "$r" = f ] && break; '
    'if ! runuser -u postgres -- "$2/pg_ctl" -D "$1" status >/dev/null; then '
    "echo \"PostgreSQL stopped during the recovery: $(grep -E 'FATAL|PANIC' "
    + RESTORE_LOG
    + ' | tail -n 1)" >&2; exit 3; fi; sleep 1; i=$((i+1)); done; '
    '[ "$r" = f ] || { echo "the recovery did not end within $4 s" >&2; exit 4; }; '
    'runuser -u postgres -- psql -p "$3" -Xq '
    + " ".join(f'-c "ALTER SYSTEM RESET {name}"' for name in RECOVERY_SETTINGS)
    + ' && runuser -u postgres -- "$2/pg_ctl" -D "$1" stop -m fast -w -t 120 >/dev/null'
)
# $1 data directory: a member to be cloned from the new leader.
WIPE = 'find "$1" -mindepth 1 -delete && systemctl start patroni'


class RestoreFailed(BackupError):
    """A step of the restore failed; the message says which and what state it left."""


@dataclass
class RestoreResult:
    plan: RestorePlan
    dry_run: bool
    lock: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)  # name, host, seconds
    rto_s: float | None = None  # command start to the app answering with the database
    leader_after: str | None = None
    replicas: list[str] = field(default_factory=list)  # streaming from it at the end
    app_checked: list[str] = field(default_factory=list)  # slots that answered
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "dry_run": self.dry_run,
            "lock": self.lock,
            "steps": self.steps,
            "rto_s": self.rto_s,
            "leader_after": self.leader_after,
            "replicas": self.replicas,
            "app_checked": self.app_checked,
            "problems": self.problems,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class _Paths:
    data: str
    bin: str
    port: str


def _paths(env: Environment, host: str) -> _Paths:
    version = hostvar(env, host, "postgresql_version") or 15
    return _Paths(
        str(hostvar(env, host, "postgresql_data_dir") or f"/var/lib/postgresql/{version}/main"),
        f"/usr/lib/postgresql/{version}/bin",
        str(hostvar(env, host, "postgresql_port") or 5432),
    )


def prepare(env: Environment, target: str | None, now: datetime | None = None) -> RestorePlan:
    """Read the repository and the cluster, and plan (nothing changes)."""
    moment = parse_target(target, now or datetime.now(UTC)) if target else None
    db_hosts = list(env.groups.get("db") or [])
    if not db_hosts:
        raise BackupError("The inventory has no host in group db; pass the right inventory.")
    remote = Remote(env.hostvars)
    with ThreadPoolExecutor(max_workers=3) as pool:
        repo_f = pool.submit(read_repo, env, remote)
        ssh_f = pool.submit(remote.commands, {h: ["true"] for h in db_hosts}, 10.0)
        status_f = pool.submit(db_status, env)
        (at, repo), ssh, status = repo_f.result(), ssh_f.result(), status_f.result()
    reachable = {h: "" if r.rc == 0 else r.problem() for h, r in ssh.items()}
    return plan_restore(repo, moment, db_hosts, reachable, status.leader, at.repo_host)


def restore(
    env: Environment,
    plan: RestorePlan,
    *,
    no_lock: bool = False,
    message: str = "",
    began: float | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RestoreResult:
    began = began or time.monotonic()
    result = RestoreResult(plan, False)
    with held(env, "db-restore", message or plan.summary, plan.restore_on,
              no_lock=no_lock) as lock:  # fmt: skip
        result.lock = lock.lock
        _run(env, plan, result, began, progress)
        lock.record.update({"target": plan.to_dict()["target"], "backup": plan.backup.label,
                            "rto_s": result.rto_s})  # fmt: skip
    result.seconds = time.monotonic() - began
    return result


def _run(
    env: Environment,
    plan: RestorePlan,
    result: RestoreResult,
    began: float,
    progress: Callable[[str], None],
) -> None:
    remote = Remote(env.hostvars)
    at = where(env)
    scope = str(hostvar(env, plan.restore_on, "patroni_scope") or plan.stanza)
    paths = {h: _paths(env, h) for h in (plan.restore_on, *plan.recreate)}
    main = paths[plan.restore_on]

    def step(name: str, host: str, argv: list[str], timeout_s: float) -> Reply:
        progress(f"{name} on {host}")
        started = time.monotonic()
        reply = remote.command(host, argv, timeout_s=timeout_s)
        result.steps.append({"step": name, "host": host,
                             "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
        if reply.rc != 0:
            raise RestoreFailed(
                f"{name} failed on {host}: {reply.problem()}. {_left(result.steps)}",
                detail=(reply.stderr or reply.stdout).strip()[-2000:] or None,
            )
        return reply

    def each(name: str, hosts: tuple[str, ...], argv: Callable[[str], list[str]]) -> None:
        if not hosts:
            return
        with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
            list(pool.map(lambda h: step(name, h, argv(h), 180), hosts))

    def stop_argv(h: str) -> list[str]:
        return ["sh", "-c", STOP, "sh", paths[h].data, paths[h].bin]

    # 0. The WAL written up to now reaches the archive (a segment switch on the leader, waited
    #    for): a target seconds ago, or --latest, may still be in the leader's current segment.
    if plan.leader_before and plan.leader_before not in plan.down:
        progress(f"archiving the leader's current WAL (pgbackrest check on {plan.leader_before})")
        started = time.monotonic()
        check = archive_check(env, at, plan.leader_before, remote)
        result.steps.append({"step": "archive the current WAL", "host": check.host,
                             "seconds": round(time.monotonic() - started, 2)})  # fmt: skip
        if check.rc != 0:
            raise RestoreFailed(
                f"pgbackrest check failed on {check.host} ({check.problem()}), so the "
                "archive may not reach the target; nothing was changed. Fix archiving first "
                "(`inkdeploy backup check`, docs/backup.md)."
            )
    # 1. Patroni off everywhere, replicas first, so none of them takes over from the leader.
    replicas = tuple(h for h in (*plan.recreate, plan.restore_on) if h != plan.leader_before)
    each("stop Patroni", replicas, stop_argv)
    if plan.leader_before in paths:
        each("stop Patroni", (str(plan.leader_before),), stop_argv)
    # 2. The old cluster's keys (leader, members, initialize) leave etcd.
    step("remove the cluster from etcd", plan.restore_on,
         ["sh", "-c", REMOVE, "sh", scope, plan.leader_before or ""], 60)  # fmt: skip
    # 3. pgBackRest restores the backup and writes the recovery settings.
    step("pgbackrest restore", plan.restore_on,
         ["runuser", "-u", at.user, "--", "pgbackrest", f"--stanza={plan.stanza}",
          *plan.pgbackrest_args, "restore"], 6 * 3600)  # fmt: skip
    # 4. Replay to the target, promote, stop.
    step("recover and promote", plan.restore_on,
         ["sh", "-c", PROMOTE, "sh", main.data, main.bin, main.port, "3600"], 3700)  # fmt: skip
    # 5. Patroni takes the promoted data directory over as the leader of a new cluster.
    step("start Patroni", plan.restore_on, ["systemctl", "start", "patroni"], 60)
    progress(f"waiting for {plan.restore_on} to lead")
    status = _watch(env, lambda s: _leads(s, plan.restore_on), 180)
    if not _leads(status, plan.restore_on):
        raise RestoreFailed(
            f"{plan.restore_on} was restored, but Patroni there does not lead after 180 s "
            f"({_seen(status)}); see journalctl -u patroni on it. {_left(result.steps)}"
        )
    result.steps.append({"step": "leader elected", "host": plan.restore_on,
                         "seconds": round(time.monotonic() - began, 2)})  # fmt: skip
    # 6. The others: wiped, cloned from the new leader by Patroni (pg_basebackup).
    each("wipe and start Patroni", plan.recreate,
         lambda h: ["sh", "-c", WIPE, "sh", paths[h].data])  # fmt: skip
    # 7. The app answers with the database (its connections to the old server are gone).
    progress("checking the app")
    result.app_checked = _check_app(env)
    result.rto_s = round(time.monotonic() - began, 2)
    result.steps.append({"step": "app answers", "host": "", "seconds": result.rto_s})
    if plan.recreate:
        progress(f"waiting for {', '.join(plan.recreate)} to stream")
        status = _watch(env, lambda s: _streaming(s, plan.recreate), 1800)
        missing = [h for h in plan.recreate if not _streaming(status, (h,))]
        if missing:
            result.problems.append(
                f"{', '.join(missing)} did not stream from {plan.restore_on} within 30 min "
                "(`inkdeploy db status`; `inkdeploy db reinit HOST` to try again)."
            )
        result.steps.append({"step": "replicas streaming", "host": ",".join(plan.recreate),
                             "seconds": round(time.monotonic() - began, 2)})  # fmt: skip
    result.leader_after = status.leader
    result.replicas = [h for h in plan.recreate if _streaming(status, (h,))]
    # 8. WAL of the new timeline reaches the repository.
    progress(f"pgbackrest check on {plan.restore_on}")
    check = archive_check(env, at, plan.restore_on, remote)
    if check.rc != 0:
        result.problems.append(
            f"pgbackrest check failed after the restore: {check.problem()}; WAL is not archived "
            "until it passes (docs/backup.md)."
        )
    remote.command(plan.repo_host, ["systemctl", "start", "--no-block", "pgbackrest-metrics"])


def _member(status: DbStatus, host: str) -> Any:
    return next((m for m in status.members if m.name == host), None)


def _leads(status: DbStatus, host: str) -> bool:
    m = _member(status, host)
    return bool(m and m.role in LEADER_ROLES and m.state == "running")


def _streaming(status: DbStatus, hosts: tuple[str, ...]) -> bool:
    for host in hosts:
        m = _member(status, host)
        if not (m and m.role not in LEADER_ROLES and m.state in ("running", "streaming")
                and m.lag_bytes is not None):  # fmt: skip
            return False
    return True


def _watch(env: Environment, done: Callable[[DbStatus], bool], wait_s: float) -> DbStatus:
    deadline = time.monotonic() + wait_s
    while True:
        status = db_status(env)
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(POLL_S)


def _seen(status: DbStatus) -> str:
    return ", ".join(f"{m.name} {m.role} {m.state}" for m in status.members) or "no member answered"


def _left(steps: list[dict[str, Any]]) -> str:
    done = ", ".join(dict.fromkeys(s["step"] for s in steps)) or "nothing"
    return (
        f"Done so far: {done}. Patroni may be stopped on the db hosts: see docs/backup.md "
        "('A restore stopped half-way') before running it again."
    )


APP_GATE = HttpGate(
    name="app answers with the database",
    expect_json={"checks.db": "ok"},
    retries=120,
    interval_s=1.0,
    timeout_s=5.0,
    max_latency_ms=5000,
)


def _check_app(env: Environment) -> list[str]:
    """GET /healthz on every serving slot until each says its database is ok."""
    if not env.app_hosts:
        return []
    fleet = Session.of(env).read_fleet(tolerate_unreachable=True)
    targets = {
        f"{s.host}:{s.slot}": f"http://{fleet.addresses[s.host]}:{SLOT_PORTS[s.slot]}/healthz"
        for s in fleet.slots.values()
        if s.serving and s.host not in fleet.unreachable
    }
    if not targets:
        raise RestoreFailed(
            "The database is restored, but no app slot serves to check it with; "
            "see `inkdeploy status`."
        )
    with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
        checks = pool.map(lambda kv: check_http(kv[1], APP_GATE, "", kv[0]), targets.items())
        results = dict(zip(targets, checks, strict=True))
    failed = [r.message for r in results.values() if r.outcome != "pass"]
    if failed:
        raise RestoreFailed(
            "The database is restored and Patroni leads, but the app does not answer with it: "
            + failed[0]
        )
    return sorted(results)
