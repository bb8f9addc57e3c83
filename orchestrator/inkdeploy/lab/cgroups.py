"""A cgroup of its own for each lab host.

The controller has no systemd, so systemd-nspawn --keep-unit puts every container in the
caller's cgroup. Hosts booted side by side then share one cgroup tree and their systemds race
over it (units fail with status 219/CGROUP). Starting each nspawn in its own cgroup fixes that.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def hierarchies() -> list[Path]:
    """The trees nspawn and the hosts' systemd use: on a hybrid setup both the named v1
    hierarchy and the unified one (nspawn takes its own path from the latter); on pure v2 the
    single tree."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return [
        CGROUP_ROOT / sub
        for sub in ("systemd", "unified")
        if (CGROUP_ROOT / sub / "cgroup.procs").exists()
    ]


def enter(lab: str, host: str) -> None:
    """Move the calling process into the host's cgroup (between fork and exec of nspawn)."""
    for base in hierarchies():
        path = base / "inkdeploy" / lab / host
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove(lab: str) -> None:
    """Remove the lab's (now empty) cgroups, deepest first."""
    for base in hierarchies():
        top = base / "inkdeploy" / lab
        if not top.is_dir():
            continue
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
