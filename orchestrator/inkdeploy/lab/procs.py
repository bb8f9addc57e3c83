"""Finding and signalling the lab's processes through /proc (the controller has no systemd)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pid_alive(pid: int, expect: str | None = None) -> bool:
    """True if ``pid`` runs and (when given) ``expect`` appears in its command line."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie has exited
        return False
    return expect is None or any(expect in part for part in cmdline(pid))


def iter_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def find_nspawn(machine_prefix: str) -> dict[str, int]:
    """Running systemd-nspawn processes whose --machine starts with the prefix: machine -> pid."""
    found: dict[str, int] = {}
    for pid in iter_pids():
        args = cmdline(pid)
        if not args or not args[0].endswith("systemd-nspawn"):
            continue
        for arg in args:
            if arg.startswith("--machine=") and arg[len("--machine=") :].startswith(machine_prefix):
                found[arg[len("--machine=") :]] = pid
    return found


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def container_init(nspawn_pid: int) -> int | None:
    """PID (in the controller's namespace) of the container's PID 1, the host's systemd."""
    for child in children(nspawn_pid):
        try:
            status = Path(f"/proc/{child}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            # NSpid lists the pid in each nested namespace; the container's init is 1 in its own.
            if line.startswith("NSpid:") and line.split()[-1] == "1":
                return child
    return None
