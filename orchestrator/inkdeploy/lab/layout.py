"""Where a lab keeps its files and what its kernel objects are called. Pure."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from inkdeploy.errors import LabError

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
DEFAULT_LAB = "default"


def lab_root() -> Path:
    """All labs' state; override with INKDEPLOY_LAB_ROOT (tests, a larger filesystem)."""
    return Path(os.environ.get("INKDEPLOY_LAB_ROOT", "/var/lib/inkdeploy/lab"))


def cache_root() -> Path:
    """Kept across `lab down`: the base image and the apt caches."""
    return Path(os.environ.get("INKDEPLOY_CACHE", "/var/cache/inkdeploy"))


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise LabError(
            f"Lab name '{name}' is not allowed; use 1 to 10 lower-case letters and digits, "
            "starting with a letter (it becomes part of interface names)."
        )
    return name


@dataclass(frozen=True)
class LabLayout:
    name: str
    root: Path

    @classmethod
    def for_lab(cls, name: str, root: Path | None = None) -> LabLayout:
        check_lab_name(name)
        return cls(name=name, root=(root or lab_root()) / name)

    # Files
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root.parent / f".{self.name}.lock"

    @property
    def ssh_key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "ssh" / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.root / "ssh" / "config"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory" / "hosts.yml"

    @property
    def apt_proxy_dir(self) -> Path:
        return self.root / "apt-cacher-ng"

    @property
    def apt_cache_dir(self) -> Path:
        return cache_root() / "apt-cacher-ng" / self.name

    def host_dir(self, host: str) -> Path:
        return self.root / "hosts" / host

    def merged(self, host: str) -> Path:
        return self.host_dir(host) / "merged"

    def console_log(self, host: str) -> Path:
        return self.host_dir(host) / "console.log"

    # Kernel objects
    @property
    def bridge(self) -> str:
        return f"ink-{self.name}"

    @property
    def nft_table(self) -> str:
        return f"inkdeploy_lab_{self.name}"

    @property
    def machine_prefix(self) -> str:
        return f"ink-{self.name}-"

    def machine(self, host: str) -> str:
        return f"{self.machine_prefix}{host}"

    def veth(self, host: str) -> str:
        """The host-side veth as systemd-nspawn names it (its full name is kept as an altname)."""
        return f"vb-{self.machine(host)}"
