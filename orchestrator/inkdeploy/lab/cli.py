"""`inkdeploy lab ...`: parse options, call the manager, print tables or JSON."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from inkdeploy.console import friendly, out, print_json
from inkdeploy.errors import LabError
from inkdeploy.lab import manager
from inkdeploy.lab.layout import DEFAULT_LAB
from inkdeploy.lab.topology import builtin_topologies

lab_app = typer.Typer(
    no_args_is_help=True,
    help="A fleet of local Debian 12 hosts (systemd-nspawn) to test and rehearse on.",
)

LabOpt = Annotated[
    str,
    typer.Option("--lab", envvar="INKDEPLOY_LAB", help="Which lab (several can run side by side)."),
]
HostArg = Annotated[str, typer.Argument(help="Host name, as in 'inkdeploy lab status'.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _log(msg: str) -> None:
    out.print(f"[dim]{msg}[/]", highlight=False)


@lab_app.command()
@friendly
def up(
    lab: LabOpt = DEFAULT_LAB,
    topology: Annotated[
        str, typer.Option(help=f"Built-in ({', '.join(builtin_topologies())}) or a YAML path.")
    ] = "full",
    subnet: Annotated[
        str | None, typer.Option(help="Private IPv4 network for the lab, e.g. 10.77.0.0/24.")
    ] = None,
    inventory: Annotated[
        Path | None, typer.Option(help="Also write the Ansible inventory here.")
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Boot the hosts of a topology (running hosts are kept) and write the inventory."""
    net = None
    if subnet:
        try:
            net = ipaddress.IPv4Network(subnet)
        except ValueError:
            raise LabError(
                f"'{subnet}' is not an IPv4 network; write it like 10.77.0.0/24."
            ) from None
    result = manager.up(lab, topology, net, inventory, log=(lambda _: None) if json else _log)
    if json:
        print_json(
            {
                "lab": lab,
                "subnet": str(result.state.subnet),
                "booted": result.booted,
                "kept": result.kept,
                "repaired": result.repaired,
                "inventory": str(result.inventory),
                "seconds": round(result.seconds, 2),
            }
        )
        return
    for host, units in result.repaired.items():
        out.print(f"[yellow]{host}: restarted unit(s) that failed at boot: {', '.join(units)}[/]")
    out.print(
        f"Lab '{lab}' is up: {len(result.state.hosts)} host(s) on {result.state.subnet} "
        f"({len(result.booted)} booted, {len(result.kept)} already running) "
        f"in {result.seconds:.1f} s."
    )
    out.print(f"Inventory: {result.inventory}")


@lab_app.command()
@friendly
def down(
    lab: LabOpt = DEFAULT_LAB,
    all_labs: Annotated[bool, typer.Option("--all", help="Every lab on this machine.")] = False,
) -> None:
    """Remove everything a lab created: hosts, mounts, links, bridge, files."""
    labs = manager.known_labs() if all_labs else [lab]
    removed = [name for name in labs if manager.down(name, log=_log)]
    if removed:
        out.print(f"Removed lab(s): {', '.join(removed)}.")
    else:
        out.print("Nothing to remove: no lab is up.")


@lab_app.command()
@friendly
def status(
    lab: LabOpt = DEFAULT_LAB,
    json: JsonOpt = False,
    fast: Annotated[bool, typer.Option(help="Do not ask each host for its systemd state.")] = False,
) -> None:
    """Show the lab's hosts: address, groups, power, systemd state, network faults."""
    state, rows = manager.status(lab, probe=not fast)
    if json:
        print_json(
            {
                "lab": lab,
                "up": state is not None,
                "subnet": str(state.subnet) if state else None,
                "topology": state.topology if state else None,
                "hosts": [asdict(r) for r in rows],
            }
        )
        return
    if state is None:
        out.print(f"Lab '{lab}' is not up; start it with 'inkdeploy lab up'.")
        return
    table = Table(title=f"lab '{lab}' ({state.topology}, {state.subnet})")
    for col in ("host", "address", "groups", "power", "systemd", "network"):
        table.add_column(col)
    colours = {"running": "green", "degraded": "yellow", "stopped": "red"}
    for r in rows:
        table.add_row(
            r.name,
            r.address,
            ", ".join(r.groups),
            f"[{colours.get(r.power, 'white')}]{r.power}[/]",
            f"[{colours.get(r.system, 'white')}]{r.system}[/]",
            r.network,
        )
    out.print(table)


@lab_app.command()
@friendly
def ssh(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Open a shell on a host."""
    argv = manager.ssh_argv(lab, host)
    os.execvp(argv[0], argv)


@lab_app.command(
    "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
@friendly
def exec_(ctx: typer.Context, host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Run a command on a host: inkdeploy lab exec HOST -- CMD ARGS..."""
    command = [a for a in ctx.args if a != "--"] if ctx.args[:1] == ["--"] else ctx.args
    if not command:
        raise LabError("Give the command after '--', e.g. 'inkdeploy lab exec db1 -- uptime'.")
    rc = subprocess.call(manager.ssh_argv(lab, host, command))
    raise typer.Exit(rc)


@lab_app.command()
@friendly
def kill(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Hard power cut: every process on the host dies at once."""
    manager.kill(lab, host)
    out.print(f"{host}: power cut.")


@lab_app.command()
@friendly
def stop(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Clean shutdown of a host."""
    manager.stop(lab, host)
    out.print(f"{host}: shut down.")


@lab_app.command()
@friendly
def start(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Boot a stopped or killed host and wait until it is ready."""
    repaired = manager.start(lab, host)
    extra = f" (restarted failed unit(s): {', '.join(repaired)})" if repaired else ""
    out.print(f"{host}: running{extra}.")


@lab_app.command()
@friendly
def partition(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Cut the host off the lab network (its cable is pulled; it keeps running)."""
    manager.partition(lab, host, cut=True)
    out.print(f"{host}: partitioned.")


@lab_app.command()
@friendly
def heal(host: HostArg, lab: LabOpt = DEFAULT_LAB) -> None:
    """Restore the host's network: undo partition and slow."""
    manager.partition(lab, host, cut=False)
    out.print(f"{host}: network restored.")


def parse_delay(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s)?\s*", text)
    if not m:
        raise LabError(f"Delay '{text}' is not understood; write it like 200ms or 1s.")
    value = int(m.group(1))
    return value * 1000 if m.group(2) == "s" else value


def parse_loss(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%?\s*", text)
    if not m or not 0 <= float(m.group(1)) <= 100:
        raise LabError(f"Loss '{text}' is not understood; write a percentage like 5%.")
    return float(m.group(1))


@lab_app.command()
@friendly
def slow(
    host: HostArg,
    lab: LabOpt = DEFAULT_LAB,
    delay: Annotated[str | None, typer.Option(help="Added latency, e.g. 200ms.")] = None,
    loss: Annotated[str | None, typer.Option(help="Share of packets dropped, e.g. 5%.")] = None,
) -> None:
    """Degrade a host's network: delay and/or lose packets it sends (an option left out is
    cleared). 'heal' undoes it."""
    if delay is None and loss is None:
        raise LabError("Say how slow: give --delay (e.g. 200ms) and/or --loss (e.g. 5%).")
    delay_ms = parse_delay(delay) if delay else None
    loss_pct = parse_loss(loss) if loss else None
    manager.slow(lab, host, delay_ms, loss_pct)
    parts = [f"delay {delay_ms}ms"] if delay_ms else []
    parts += [f"loss {loss_pct:g}%"] if loss_pct else []
    out.print(f"{host}: {', '.join(parts)}.")


@lab_app.command()
@friendly
def web(
    lab: LabOpt = DEFAULT_LAB,
    ca: Annotated[
        Path | None,
        typer.Option(help="CA certificate of the LB (default: the lab inventory's pki/nginx_lb)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Print the load balancer's HTTPS URL and make one request through it."""
    from inkdeploy.lab import web as lab_web
    from inkdeploy.lab.inventory import project_inventory_path
    from inkdeploy.lab.layout import LabLayout

    if ca is None:
        default_inventory = project_inventory_path() if lab == DEFAULT_LAB else None
        inventory = default_inventory or LabLayout.for_lab(lab).inventory
        ca = inventory.parent / "pki" / "nginx_lb" / "ca.crt"
    result = lab_web.check(lab_web.lb_address(lab), ca)
    if json:
        print_json(result.to_dict())
        return
    out.print(
        f"[bold]{result.url}[/] answered {result.status} over {result.tls}, "
        f"app version {result.version or '?'}"
    )
    out.print(f"Try it: curl --cacert {result.ca} {result.url}", highlight=False)
