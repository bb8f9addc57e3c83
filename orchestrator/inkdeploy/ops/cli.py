"""The on-call commands: parse, call, print (rich for people, JSON for automation).
`db status` and `redis status` are read-only and take no lock; `drain`/`undrain` take it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from inkdeploy.console import friendly, out, print_json
from inkdeploy.deploy import Session
from inkdeploy.deploy_cli import Inventory, Json
from inkdeploy.inventory import load_environment
from inkdeploy.ops.db import db_status, describe_lag
from inkdeploy.ops.drain import DrainResult, drain, undrain
from inkdeploy.ops.etcd import etcd_status
from inkdeploy.ops.maintenance import MaintenanceResult, maintenance_off, maintenance_on
from inkdeploy.ops.options import DryRun, Message
from inkdeploy.ops.redis import redis_status
from inkdeploy.ops.redis_failover import redis_failover

db_app = typer.Typer(no_args_is_help=True, help="PostgreSQL (Patroni) on-call commands.")
redis_app = typer.Typer(no_args_is_help=True, help="Redis (Sentinel) on-call commands.")


@db_app.command("status")
@friendly
def db_status_command(inventory: Inventory, json: Json = False) -> None:
    """Patroni's members: leader, replicas with state and lag (bytes and seconds), sync standby;
    etcd's health and leader; hosts that did not answer within 2 s are named."""
    env = load_environment(inventory, require_app=False)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="etcd") as pool:
        dcs = pool.submit(etcd_status, env)
        status = db_status(env)
        etcd = dcs.result()
    if json:
        print_json({**status.to_dict(), "etcd": etcd.to_dict(),
                    "seconds": round(time.monotonic() - began, 3)})  # fmt: skip
        return
    if not env.groups.get("db"):
        out.print("No hosts in group db.")
        return
    table = Table(title=f"PostgreSQL on {env.name}" + (f" (as {status.seen_by} sees it)"
                                                       if status.seen_by else ""))  # fmt: skip
    for column in ("member", "address", "role", "state", "timeline", "lag"):
        table.add_column(column)
    for m in status.members:
        table.add_row(m.name, m.host, m.role, m.state, str(m.timeline or "-"), describe_lag(m))
    out.print(table)
    mode = "on" if status.synchronous_mode else "off"
    sync = ", ".join(status.sync_standbys) or "none"
    out.print(f"Leader: {status.leader or 'none'}; synchronous mode {mode}, sync standby: {sync}")
    if etcd.size:
        out.print(escape(etcd.describe()), highlight=False)
    _footer({**etcd.unreachable, **status.unreachable}, status.problems + etcd.problems)


@redis_app.command("status")
@friendly
def redis_status_command(inventory: Inventory, json: Json = False) -> None:
    """The master as the sentinels agree on it, each sentinel's answer, the replicas and their
    link state; sentinels that did not answer within 2 s are named."""
    env = load_environment(inventory, require_app=False)
    began = time.monotonic()
    status = redis_status(env)
    if json:
        print_json({**status.to_dict(), "seconds": round(time.monotonic() - began, 3)})
        return
    if not env.groups.get("sentinel"):
        out.print("No hosts in group sentinel.")
        return
    where = f" ({status.master_host})" if status.master_host else ""
    flags = f" [{','.join(status.master_flags)}]" if status.master_flags else ""
    line = f'Master "{status.master_name}": {status.master or "none agreed"}{where}{flags}'
    out.print(escape(line), highlight=False)
    for host, said in status.said.items():
        out.print(escape(f"  sentinel {host}: {said or 'names no master'}"), highlight=False)
    table = Table(title="Replicas")
    for column in ("replica", "host", "flags", "link", "offset"):
        table.add_column(column)
    for r in status.replicas:
        table.add_row(r.address, r.host or "-", ",".join(r.flags), r.link, str(r.offset))
    out.print(table)
    _footer(status.unreachable, status.problems)


@redis_app.command("failover")
@friendly
def redis_failover_command(
    inventory: Inventory,
    dry_run: DryRun = False,
    message: Message = "",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the sentinels to agree on the new master.")
    ] = 30.0,
    json: Json = False,
) -> None:
    """Move the Redis master to a healthy replica through the sentinels (planned work on its
    host): writes are held on the old master until the sentinels agree on the new one, so none
    it acknowledged is lost. Refuses, changing nothing, when the sentinels disagree, fewer than
    a majority answer, or no replica is fit."""
    result = redis_failover(inventory, dry_run=dry_run, message=message, wait_s=wait)
    if json:
        print_json(result.to_dict())
        return
    out.print(escape(result.message), highlight=False)


def _footer(unreachable: dict[str, str], problems: list[str]) -> None:
    for host, why in unreachable.items():
        out.print(f"[yellow]{escape(host)} did not answer: {escape(why)}[/]", highlight=False)
    for problem in problems:
        out.print(f"[red]{escape(problem)}[/]", highlight=False)
    if not problems:
        out.print("[green]No problem seen.[/]")


Host = Annotated[str, typer.Argument(help="The app host (its inventory name).")]


@friendly
def drain_command(
    host: Host,
    inventory: Inventory,
    dry_run: DryRun = False,
    message: Message = "",
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for requests in flight to the host to end.")
    ] = 60.0,
    json: Json = False,
) -> None:
    """Take an app host out of every load balancer (also when it is down), then wait until no
    load balancer has a connection open to it: it is safe to work on it."""
    _print_drain(drain(inventory, host, dry_run=dry_run, message=message, wait_s=wait), json)


@friendly
def undrain_command(
    host: Host, inventory: Inventory, dry_run: DryRun = False, message: Message = "",
    json: Json = False,
) -> None:  # fmt: skip
    """Give a drained app host traffic back, once its slot is healthy and runs the release the
    fleet serves."""
    _print_drain(undrain(inventory, host, dry_run=dry_run, message=message), json)


def _print_drain(result: DrainResult, json: bool) -> None:
    if json:
        print_json(result.to_dict())
        return
    out.print(escape(result.message), highlight=False)


maintenance_app = typer.Typer(
    no_args_is_help=True, help="Freeze the fleet for maintenance (held in the deploy lock)."
)


@maintenance_app.command("on")
@friendly
def maintenance_on_command(
    inventory: Inventory,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why (shown to everyone the freeze stops).")
    ],
    json: Json = False,
) -> None:
    """Hold the deploy lock for maintenance: rollouts, rollbacks and playbooks refuse, saying
    why, until `maintenance off`."""
    session = Session.open(inventory)
    _print_maintenance(maintenance_on(session.lock, message, session.secrets()), json)


@maintenance_app.command("off")
@friendly
def maintenance_off_command(
    inventory: Inventory, message: Message = "", json: Json = False
) -> None:
    """Lift the maintenance freeze (never a lock a rollout holds)."""
    session = Session.open(inventory)
    reason = message or "maintenance over"
    _print_maintenance(maintenance_off(session.lock, reason, session.secrets()), json)


def _print_maintenance(result: MaintenanceResult, json: bool) -> None:
    if json:
        print_json(result.to_dict())
        return
    out.print(escape(result.message), highlight=False)
