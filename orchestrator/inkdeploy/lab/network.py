"""The lab's bridge, its isolation rules on the controller, and per-host network faults."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time

from inkdeploy.errors import LabError
from inkdeploy.lab.layout import LabLayout
from inkdeploy.lab.procs import cmdline, iter_pids
from inkdeploy.lab.system import run


def link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def ensure_bridge(layout: LabLayout, gateway: ipaddress.IPv4Address, prefix: int) -> None:
    br = layout.bridge
    if not link_exists(br):
        run(["ip", "link", "add", br, "type", "bridge"])
    want = f"{gateway}/{prefix}"
    have = json.loads(run(["ip", "-j", "-4", "addr", "show", "dev", br]).stdout or "[]")
    addrs = {f"{a['local']}/{a['prefixlen']}" for link in have for a in link.get("addr_info", [])}
    for other in addrs - {want}:
        run(["ip", "addr", "del", other, "dev", br])
    if want not in addrs:
        run(["ip", "addr", "add", want, "dev", br])
    run(["ip", "link", "set", br, "up"])
    _ensure_isolation(layout)


def _ensure_isolation(layout: LabLayout) -> None:
    """Nothing is forwarded between the lab bridge and any other interface of the controller.

    Hosts have no default route either; this holds even if someone enables ip_forward.
    """
    br, table = layout.bridge, layout.nft_table
    rules = f"""
table inet {table} {{
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{br}" oifname != "{br}" counter drop
    oifname "{br}" iifname != "{br}" counter drop
  }}
}}
"""
    run(["nft", "delete", "table", "inet", table], check=False)
    run(["nft", "-f", "-"], input_text=rules)


def remove_bridge(layout: LabLayout) -> None:
    run(["nft", "delete", "table", "inet", layout.nft_table], check=False)
    if link_exists(layout.bridge):
        run(["ip", "link", "del", layout.bridge])


def host_link(layout: LabLayout, host: str) -> str | None:
    """The real name of a host's controller-side veth (nspawn shortens long names)."""
    proc = run(["ip", "-j", "link", "show", "dev", layout.veth(host)], check=False)
    if proc.returncode != 0:
        return None
    links = json.loads(proc.stdout or "[]")
    return links[0]["ifname"] if links else None


def lab_links(layout: LabLayout) -> list[str]:
    """Every veth on the controller that belongs to this lab, found by its altname."""
    links = json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")
    prefix = layout.veth("")
    return [
        link["ifname"]
        for link in links
        if link["ifname"].startswith(prefix)
        or any(a.startswith(prefix) for a in link.get("altnames", []))
    ]


def set_partitioned(layout: LabLayout, host: str, partitioned: bool) -> None:
    """Pull (or plug back) the host's network cable: its veth on the controller goes down."""
    link = host_link(layout, host)
    if link is None:
        raise LabError(
            f"Host {host} has no network link; is it running? Try 'inkdeploy lab start'."
        )
    run(["ip", "link", "set", link, "down" if partitioned else "up"])


def _loss_table(layout: LabLayout, host: str) -> str:
    return f"inkdeploy_loss_{layout.name}_{host.replace('-', '_')}"


def set_loss(layout: LabLayout, host: str, percent: float | None) -> None:
    """Drop a share of the packets the host sends, on the controller side of its veth.

    nftables' numgen makes the random choice; the host's own firewall cannot see or undo it.
    """
    table = _loss_table(layout, host)
    run(["nft", "delete", "table", "netdev", table], check=False)
    if not percent:
        return
    link = host_link(layout, host)
    if link is None:
        raise LabError(
            f"Host {host} has no network link; is it running? Try 'inkdeploy lab start'."
        )
    per_mille = round(percent * 10)
    # numgen yields 0..999: "< 1000" is not a valid comparison, so 100% is a plain drop.
    match = "" if per_mille >= 1000 else f"numgen random mod 1000 < {per_mille} "
    rules = f"""
table netdev {table} {{
  chain from_host {{
    type filter hook ingress device "{link}" priority 0; policy accept;
    {match}counter drop
  }}
}}
"""
    run(["nft", "-f", "-"], input_text=rules)


def remove_loss_tables(layout: LabLayout) -> None:
    out = run(["nft", "-j", "list", "tables", "netdev"], check=False).stdout
    try:
        items = json.loads(out or "{}").get("nftables", [])
    except ValueError:
        items = []
    prefix = f"inkdeploy_loss_{layout.name}_"
    for item in items:
        name = item.get("table", {}).get("name", "")
        if name.startswith(prefix):
            run(["nft", "delete", "table", "netdev", name], check=False)


def netem_supported(pid: int) -> bool:
    """Whether this kernel has the netem qdisc (some cloud kernels leave it out)."""
    probe = run(
        ["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "replace", "dev", "lo", "root", "netem"],
        check=False,
    )
    if probe.returncode == 0:
        run(
            ["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "del", "dev", "lo", "root"],
            check=False,
        )
        return True
    return False


# Without netem, packets leaving host0 go through netfilter queue 0 of the host's own network
# namespace, where inkdeploy.lab.delayd (on the controller) releases each after the delay.
_QUEUE_RULE = ["POSTROUTING", "-o", "host0", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"]


def _iptables(pid: int, *args: str, check: bool = True) -> None:
    run(
        ["nsenter", "-t", str(pid), "-n", "iptables-legacy", "-w", "-t", "mangle", *args],
        check=check,
    )


def _delayd_label(layout: LabLayout, host: str) -> str:
    return f"{layout.machine(host)}-delay"


def stop_delayd(layout: LabLayout, host: str | None = None) -> None:
    """Stop the delay daemon of one host, or of every host of the lab."""
    label = _delayd_label(layout, host) if host else layout.machine_prefix
    for pid in iter_pids():
        args = cmdline(pid)
        if "inkdeploy.lab.delayd" in args and any(a.startswith(label) for a in args):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _start_delayd(layout: LabLayout, host: str, pid: int, delay_ms: int) -> None:
    log = layout.host_dir(host) / "delayd.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            ["nsenter", "-t", str(pid), "-n", sys.executable, "-m", "inkdeploy.lab.delayd",
             "--queue", "0", "--delay-ms", str(delay_ms), "--label", _delayd_label(layout, host)],
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if "ready" in log.read_text():
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise LabError(
        f"The packet delay helper for {host} did not start; its output is below.",
        detail=log.read_text()[-2000:],
    )


def set_delay(layout: LabLayout, host: str, pid: int, delay_ms: int | None) -> None:
    """Delay every packet the host sends by ``delay_ms``: tc netem where the kernel has it,
    otherwise a netfilter queue drained by inkdeploy.lab.delayd. None removes the delay."""
    run(
        ["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "del", "dev", "host0", "root"], check=False
    )
    _iptables(pid, "-D", *_QUEUE_RULE, check=False)
    stop_delayd(layout, host)
    if not delay_ms:
        return
    if netem_supported(pid):
        run(["nsenter", "-t", str(pid), "-n", "tc", "qdisc", "replace", "dev", "host0", "root",
             "netem", "delay", f"{delay_ms}ms"])  # fmt: skip
        return
    _start_delayd(layout, host, pid, delay_ms)
    _iptables(pid, "-A", *_QUEUE_RULE)
