"""`inkdeploy workers restart`: parse, call, print (rich for people, JSON for automation)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from inkdeploy.console import friendly, out, print_json
from inkdeploy.deploy_cli import Inventory, Json
from inkdeploy.inventory import load_environment
from inkdeploy.ops.options import DryRun, Message, NoLock
from inkdeploy.ops.workers import WorkersResult, restart_workers

workers_app = typer.Typer(no_args_is_help=True, help="Celery worker on-call commands.")

Queue = Annotated[
    list[str] | None,
    typer.Option("--queue", help="Only the workers of this queue (repeat for more)."),
]
Host = Annotated[
    list[str] | None,
    typer.Option("--host", help="Only this worker host (repeat for more)."),
]
Beat = Annotated[
    bool,
    typer.Option("--beat", help="Restart beat too, on its host (harmless: it only schedules)."),
]
Wait = Annotated[
    float | None,
    typer.Option(
        help="Seconds each host's workers get to answer a ping after their start "
        "(default: the role's celery_ping_retries). The warm shutdown before it is bounded by "
        "celery_stop_timeout.",
    ),
]


@workers_app.command("restart")
@friendly
def restart_command(
    inventory: Inventory,
    queue: Queue = None,
    host: Host = None,
    beat: Beat = False,
    dry_run: DryRun = False,
    no_lock: NoLock = False,
    wait: Wait = None,
    message: Message = "",
    json: Json = False,
) -> None:
    """Restart the Celery workers one host at a time: a warm shutdown (running tasks finish),
    then the next host only once every restarted worker answers a ping through the broker. The
    other hosts keep serving the queues. Refuses, restarting nothing, when a host does not
    answer; stops at the first host whose workers do not come back."""
    env = load_environment(inventory, require_app=False)
    result = restart_workers(env, queues=queue, hosts=host, beat=beat, dry_run=dry_run,
                             no_lock=no_lock, wait_s=wait, message=message)  # fmt: skip
    if json:
        print_json(result.to_dict())
        return
    _print(result)


def _print(result: WorkersResult) -> None:
    for h in result.hosts if not result.dry_run else []:
        stop = f"{h.stop_s:.1f} s" if h.stop_s is not None else "-"
        ping = f"{h.ping_s:.1f} s" if h.ping_s is not None else "-"
        out.print(
            escape(f"  {h.host}: {', '.join(h.units)} {h.state}: warm shutdown {stop}, "
                   f"ping answered {ping} after the start ({h.seconds:.1f} s in all)"),
            highlight=False,
        )  # fmt: skip
    for host, why in result.skipped.items():
        out.print(escape(f"  {host}: left alone ({why})"), highlight=False)
    out.print(escape(result.message), highlight=False)
    if not result.dry_run and result.lock != "held":
        out.print(f"[yellow]Deploy lock: {escape(result.lock)}.[/]", highlight=False)
