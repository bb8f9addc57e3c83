"""`inkdeploy backup now | list | check` and `inkdeploy restore`: parse, confirm, call, print."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from inkdeploy.console import friendly, out, print_json
from inkdeploy.deploy_cli import Inventory, Json
from inkdeploy.inventory import load_environment
from inkdeploy.ops.backup import BackupError, RestorePlan, stamp
from inkdeploy.ops.backup_run import backup_now, check, read_repo
from inkdeploy.ops.options import DryRun, Message, NoLock
from inkdeploy.ops.restore import prepare, restore

backup_app = typer.Typer(no_args_is_help=True, help="PostgreSQL backups (pgBackRest).")

Kind = Literal["full", "diff", "incr"]
TO_HELP = 'Point in time, e.g. "2026-12-06 21:03:04" (UTC unless a zone is given).'


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@backup_app.command("now")
@friendly
def now_command(
    inventory: Inventory,
    type: Annotated[Kind, typer.Option("--type", help="full, diff or incr.")] = "full",
    json: Json = False,
) -> None:
    """Take a backup now, on the repository host (from a replica where there is one), and wait
    for it. A diff or incr without any full backup becomes a full one."""
    env = load_environment(inventory, require_app=False)
    result = backup_now(env, type)
    if json:
        print_json(result.to_dict())
        return
    b = result.backup
    if b is None:  # backup_now raises before this
        return
    out.print(
        escape(
            f"Backup {b.label} ({b.type}) taken on {result.repo_host} in {b.seconds:.0f} s: "
            f"database {_size(b.size)}, {_size(b.repo_size)} added to the repository. "
            f"Restorable from {stamp(b.stop)} on."
        ),
        highlight=False,
    )
    if result.message:
        out.print(f"[yellow]{escape(result.message)}[/]", highlight=False)


@backup_app.command("list")
@friendly
def list_command(inventory: Inventory, json: Json = False) -> None:
    """The backups in the repository, oldest first, and the archived WAL range."""
    env = load_environment(inventory, require_app=False)
    at, repo = read_repo(env)
    if json:
        print_json({"repo_host": at.repo_host, **repo.to_dict()})
        return
    table = Table(title=f"Backups of {repo.stanza} on {at.repo_host} ({repo.status})")
    for column in ("label", "type", "ended (UTC)", "took", "database", "added"):
        table.add_column(column, no_wrap=column in ("label", "ended (UTC)"))
    for s in sorted(repo.sets, key=lambda s: s.stop):
        table.add_row(
            s.label + (" [red](errors)[/]" if s.error else ""),
            s.type,
            stamp(s.stop)[:19],
            f"{s.seconds:.0f} s",
            _size(s.size),
            _size(s.repo_size),
        )
    out.print(table)
    if repo.good:
        out.print(
            escape(
                f"A restore can reach any point from {stamp(repo.good[0].stop)} to the newest "
                f"archived WAL ({repo.wal_max or 'none'})."
            ),
            highlight=False,
        )


@backup_app.command("check")
@friendly
def check_command(
    inventory: Inventory,
    max_age: Annotated[
        float, typer.Option("--max-age", help="Hours the newest good backup may be old.")
    ] = 26.0,
    json: Json = False,
) -> None:
    """WAL reaches the repository (pgbackrest check forces a segment switch on the primary and
    waits for it there), the stanza is ok and the newest good backup is recent enough."""
    env = load_environment(inventory, require_app=False)
    result = check(env, max_age)
    if json:
        print_json(result.to_dict())
    else:
        if result.newest is not None and result.newest_age_s is not None:
            out.print(
                escape(
                    f"Newest good backup: {result.newest.label} ({result.newest.type}), "
                    f"{result.newest_age_s / 3600:.1f} h old."
                ),
                highlight=False,
            )
        if result.ok:
            out.print(
                escape(
                    f"Archiving works and the repository on {result.repo_host} is ok "
                    f"({result.seconds:.1f} s)."
                ),
                highlight=False,
            )
        for problem in result.problems:
            out.print(f"[red]{escape(problem)}[/]", highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _confirm(plan: RestorePlan) -> None:
    if not sys.stdin.isatty():
        raise BackupError(f"{plan.summary} Pass --yes to confirm; nothing was changed.")
    if not typer.confirm(f"{plan.summary} Go on?", default=False):
        raise BackupError("Not confirmed; nothing was changed.")


def restore_command(
    inventory: Inventory,
    to: Annotated[
        str | None,
        typer.Option("--to", help=TO_HELP),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Restore everything the archive holds.")
    ] = False,
    dry_run: DryRun = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    no_lock: NoLock = False,
    message: Message = "",
    json: Json = False,
) -> None:
    """Restore the PostgreSQL cluster from the pgBackRest repository to a point in time (or the
    newest archived WAL): Patroni stops everywhere, one member is restored and leads, the others
    are cloned from it, the app must answer. Every write after the target is lost."""
    began = time.monotonic()
    if (to is None) == (not latest):
        raise BackupError('Give either --to "TIME" or --latest.')
    env = load_environment(inventory, require_app=False)
    plan = prepare(env, to)
    if dry_run:
        if json:
            print_json({"dry_run": True, "plan": plan.to_dict()})
            return
        out.print(escape(f"Would: {plan.summary}"), highlight=False)
        for number, text in enumerate(plan.steps, 1):
            out.print(escape(f"  {number}. {text}"), highlight=False)
        return
    if not yes:
        _confirm(plan)
    progress = (lambda _: None) if json else (lambda text: out.print(f"[dim]{escape(text)}[/]"))
    result = restore(env, plan, no_lock=no_lock, message=message, began=began, progress=progress)
    if json:
        print_json(result.to_dict())
        return
    replicas = f"; {', '.join(result.replicas)} stream from it" if result.replicas else ""
    out.print(
        escape(
            f"Restored {'to ' + stamp(plan.target) if plan.target else 'to the newest WAL'} "
            f"from {plan.backup.label}: {result.leader_after} leads{replicas}; the app answered "
            f"after {result.rto_s:.0f} s (RTO), all done in {result.seconds:.0f} s."
        ),
        highlight=False,
    )
    for problem in result.problems:
        out.print(f"[yellow]{escape(problem)}[/]", highlight=False)
