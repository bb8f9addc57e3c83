"""Running controller commands, and the checks made before the lab touches anything."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from inkdeploy.errors import LabError

# Tool -> Debian package that provides it.
REQUIRED_TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ip": "iproute2",
    "nft": "nftables",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "nsenter": "util-linux",
}
MIN_FREE_BYTES = 2 * 1024**3


def run(
    cmd: Sequence[str], *, check: bool = True, input_text: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, input=input_text, timeout=timeout
        )
    except FileNotFoundError:
        raise LabError(f"'{cmd[0]}' is not installed; run 'make deps' to install it.") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"'{' '.join(cmd)}' did not finish within {timeout:.0f} s.") from None
    if check and proc.returncode != 0:
        raise LabError(
            f"'{' '.join(cmd)}' failed with exit code {proc.returncode}.",
            detail=(proc.stderr or proc.stdout).strip()[-2000:],
        )
    return proc


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "The lab needs root (network namespaces, bridges, mounts); run it with sudo or as root."
        )


def missing_tools(tools: Iterable[str] = REQUIRED_TOOLS) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        packages = sorted({REQUIRED_TOOLS[t] for t in missing})
        raise LabError(
            f"Missing {', '.join(missing)}; install the Debian package(s) "
            f"{' '.join(packages)} (or run 'make deps')."
        )


def require_free_space(path: Path, needed: int = MIN_FREE_BYTES) -> None:
    probe = path
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise LabError(
            f"Not enough disk space: {probe} has {free // 2**20} MiB free and the lab needs "
            f"{needed // 2**20} MiB; free some space or set INKDEPLOY_LAB_ROOT and "
            "INKDEPLOY_CACHE to a larger filesystem."
        )


def system_networks(exclude_links: Iterable[str] = ()) -> list[tuple[str, ipaddress.IPv4Network]]:
    """IPv4 networks on this machine's interfaces and routes, with the owning link name."""
    skip = set(exclude_links)
    nets: list[tuple[str, ipaddress.IPv4Network]] = []
    addrs = json.loads(run(["ip", "-j", "-4", "addr", "show"]).stdout or "[]")
    for link in addrs:
        if link.get("ifname") in skip:
            continue
        for a in link.get("addr_info", []):
            nets.append(
                (link["ifname"], ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", False))
            )
    routes = json.loads(run(["ip", "-j", "-4", "route", "show"]).stdout or "[]")
    for r in routes:
        dst, dev = r.get("dst"), r.get("dev", "?")
        if dev in skip or dst in (None, "default"):
            continue
        nets.append((dev, ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", False)))
    return nets


def subnet_conflict(
    subnet: ipaddress.IPv4Network, in_use: Iterable[tuple[str, ipaddress.IPv4Network]]
) -> str | None:
    """The first (link, network) already using part of ``subnet``, as a sentence; None if free."""
    for dev, net in in_use:
        if net.prefixlen == 0:
            continue
        if subnet.overlaps(net):
            return f"{net} on {dev}"
    return None
