"""The lab's web entry point: the load balancer's HTTPS URL and one real request through it."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

from inkdeploy.errors import LabError
from inkdeploy.lab import manager


@dataclass(frozen=True)
class WebCheck:
    url: str
    ca: str
    status: int
    tls: str
    version: str | None
    lb_health: dict[str, object]

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def lb_address(lab: str, group: str = "lb") -> str:
    """Address of the first running host of GROUP in LAB."""
    state, rows = manager.status(lab, probe=False)
    if state is None:
        raise LabError(f"Lab '{lab}' is not up; start it with 'inkdeploy lab up'.")
    for row in rows:
        if group in row.groups and row.power == "running":
            return row.address
    raise LabError(f"Lab '{lab}' has no running host in group '{group}'; its topology has no LB.")


def check(address: str, ca: Path, timeout: float = 10) -> WebCheck:
    """GET / and the app's health through the LB, verifying its certificate against CA."""
    if not ca.is_file():
        raise LabError(
            f"No CA certificate at {ca}: converge the lab first (make demo, or "
            "ansible-playbook playbooks/site.yml), or pass --ca."
        )
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(address, 443, context=context, timeout=timeout)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        tls = conn.sock.version() or "?"
        conn.request("GET", "/healthz", headers={"Accept": "application/json"})
        health_response = conn.getresponse()
        health = json.loads(health_response.read() or b"{}")
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
        raise LabError(
            f"https://{address}/ did not answer properly ({exc.__class__.__name__}: {exc}); "
            "see 'inkdeploy lab status' and the site.yml output."
        ) from exc
    finally:
        conn.close()
    return WebCheck(
        url=f"https://{address}/",
        ca=str(ca),
        status=response.status,
        tls=tls,
        version=response.getheader("X-App-Version"),
        lb_health=health,
    )
