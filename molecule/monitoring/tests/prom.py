"""Ask the monitoring host's Prometheus and the test webhook receiver, from the controller."""

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

INVENTORY = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"


def address(host: str) -> str:
    data = yaml.safe_load((INVENTORY / "lab.yml").read_text())
    return data["all"]["hosts"][host]["ansible_host"]


def query(expr: str) -> list[dict]:
    """Instant query; the result vector."""
    url = f"http://{address('mon1')}:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def label_values(label: str) -> list[str]:
    url = f"http://{address('mon1')}:9090/api/v1/label/{label}/values"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def notifications(host) -> list[dict]:
    """What the webhook receiver on mon1 got so far."""
    log = host.file("/var/lib/webhook-alerts.jsonl")
    if not log.exists:
        return []
    return [json.loads(line) for line in log.content_string.splitlines() if line.strip()]


def wait_for_notification(host, status: str, alertname: str, labels: dict, timeout: float):
    """The first notification with an alert of that name, status and labels; its arrival time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for note in notifications(host):
            for alert in note["alerts"]:
                same = all(alert["labels"].get(k) == v for k, v in labels.items())
                if alert["labels"]["alertname"] == alertname and alert["status"] == status and same:
                    return alert, time.time()
        time.sleep(1)
    raise AssertionError(f"no {status} {alertname} {labels} within {timeout:.0f} s")
