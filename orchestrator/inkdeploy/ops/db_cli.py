"""`inkdeploy db switchover | failover | reinit | pause | resume`: parse, confirm, run, print.

Switchover, pause and resume are safe to run as typed. Failover to a member that is not a sync
standby and reinit can lose data, so they ask first (or take `--yes`; without a terminal to ask
on they refuse rather than guess).
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Annotated

import typer
from rich.markup import escape

from inkdeploy.console import friendly, out, print_json
from inkdeploy.deploy_cli import Inventory, Json
from inkdeploy.inventory import Environment, load_environment
from inkdeploy.ops import db_actions
from inkdeploy.ops.cli import db_app
from inkdeploy.ops.db import db_status
from inkdeploy.ops.db_plan import (
    DbPlan,
    DbRefused,
    plan_failover,
    plan_pause,
    plan_reinit,
    plan_switchover,
)
from inkdeploy.ops.options import DryRun, Message, NoLock

Wait = Annotated[float, typer.Option(help="Seconds to wait for the cluster to show the result.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
TO_HELP = "The member to hand over to (default: the sync standby, or the least lagging replica)."
Member = Annotated[str, typer.Argument(help="The db host (its Patroni member name).")]


def _go(
    env: Environment,
    planner: db_actions.Planner,
    *,
    dry_run: bool,
    no_lock: bool,
    wait: float,
    message: str,
    json: bool,
    yes: bool = True,
) -> None:
    if not dry_run and not yes:
        _confirm(planner(db_status(env)))
    result = db_actions.run(env, planner, dry_run=dry_run, no_lock=no_lock, wait_s=wait,
                            message=message)  # fmt: skip
    if json:
        print_json(result.to_dict())
        return
    if result.dry_run:
        out.print(escape(f"Would: {result.summary}"), highlight=False)
        return
    out.print(escape(result.message), highlight=False)
    if result.lock != "held" and result.changed:
        out.print(f"[yellow]Deploy lock: {escape(result.lock)}.[/]", highlight=False)


def _confirm(plan: DbPlan) -> None:
    """Ask before an operation that can lose data; refuse without a terminal."""
    if plan.noop or not plan.destructive:
        return
    if not sys.stdin.isatty():
        raise DbRefused(f"{plan.summary} Pass --yes to confirm; nothing was changed.")
    if not typer.confirm(f"{plan.summary} Go on?", default=False):
        raise DbRefused("Not confirmed; nothing was changed.")


@db_app.command("switchover")
@friendly
def switchover_command(
    inventory: Inventory,
    to: Annotated[str | None, typer.Option("--to", help=TO_HELP)] = None,
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = 60.0,
    message: Message = "",
    json: Json = False,
) -> None:
    """Hand the leader role to a healthy replica (a sync standby in synchronous mode) and bring
    the old leader back as its replica. Refused when no such replica exists."""
    env = load_environment(inventory, require_app=False)
    _go(env, partial(plan_switchover, to=to), dry_run=dry_run, no_lock=no_lock,
        wait=wait, message=message, json=json)  # fmt: skip


@db_app.command("failover")
@friendly
def failover_command(
    inventory: Inventory,
    to: Annotated[str, typer.Option("--to", help="The member to promote.")],
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = 60.0,
    message: Message = "",
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Promote the named member now, also with the leader down and the cluster paused (where
    Patroni does not fail over on its own). Asks first when it may lose commits."""
    env = load_environment(inventory, require_app=False)
    _go(env, partial(plan_failover, to=to), dry_run=dry_run, no_lock=no_lock,
        wait=wait, message=message, json=json, yes=yes)  # fmt: skip


@db_app.command("reinit")
@friendly
def reinit_command(
    host: Member,
    inventory: Inventory,
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = 300.0,
    message: Message = "",
    yes: Yes = False,
    json: Json = False,
) -> None:
    """Re-create a broken replica from the leader (its data directory is wiped first)."""
    env = load_environment(inventory, require_app=False)
    scope = db_actions.scope_of(env)
    _go(env, partial(plan_reinit, host=host, scope=scope), dry_run=dry_run, no_lock=no_lock,
        wait=wait, message=message, json=json, yes=yes)  # fmt: skip


@db_app.command("pause")
@friendly
def pause_command(
    inventory: Inventory,
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = 30.0,
    message: Message = "",
    json: Json = False,
) -> None:
    """Maintenance mode: Patroni keeps the leader but fails nothing over until `db resume`."""
    env = load_environment(inventory, require_app=False)
    _go(env, partial(plan_pause, pause=True), dry_run=dry_run,
        no_lock=no_lock, wait=wait, message=message, json=json)  # fmt: skip


@db_app.command("resume")
@friendly
def resume_command(
    inventory: Inventory,
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = 30.0,
    message: Message = "",
    json: Json = False,
) -> None:
    """Leave maintenance mode: automatic failover on again."""
    env = load_environment(inventory, require_app=False)
    _go(env, partial(plan_pause, pause=False), dry_run=dry_run,
        no_lock=no_lock, wait=wait, message=message, json=json)  # fmt: skip
