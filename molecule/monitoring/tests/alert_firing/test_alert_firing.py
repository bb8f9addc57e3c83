"""After the blue slot on app1 was stopped: AppSlotDown reaches the webhook receiver in time."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prom import query, wait_for_notification

testinfra_hosts = ["mon1"]

# for: 30s, scrape every 5s, rules every 5s, Alertmanager group_wait 10s; plus slack for a
# busy two-core machine.
LIMIT = 30 + 5 + 5 + 10 + 20


def test_app_slot_down_reaches_the_receiver_in_time(host):
    stopped_file = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "slot-stopped-at"
    stopped = float(stopped_file.read_text())
    alert, arrived = wait_for_notification(
        host, "firing", "AppSlotDown", {"host": "app1", "slot": "blue"}, timeout=180
    )
    delay = arrived - stopped
    print(f"AppSlotDown reached the receiver {delay:.1f} s after the slot stopped")
    assert delay <= LIMIT, f"AppSlotDown took {delay:.1f} s (limit {LIMIT} s)"
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"] == (
        "App slot blue on app1 should serve but does not answer."
    )
    assert "runbook" in alert["annotations"]


def test_only_the_slot_alert_fires_for_it(host):
    firing = {r["metric"]["alertname"] for r in query('ALERTS{alertstate="firing"}')}
    assert firing == {"Watchdog", "AppSlotDown"}, firing
