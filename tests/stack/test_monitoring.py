"""The monitoring roles on the stack lab, right after site.yml (this module runs first): every
scrape target up, the exporters see their services, the recording rules fed while load runs
through the LB, every metric the dashboards query exists; then an app slot is stopped and
AppSlotDown must reach a test webhook receiver through Alertmanager in time, and resolve once
the slot runs again. Converge and idempotence of these roles are test_stack.py's site.yml runs."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from inkdeploy.lab.drill import inventory_address, inventory_groups
from inkdeploy.loadgen import LoadConfig, LoadGenerator

from .conftest import REPO, VERSION, WEBHOOK_URL, Stack

pytestmark = pytest.mark.stack

RECEIVER = Path(__file__).with_name("files") / "webhook_receiver.py"
RECEIVED = "/var/lib/webhook-alerts.jsonl"
JOBS = {"prometheus", "alertmanager", "node", "app", "postgres", "patroni", "etcd", "redis",
        "nginx", "nginx_log"}  # fmt: skip
# AppSlotDown: for 30s, scrape and rule evaluation every 5 s, Alertmanager group_wait 10 s; plus
# slack for a busy two-core machine.
ALERT_LIMIT_S = 30 + 5 + 5 + 10 + 20


@dataclass
class Monitoring:
    stack: Stack
    host: str  # the monitoring host: Prometheus, Alertmanager and the test receiver
    address: str
    groups: dict[str, list[str]]  # the lab inventory's groups
    hosts: list[str]  # every host of the lab

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://{self.address}:9090/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def firing(self) -> set[str]:
        return {r["metric"]["alertname"] for r in self.query('ALERTS{alertstate="firing"}')}

    def notifications(self) -> list[dict[str, Any]]:
        shown = self.stack.on(self.host, "sh", "-c", f"cat {RECEIVED} 2>/dev/null || true")
        assert shown.returncode == 0, shown.stderr
        return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]

    def wait_for_notification(
        self, status: str, alertname: str, labels: dict[str, str], timeout: float
    ) -> tuple[dict[str, Any], float]:
        """The first alert of that name, status and labels the receiver got; when it was seen."""
        wanted = {"alertname": alertname, **labels}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.notifications():
                for alert in note["alerts"]:
                    same = all(alert["labels"].get(k) == v for k, v in wanted.items())
                    if same and alert["status"] == status:
                        return alert, time.time()
            time.sleep(1)
        raise AssertionError(f"no {status} {alertname} {labels} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def mon(stack: Stack) -> Iterator[Monitoring]:
    groups = inventory_groups(stack.inventory)
    host = groups["monitoring"][0]
    config = stack.on(host, "cat", "/etc/prometheus/alertmanager.yml")
    assert WEBHOOK_URL in config.stdout, (
        f"Alertmanager on {host} does not send to {WEBHOOK_URL}: converge the lab with the "
        "stack's host_vars (conftest.write_test_host_vars)"
    )
    # A transient unit, gone with the lab; a re-run against a reused lab starts afresh.
    stack.on(host, "systemctl", "stop", "webhook-receiver")
    stack.on(host, "rm", "-f", RECEIVED)
    started = stack.on(host, "systemd-run", "--unit=webhook-receiver", "--property=Restart=always",
                       "/usr/bin/python3", "-c", RECEIVER.read_text(), RECEIVED)  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        hosts = sorted(yaml.safe_load(stack.inventory.read_text())["all"]["hosts"])
        address = inventory_address(stack.inventory, host)
        yield Monitoring(stack, host, address, groups, hosts)
    finally:
        stack.on(host, "systemctl", "stop", "webhook-receiver")


def test_every_scrape_target_is_up(mon: Monitoring) -> None:
    deadline = time.monotonic() + 60
    while True:
        # Debian's package first starts Prometheus with its own configuration (localhost:9100);
        # that series stays visible for the 5 min lookback after the role's configuration
        # replaced it, but it is no target of ours.
        targets = mon.api("targets", state="active")["activeTargets"]
        configured = {t["labels"]["instance"] for t in targets}
        up = [r for r in mon.query("up") if r["metric"]["instance"] in configured]
        down = [r["metric"] for r in up if r["value"][1] != "1"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not down, f"targets down: {down}"
    assert {r["metric"]["job"] for r in up} == JOBS
    nodes = sorted(r["metric"]["host"] for r in up if r["metric"]["job"] == "node")
    assert nodes == mon.hosts
    # one app target per app host: the slot that serves
    apps = sorted(r["metric"]["host"] for r in up if r["metric"]["job"] == "app")
    assert apps == mon.groups["app"]
    print(f"monitoring: {len(up)} targets up in {len(JOBS)} jobs on {len(nodes)} hosts")


def test_exporters_see_their_services(mon: Monitoring) -> None:
    assert mon.query("pg_up")[0]["value"][1] == "1"
    assert mon.query("redis_up")[0]["value"][1] == "1"
    assert {r["value"][1] for r in mon.query("nginx_up")} == {"1"}
    assert mon.query("max(patroni_primary)")[0]["value"][1] == "1"
    unit = 'name="inkapp-celery-worker@celery.service",state="active"'
    workers = mon.query(f"node_systemd_unit_state{{{unit}}}")
    assert workers and {r["value"][1] for r in workers} == {"1"}


def test_recording_rules_have_data_while_load_runs(mon: Monitoring) -> None:
    stack = mon.stack
    gen = LoadGenerator(LoadConfig(stack.url, cacert=str(stack.cacert), rate=50)).start()
    try:
        time.sleep(40)
        errors = mon.query("version:http_errors:ratio_rate30s")
        rate = mon.query("version:http_requests:rate30s")
        lb_5xx = mon.query("lb:http_responses_5xx:ratio_rate1m")
    finally:
        report = gen.stop()
    assert report.failed == 0, report.format()
    versions = [(r["metric"]["version"], float(r["value"][1])) for r in errors]
    assert versions == [(VERSION, 0.0)]
    assert float(rate[0]["value"][1]) > 20
    assert {float(r["value"][1]) for r in lb_5xx} == {0.0}


def test_no_alert_but_the_watchdog_fires(mon: Monitoring) -> None:
    assert mon.firing() == {"Watchdog"}


def test_every_metric_the_dashboards_query_exists_in_this_prometheus(mon: Monitoring) -> None:
    """Runs after the load above, so the app's and the LB's request metrics exist."""
    from inkdeploy.promql import metric_names

    dashboards = sorted((REPO / "roles/grafana/files/dashboards").glob("*.json"))
    assert dashboards, "no Grafana dashboards found"
    wanted: dict[str, set[str]] = {}
    for path in dashboards:
        for expr in dashboard_exprs(json.loads(path.read_text())):
            for name in metric_names(expr):
                wanted.setdefault(name, set()).add(path.name)
    known = set(mon.api("label/__name__/values"))
    missing = {name: sorted(files) for name, files in wanted.items() if name not in known}
    assert not missing, f"dashboard metrics this Prometheus does not have: {missing}"
    print(f"dashboards: {len(wanted)} metrics in {len(dashboards)} dashboards, all present")


def dashboard_exprs(node: object) -> list[str]:
    """Every PromQL `expr` in a dashboard (panels, rows, targets, at any depth)."""
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str) and node["expr"].strip():
            found.append(node["expr"])
        for value in node.values():
            found += dashboard_exprs(value)
    elif isinstance(node, list):
        for value in node:
            found += dashboard_exprs(value)
    return found


def test_a_stopped_slot_reaches_the_receiver_in_time_and_resolves(mon: Monitoring) -> None:
    """The slot app1 serves from is stopped: AppSlotDown, and nothing else new, fires and
    reaches the receiver within ALERT_LIMIT_S; once the slot runs again, it resolves."""
    stack = mon.stack
    app = mon.groups["app"][0]
    (serving,) = [
        r["metric"]["slot"] for r in mon.query(f'up{{job="app",host="{app}"}}')
    ]  # fmt: skip
    labels = {"host": app, "slot": serving}
    stopped = time.time()
    ran = stack.on(app, "systemctl", "stop", f"inkapp@{serving}")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    try:
        alert, arrived = mon.wait_for_notification("firing", "AppSlotDown", labels, timeout=180)
        firing = mon.firing()
    finally:
        ran = stack.on(app, "systemctl", "start", f"inkapp@{serving}")
        assert ran.returncode == 0, ran.stdout + ran.stderr
    delay = arrived - stopped
    print(f"AppSlotDown reached the receiver {delay:.1f} s after the slot stopped")
    assert delay <= ALERT_LIMIT_S, f"AppSlotDown took {delay:.1f} s (limit {ALERT_LIMIT_S} s)"
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == (
        f"App slot {serving} on {app} should serve but does not answer."
    )
    assert "runbook" in alert["annotations"]
    assert firing == {"Watchdog", "AppSlotDown"}, firing

    resolved, _ = mon.wait_for_notification("resolved", "AppSlotDown", labels, timeout=180)
    assert resolved["endsAt"] > resolved["startsAt"]
    assert mon.query(f'up{{job="app",host="{app}",slot="{serving}"}}')[0]["value"][1] == "1"
