"""After the slot was started again: the receiver gets AppSlotDown resolved."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from prom import query, wait_for_notification

testinfra_hosts = ["mon1"]


def test_app_slot_down_resolves(host):
    alert, _ = wait_for_notification(
        host, "resolved", "AppSlotDown", {"host": "app1", "slot": "blue"}, timeout=180
    )
    assert alert["endsAt"] > alert["startsAt"]
    assert query('up{job="app",host="app1",slot="blue"}')[0]["value"][1] == "1"
