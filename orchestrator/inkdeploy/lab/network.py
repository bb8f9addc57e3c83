"""The lab's bridge, its isolation rules on the controller, and per-host network faults."""

from __future__ import annotations

import ipaddress
import json

from inkdeploy.errors import LabError
from inkdeploy.lab.layout import LabLayout
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


def set_delay(pid: int, host: str, delay_ms: int | None) -> None:
    """Delay every packet the host sends by ``delay_ms`` (tc netem on its interface)."""
    base = ["nsenter", "-t", str(pid), "-n", "tc", "qdisc"]
    if not delay_ms:
        run([*base, "del", "dev", "host0", "root"], check=False)
        return
    if not netem_supported(pid):
        raise LabError(
            "This kernel has no netem queueing discipline (CONFIG_NET_SCH_NETEM), so 'lab slow' "
            "cannot add delay here; --loss works without it."
        )
    run([*base, "replace", "dev", "host0", "root", "netem", "delay", f"{delay_ms}ms"])
