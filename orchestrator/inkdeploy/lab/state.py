"""The lab's record of what it created, written atomically after every change."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from inkdeploy.errors import LabError


class HostState(BaseModel):
    address: ipaddress.IPv4Address
    groups: list[str] = Field(default_factory=list)
    partitioned: bool = False
    loss_percent: float | None = None
    delay_ms: int | None = None


class LabState(BaseModel):
    name: str
    topology: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, HostState] = Field(default_factory=dict)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1


def load_state(path: Path) -> LabState | None:
    if not path.exists():
        return None
    try:
        return LabState.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError):
        raise LabError(
            f"The lab state file {path} is damaged; run 'inkdeploy lab down' to clear the lab."
        ) from None


def save_state(path: Path, state: LabState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2) + "\n")
    os.replace(tmp, path)
