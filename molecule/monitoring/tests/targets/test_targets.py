"""After site.yml: every scrape target up; the recording rules answer while load runs."""

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prom import INVENTORY, address, label_values, query

from inkdeploy.loadgen import LoadConfig, LoadGenerator

testinfra_hosts = ["mon1"]
REPO = Path(__file__).resolve().parents[4]

JOBS = {"prometheus", "alertmanager", "node", "app", "postgres", "patroni", "etcd", "redis",
        "nginx", "nginx_log"}  # fmt: skip


def configured_instances() -> set[str]:
    url = f"http://{address('mon1')}:9090/api/v1/targets?state=active"
    with urllib.request.urlopen(url, timeout=10) as response:  # lab address only
        return {t["labels"]["instance"] for t in json.load(response)["data"]["activeTargets"]}


def test_every_scrape_target_is_up(host):
    deadline = time.monotonic() + 60
    while True:
        # Debian's package first starts Prometheus with its own configuration (localhost:9100);
        # that series stays visible for the 5 min lookback after the role's configuration
        # replaced it, but it is no target of ours.
        configured = configured_instances()
        up = [r for r in query("up") if r["metric"]["instance"] in configured]
        down = [r["metric"] for r in up if r["value"][1] != "1"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert not down, f"targets down: {down}"
    assert {r["metric"]["job"] for r in up} == JOBS
    # One node target per host, one app target per serving slot (app1 blue).
    assert len([r for r in up if r["metric"]["job"] == "node"]) == 5
    assert [r["metric"]["slot"] for r in up if r["metric"]["job"] == "app"] == ["blue"]


def test_exporters_see_their_services(host):
    assert query("pg_up")[0]["value"][1] == "1"
    assert query("redis_up")[0]["value"][1] == "1"
    assert query("nginx_up")[0]["value"][1] == "1"
    assert query("max(patroni_primary)")[0]["value"][1] == "1"
    unit = 'name="inkapp-celery-worker@celery.service",state="active"'
    workers = query(f"node_systemd_unit_state{{{unit}}}")
    assert workers and workers[0]["value"][1] == "1"


def test_recording_rules_have_data_while_load_runs(host):
    lb = address("lb1")
    config = LoadConfig(f"https://{lb}/", cacert=str(INVENTORY / "pki/nginx_lb/ca.crt"), rate=50)
    gen = LoadGenerator(config).start()
    try:
        time.sleep(40)
        errors = query("version:http_errors:ratio_rate30s")
        rate = query("version:http_requests:rate30s")
        lb_5xx = query("lb:http_responses_5xx:ratio_rate1m")
    finally:
        report = gen.stop()
    assert report.failed == 0, report.format()
    assert [(r["metric"]["version"], float(r["value"][1])) for r in errors] == [("1.0.0", 0.0)]
    assert float(rate[0]["value"][1]) > 20
    assert float(lb_5xx[0]["value"][1]) == 0.0


def test_no_alert_but_the_watchdog_fires(host):
    firing = query('ALERTS{alertstate="firing"}')
    assert [r["metric"]["alertname"] for r in firing] == ["Watchdog"], firing


def test_every_metric_the_dashboards_query_exists_in_this_prometheus(host):
    """Runs after the load above, so the app's and the LB's request metrics exist."""
    from inkdeploy.promql import metric_names

    dashboards = sorted((REPO / "roles/grafana/files/dashboards").glob("*.json"))
    assert dashboards, "no Grafana dashboards found"
    wanted: dict[str, set[str]] = {}
    for path in dashboards:
        for expr in dashboard_exprs(json.loads(path.read_text())):
            for name in metric_names(expr):
                wanted.setdefault(name, set()).add(path.name)
    known = set(label_values("__name__"))
    missing = {name: sorted(files) for name, files in wanted.items() if name not in known}
    assert not missing, f"dashboard metrics this Prometheus does not have: {missing}"


def dashboard_exprs(node) -> list[str]:
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


def test_the_lifecycle_api_is_off(host):
    """Whoever reaches the port cannot stop or reload Prometheus over HTTP (no
    --web.enable-lifecycle); it keeps answering afterwards."""
    for path in ("/-/quit", "/-/reload"):
        request = urllib.request.Request(f"http://{address('mon1')}:9090{path}", method="POST")
        try:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310
            answered = 200
        except urllib.error.HTTPError as exc:
            answered = exc.code
        assert answered == 403, path
    assert query("up")
