"""End-to-end tests of the whole stack: playbooks/site.yml on a lab of the `small` topology
(two load balancers, two app servers, a worker with beat, one data host), then HTTPS through the
load balancers, the page's write, the Celery round trip, a TLS scan, a broken template, a drain
and a hard kill under load; site.yml's second run, after the rollouts, is the idempotence check
(test_stack_rollout.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from inkdeploy.lab.drill import (
    PlaybookRun,
    inventory_address,
    inventory_groups,
    lab_inventory,
    run_playbook,
)

# INKDEPLOY_STACK_LAB with INKDEPLOY_STACK_REUSE: the name of a lab that is already up.
LAB = os.environ.get("INKDEPLOY_STACK_LAB", "stack")
SUBNET = os.environ.get("INKDEPLOY_STACK_SUBNET", "10.77.41.0/24")
VERSION = "1.0.0"
# Alertmanager's receiver on the monitoring hosts: test_monitoring.py runs a test webhook
# receiver there (tests/stack/files/webhook_receiver.py).
WEBHOOK_URL = "http://127.0.0.1:9999/alerts"
REPO = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("inkdeploy"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def inkdeploy(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False
    )


class WebhookSink:
    """The rollout policy's webhook on the controller: every POST body the orchestrator's
    webhook sink sends (rollout started, rolled back, finished ...), kept in memory for
    test_stack_security.py to search for secrets."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                sink.bodies.append(self.rfile.read(size).decode(errors="replace"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/inkdeploy-events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    inventory: Path
    artifact: Path
    lb: str  # lb1's address: the site's URL
    cacert: Path
    first_run: PlaybookRun
    lbs: tuple[str, ...] = ()  # every LB's address: what the site's name resolves to
    # what the inkdeploy commands of the stack tests printed (--json event stream and stderr);
    # test_stack_security.py searches it for secrets
    transcripts: list[str] = field(default_factory=list)
    # what the rollout policy's webhook received (write_rollout_webhook points it here)
    webhook: WebhookSink | None = None

    @property
    def url(self) -> str:
        return f"https://{self.lb}/"

    def playbook(self, name: str, **extra: object) -> PlaybookRun:
        return run_playbook(name, self.inventory, {"app_artifact": str(self.artifact), **extra})

    def on(self, host: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        return inkdeploy("lab", "exec", "--lab", LAB, host, "--", *cmd, timeout=120)

    def secrets(self) -> dict[str, str]:
        """Every secret of the lab inventory (inventories/lab/secrets.yml names them), by name,
        with the value the lab generated (all.vars of its hosts.yml)."""
        names = yaml.safe_load((REPO / "inventories/lab/secrets.yml").read_text())
        values = yaml.safe_load(self.inventory.read_text())["all"]["vars"]
        return {name: str(values[name]) for name in names if name in values}


def write_test_host_vars(inventory: Path) -> None:
    """What the stack lab sets beyond the lab's group_vars: the monitoring hosts' Alertmanager
    sends to the test receiver. Written before site.yml, so the second run changes nothing."""
    for host in inventory_groups(inventory)["monitoring"]:
        path = inventory.parent / "host_vars" / f"{host}.yml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump({"alertmanager_webhook_urls": [WEBHOOK_URL]}))


def write_rollout_webhook(inventory: Path, url: str) -> None:
    """The lab's rollout policy (inkdeploy_rollout from its group_vars) with a webhook to URL,
    as host variables of the app hosts: the orchestrator reads the policy from the first one.
    No role reads inkdeploy_rollout, so site.yml is unaffected."""
    policy = yaml.safe_load((REPO / "inventories/lab/group_vars/all.yml").read_text())[
        "inkdeploy_rollout"
    ]
    policy.setdefault("notify", {})["webhooks"] = [url]
    for host in inventory_groups(inventory)["app"]:
        path = inventory.parent / "host_vars" / f"{host}.yml"
        path.parent.mkdir(exist_ok=True)
        current = yaml.safe_load(path.read_text()) if path.exists() else {}
        path.write_text(yaml.safe_dump({**(current or {}), "inkdeploy_rollout": policy}))


def lb_addresses(inventory: Path) -> tuple[str, ...]:
    return tuple(inventory_address(inventory, lb) for lb in ("lb1", "lb2"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        pytest.fail("stack tests need root: run them as root (CI does)")
    reuse = os.environ.get("INKDEPLOY_STACK_REUSE")
    if reuse:
        # Development only: run against a lab that is already up and converged (the hosts.yml
        # of `inkdeploy lab up --inventory`, with 1.0.0 live); nothing is booted or torn down.
        inventory = Path(reuse)
        webhook = WebhookSink()
        write_rollout_webhook(inventory, webhook.url)
        yield Stack(
            inventory=inventory,
            artifact=REPO / "dist" / f"inkapp-{VERSION}.tar.gz",
            lb=inventory_address(inventory, "lb1"),
            cacert=inventory.parent / "pki/nginx_lb/ca.crt",
            first_run=PlaybookRun("site.yml", 0, 0.0, "", {}),
            lbs=lb_addresses(inventory),
            webhook=webhook,
        )
        webhook.close()
        return
    work = tmp_path_factory.mktemp("stack")
    dist = work / "dist"
    project = str(REPO / "examples/inkapp")
    build = inkdeploy("build", project, "--version", VERSION, "--out", str(dist))
    assert build.returncode == 0, build.stdout + build.stderr
    inventory = lab_inventory(work)
    inkdeploy("lab", "down", "--lab", LAB)
    up = inkdeploy(
        "lab", "up", "--lab", LAB, "--subnet", SUBNET, "--topology", "small",
        "--inventory", str(inventory), "--json",
    )  # fmt: skip
    assert up.returncode == 0, up.stdout + up.stderr
    json.loads(up.stdout)
    write_test_host_vars(inventory)
    webhook = WebhookSink()
    write_rollout_webhook(inventory, webhook.url)
    # The vendor packages' local repository on the lab bridge, as a lab with the Grafana and
    # Elastic .debs would have it (empty here: those roles end with their named skip, after apt
    # read the source); test_observability_roles.py checks either way.
    repo_state = {"vendor_repo_state_dir": str(work)}
    artifact = dist / f"inkapp-{VERSION}.tar.gz"
    try:
        serve = run_playbook("vendor-repo-serve.yml", inventory, repo_state)
        assert serve.rc == 0, serve.tail()
        first = run_playbook("site.yml", inventory, {"app_artifact": str(artifact)})
        yield Stack(
            inventory=inventory,
            artifact=artifact,
            lb=inventory_address(inventory, "lb1"),
            cacert=inventory.parent / "pki/nginx_lb/ca.crt",
            first_run=first,
            lbs=lb_addresses(inventory),
            webhook=webhook,
        )
    finally:
        webhook.close()
        run_playbook("vendor-repo-stop.yml", inventory, repo_state)
        down = inkdeploy("lab", "down", "--lab", LAB)
        assert down.returncode == 0, down.stdout + down.stderr
