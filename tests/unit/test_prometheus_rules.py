"""The Prometheus rules and the Alertmanager configuration, checked and unit-tested with the
same promtool and amtool the hosts run (make tools unpacks them into .cache/bin)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .role_templates import render

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".cache/bin"
HERE = Path(__file__).resolve().parent
SMTP_TEST_PASSWORD = "smtp-test-value"  # noqa: S105 (a test value, rendered into a temp file)

# The names the orchestrator's gates and the Grafana dashboards rely on.
RECORDED = {
    "version:http_requests:rate30s",
    "version:http_requests:rate1m",
    "version:http_errors:ratio_rate30s",
    "version:http_errors:ratio_rate1m",
    "version:http_request_duration_seconds:p50_1m",
    "version:http_request_duration_seconds:p95_1m",
    "version:http_request_duration_seconds:p99_1m",
    "host_slot:http_requests:rate30s",
    "host_slot:http_errors:ratio_rate30s",
    "lb:http_responses_5xx:ratio_rate1m",
}
ALERTS = {
    "Watchdog", "InstanceDown", "AppSlotDown", "DiskFilling", "PostgresDown",
    "PostgresReplicationLag", "PostgresPrimaryChanged", "RedisDown", "SentinelMasterChanged",
    "LoadBalancer5xxRatioHigh", "AppErrorRatioHigh", "AppLatencyHigh", "CeleryQueueBacklog",
    "CeleryWorkerMissing", "CeleryBeatMissing", "PostgresWalArchiveStalled",
    "PostgresWalArchiveFailing", "PostgresBackupTooOld", "PostgresBackupMissing",
    "PostgresBackupRepoError", "PostgresBackupMetricsStale",
}  # fmt: skip


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make unit does).")
    return str(path)


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    for name in ("recording", "alerts"):
        (out / f"inkdeploy-{name}.yml").write_text(render("prometheus", f"rules/{name}.yml.j2"))
    shutil.copy(HERE / "promtool/rules_test.yml", out / "rules_test.yml")
    return out


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_every_rule_file(rules_dir: Path) -> None:
    files = sorted(str(p) for p in rules_dir.glob("inkdeploy-*.yml"))
    result = run(tool("promtool"), "check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass(rules_dir: Path) -> None:
    result = run(tool("promtool"), "test", "rules", str(rules_dir / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_contract_names_are_recorded_and_every_alert_exists(rules_dir: Path) -> None:
    recording = yaml.safe_load((rules_dir / "inkdeploy-recording.yml").read_text())
    alerts = yaml.safe_load((rules_dir / "inkdeploy-alerts.yml").read_text())
    assert {r["record"] for g in recording["groups"] for r in g["rules"]} == RECORDED
    rules = [r for g in alerts["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
        assert rule["labels"]["severity"] in {"none", "warning", "critical"}, rule["alert"]


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load((HERE / "promtool/rules_test.yml").read_text())["tests"]
    tested = {t["alertname"] for group in tests for t in group.get("alert_rule_test", [])}
    untested = ALERTS - tested
    assert not untested, f"alerts without a promtool test: {sorted(untested)}"


def test_thresholds_come_from_variables(rules_dir: Path) -> None:
    text = render("prometheus", "rules/alerts.yml.j2", prometheus_alert_error_ratio=0.2)
    assert "version:http_errors:ratio_rate1m > 0.2" in text


def test_alertmanager_config_with_every_receiver_passes_amtool(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        render(
            "alertmanager",
            "alertmanager.yml.j2",
            alertmanager_webhook_urls=["http://10.0.0.9:9999/hook"],
            alertmanager_email_to="oncall@example.net",
            alertmanager_email_from="alertmanager@example.net",
            alertmanager_email_smarthost="smtp.example.net:587",
            alertmanager_email_auth_username="alertmanager",
            alertmanager_email_auth_password=SMTP_TEST_PASSWORD,
            alertmanager_slack_api_url="https://hooks.slack.com/services/T0/B0/XXXX",
            alertmanager_watchdog_webhook_url="http://deadman.example.net/ping",
        )
    )
    result = run(tool("amtool"), "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    data = yaml.safe_load(config.read_text())
    default = next(r for r in data["receivers"] if r["name"] == "default")
    hook = {"url": "http://10.0.0.9:9999/hook", "send_resolved": True}
    assert default["webhook_configs"] == [hook]
    assert default["email_configs"][0]["auth_password"] == SMTP_TEST_PASSWORD
    assert default["slack_configs"][0]["channel"] == "#alerts"
    assert data["route"]["routes"][0]["matchers"] == ['alertname="Watchdog"']


def test_alertmanager_config_with_defaults_passes_amtool(tmp_path: Path) -> None:
    config = tmp_path / "alertmanager.yml"
    config.write_text(render("alertmanager", "alertmanager.yml.j2"))
    result = run(tool("amtool"), "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rule_is_refused_by_promtool(tmp_path: Path) -> None:
    """What the role's validate step relies on: promtool exits non-zero on a bad expression."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(up[1m])\n"
    )
    result = run(tool("promtool"), "check", "rules", str(bad))
    assert result.returncode != 0
