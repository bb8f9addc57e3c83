"""Topologies: which hosts a lab has and which inventory groups each belongs to.

Pure code: parse and validate a topology file, allocate addresses. No side effects.
"""

from __future__ import annotations

import ipaddress
import re
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inkdeploy.errors import LabError

# The inventory groups every role and playbook of inkdeploy uses.
KNOWN_GROUPS: tuple[str, ...] = (
    "lb",
    "app",
    "worker",
    "celery_beat",
    "db",
    "etcd",
    "redis",
    "sentinel",
    "monitoring",
    "logging",
    "deploy_lock",
    "backup",
)
# Groups a topology may leave empty: the trio has no room for a backup repository host.
OPTIONAL_GROUPS: frozenset[str] = frozenset({"backup"})

HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# First host address inside a lab subnet; .1 is the controller's bridge (gateway) address.
FIRST_HOST_OFFSET = 10

HostName = Annotated[str, Field(pattern=HOST_NAME_RE.pattern)]


class HostSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(default_factory=list)
    address: ipaddress.IPv4Address | None = None

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: list[str]) -> list[str]:
        unknown = [g for g in groups if g not in KNOWN_GROUPS]
        if unknown:
            raise ValueError(
                f"unknown group(s) {', '.join(unknown)}; use any of {', '.join(KNOWN_GROUPS)}"
            )
        if len(set(groups)) != len(groups):
            raise ValueError("a group is listed twice")
        return groups


class Topology(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[HostName, HostSpec]

    @field_validator("subnet")
    @classmethod
    def _subnet_size(cls, net: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network | None:
        if net is not None and not net.is_private:
            raise ValueError(f"{net} is not a private network; use one from 10.0.0.0/8")
        if net is not None and net.num_addresses < 16:
            raise ValueError(f"{net} is too small; use a /28 or larger (a /24 is usual)")
        return net

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        if not self.hosts:
            raise ValueError("a topology needs at least one host")
        beat = [h for h, spec in self.hosts.items() if "celery_beat" in spec.groups]
        if len(beat) > 1:
            raise ValueError(
                f"celery_beat must be on exactly one host, not {', '.join(beat)} "
                "(two beat schedulers send every periodic task twice)"
            )
        explicit = [spec.address for spec in self.hosts.values() if spec.address is not None]
        if len(set(explicit)) != len(explicit):
            raise ValueError("two hosts have the same address")
        return self

    def groups(self) -> dict[str, list[str]]:
        """Every known group with its member hosts, in topology order (empty groups included)."""
        out: dict[str, list[str]] = {g: [] for g in KNOWN_GROUPS}
        for host, spec in self.hosts.items():
            for g in spec.groups:
                out[g].append(host)
        return out


def builtin_topologies() -> list[str]:
    folder = resources.files("inkdeploy.lab") / "topologies"
    return sorted(p.name.removesuffix(".yml") for p in folder.iterdir() if p.name.endswith(".yml"))


def parse_topology(text: str, source: str) -> Topology:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(f"Topology {source} is not valid YAML: {exc}; fix the file.") from None
    if not isinstance(data, dict):
        raise LabError(f"Topology {source} must be a mapping with 'name' and 'hosts'.")
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'topology'}: {err['msg']}"
            for err in exc.errors()
        )
        raise LabError(f"Topology {source} is invalid: {problems}.") from None


def load_topology(name_or_path: str) -> Topology:
    """Load a built-in topology by name, or a topology file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yml", ".yaml") or "/" in name_or_path:
        if not path.is_file():
            raise LabError(f"Topology file {path} does not exist; give a built-in name or a path.")
        return parse_topology(path.read_text(), str(path))
    resource = resources.files("inkdeploy.lab") / "topologies" / f"{name_or_path}.yml"
    if not resource.is_file():
        raise LabError(
            f"There is no built-in topology '{name_or_path}'; "
            f"use one of {', '.join(builtin_topologies())} or a path to a YAML file."
        )
    return parse_topology(resource.read_text(), f"'{name_or_path}'")


def gateway_of(subnet: ipaddress.IPv4Network) -> ipaddress.IPv4Address:
    return subnet.network_address + 1


def allocate_addresses(
    topology: Topology,
    subnet: ipaddress.IPv4Network,
    previous: dict[str, ipaddress.IPv4Address] | None = None,
) -> dict[str, ipaddress.IPv4Address]:
    """Give every host an address: explicit ones first, then the ones it had, then the next free.

    Hosts that already exist keep their address, so adding a host to a running lab never
    renumbers the others.
    """
    previous = previous or {}
    gateway = gateway_of(subnet)
    usable = [
        a for a in subnet.hosts() if int(a) - int(subnet.network_address) >= FIRST_HOST_OFFSET
    ]
    result: dict[str, ipaddress.IPv4Address] = {}
    taken: set[ipaddress.IPv4Address] = {gateway}

    def claim(host: str, addr: ipaddress.IPv4Address, why: str) -> None:
        if addr not in subnet or addr in (subnet.network_address, subnet.broadcast_address):
            raise LabError(f"Host {host}: {why} address {addr} is not a host address in {subnet}.")
        if addr in taken:
            raise LabError(f"Host {host}: {why} address {addr} is already used in {subnet}.")
        taken.add(addr)
        result[host] = addr

    for host, spec in topology.hosts.items():
        if spec.address is not None:
            claim(host, spec.address, "its")
    for host in topology.hosts:
        if host not in result and host in previous and previous[host] not in taken:
            claim(host, previous[host], "its previous")
    # Addresses of hosts that exist in the lab but not in this topology stay reserved.
    taken.update(a for h, a in previous.items() if h not in topology.hosts)
    free = (a for a in usable if a not in taken)
    for host in topology.hosts:
        if host not in result:
            addr = next(free, None)
            if addr is None:
                raise LabError(
                    f"Subnet {subnet} has no free address left for {host}; use a larger subnet."
                )
            claim(host, addr, "a free")
    return result
