"""The internal CAs the roles keep on the controller (role internal_ca), as the orchestrator's
probes use them: where a CA certificate is, and a TLS context that trusts only it.

A role's CA directory is its ``*_pki_dir`` variable when the inventory sets it, else
``pki/<name>`` next to the inventory (the roles' default ``{{ inventory_dir }}/pki/<name>``):
etcd's for etcd, postgresql's for PostgreSQL and Patroni's REST API.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inkdeploy.inventory import Environment


class MissingCA(Exception):
    """A CA certificate a probe must verify against is not on the controller."""


def ca_file(env: Environment, configured: Any, name: str) -> Path:
    """CONFIGURED/ca.crt (the inventory's *_pki_dir) when set, else pki/NAME/ca.crt next to the
    inventory."""
    if configured:
        return Path(str(configured)) / "ca.crt"
    inventory = env.inventory if env.inventory.is_dir() else env.inventory.parent
    return inventory / "pki" / name / "ca.crt"


def lazy_context(ca: Path, service: str, variable: str) -> Callable[[], ssl.SSLContext]:
    """A TLS context trusting only CA, built once on first use (inside the probes, so a missing
    file is an observation with a reason, not a crash). SERVICE and VARIABLE name the role and
    its pki variable in that reason."""
    built: list[ssl.SSLContext] = []

    def context() -> ssl.SSLContext:
        if not built:
            if not ca.is_file():
                raise MissingCA(
                    f"{service}'s CA certificate {ca} is missing on this machine (the {service} "
                    f"role creates it next to the inventory, or where {variable} says)"
                )
            built.append(ssl.create_default_context(cafile=str(ca)))
        return built[0]

    return context
