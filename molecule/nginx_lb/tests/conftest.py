"""Shared helpers for the nginx_lb scenario's tests (pytest-testinfra, ansible backend).

The tests talk to the load balancer the way clients do, from the lab controller (Python's ssl
and http.client, verifying against the internal CA on the controller), and look inside lb1 and
app1 through testinfra. Tests that change the load balancer run playbooks/lb-weights.yml (or the
role) like the orchestrator will, and put the default weights back afterwards.
"""

import http.client
import json
import os
import re
import ssl
import subprocess
import uuid
from pathlib import Path

import pytest
import testinfra

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
DEFAULT_WEIGHTS = {"app1:blue": 100, "app1:green": 0}


class Lab:
    """lb1 and app1 of the scenario, with client helpers that run on the controller."""

    def __init__(self, inventory):
        from testinfra.utils.ansible_runner import AnsibleRunner

        self.inventory = inventory
        runner = AnsibleRunner.get_runner(inventory)
        self.lb = testinfra.get_host("ansible://lb1", ansible_inventory=inventory)
        self.app = testinfra.get_host("ansible://app1", ansible_inventory=inventory)
        self.lb_address = runner.get_variables("lb1")["ansible_host"]
        self.app_address = runner.get_variables("app1")["ansible_host"]
        inventory_dir = Path(inventory) if Path(inventory).is_dir() else Path(inventory).parent
        # nginx_lb_internal_ca_dir's default: {{ inventory_dir }}/pki/nginx_lb
        self.ca_file = inventory_dir / "pki/nginx_lb/ca.crt"

    # --- clients on the controller ------------------------------------------------------------

    def tls_context(self, minimum=None, maximum=None, ciphers=None):
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if minimum:
            ctx.minimum_version = minimum
        if maximum:
            ctx.maximum_version = maximum
        if ciphers:
            ctx.set_ciphers(ciphers)
        return ctx

    def https(self, path="/", headers=None, context=None, method="GET"):
        """One request on a new connection; returns (response, body, negotiated TLS, cipher)."""
        conn = http.client.HTTPSConnection(
            self.lb_address, 443, context=context or self.tls_context(), timeout=10
        )
        try:
            conn.request(method, path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return response, body, conn.sock.version(), conn.sock.cipher()[0]
        finally:
            conn.close()

    def versions(self, count):
        """X-App-Version of COUNT requests over one keep-alive connection."""
        conn = http.client.HTTPSConnection(
            self.lb_address, 443, context=self.tls_context(), timeout=10
        )
        seen = []
        try:
            for _ in range(count):
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
                seen.append(response.getheader("X-App-Version"))
        finally:
            conn.close()
        return seen

    def statuses(self, count):
        """Status counts of COUNT requests sent as fast as possible over one connection."""
        conn = http.client.HTTPSConnection(
            self.lb_address, 443, context=self.tls_context(), timeout=10
        )
        counts = {}
        try:
            for _ in range(count):
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                counts[response.status] = counts.get(response.status, 0) + 1
        finally:
            conn.close()
        return counts

    # --- the load balancer --------------------------------------------------------------------

    def run_playbook(self, playbook, extra_vars):
        """ansible-playbook PLAYBOOK against the scenario's lab; returns (returncode, output)."""
        env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_FORCE_COLOR="0")
        result = subprocess.run(
            [
                "ansible-playbook",
                "-i",
                str(self.inventory),
                str(playbook),
                "-e",
                json.dumps(extra_vars),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return result.returncode, result.stdout + result.stderr

    def set_weights(self, weights, **extra):
        return self.run_playbook(
            REPO / "playbooks/lb-weights.yml", {"nginx_lb_slot_weights": weights, **extra}
        )

    def journal_cursor(self):
        out = self.lb.check_output("journalctl -u nginx -n 1 --show-cursor -o cat")
        return re.search(r"^-- cursor: (.+)$", out, re.MULTILINE).group(1)

    def reloads_since(self, cursor):
        out = self.lb.check_output(f"journalctl -u nginx --after-cursor='{cursor}' -o cat")
        return len([x for x in out.splitlines() if x.startswith("Reloaded ")])

    def upstreams_conf(self):
        return self.lb.file("/etc/nginx/inkdeploy/upstreams.conf").content_string


@pytest.fixture(scope="session")
def lab(pytestconfig):
    return Lab(pytestconfig.option.ansible_inventory)


@pytest.fixture
def restore_weights(lab):
    """Put the default weights back after a test that changes them."""
    yield
    rc, out = lab.set_weights(DEFAULT_WEIGHTS)
    assert rc == 0, out


def request_id():
    return f"test-{uuid.uuid4().hex}"
