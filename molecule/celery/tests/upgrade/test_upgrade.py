"""After the side effect: beat on two hosts refused, a running task survived the deploy."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from celery_client import run

testinfra_hosts = ["worker1"]


def test_beat_on_two_hosts_was_refused_by_name(host):
    message = host.file("/root/beat-refusal.txt").content_string
    assert "exactly one host" in message and "has 2 (worker1, worker2)" in message


def test_the_running_task_finished_on_the_old_release(host):
    task_id = host.file("/root/nap-task-id").content_string.strip()
    result = run(
        host,
        f"r = tasks.nap.AsyncResult('{task_id}'); "
        "print(json.dumps({'state': r.state, 'result': r.get(timeout=30)}))",
    )
    assert result["state"] == "SUCCESS"
    assert result["result"] == {"slept": 6, "version": "1.0.0"}


def test_workers_now_run_the_new_release(host):
    assert host.file("/srv/inkapp/slots/celery").linked_to == "/srv/inkapp/releases/1.1.0"
    result = run(host, "r = tasks.nap.delay(0); print(json.dumps(r.get(timeout=20)))")
    assert result["version"] == "1.1.0"
    log = host.file("/var/log/inkapp/releases.log").content_string
    assert "slot=celery version=1.1.0 previous=1.0.0" in log


def test_beat_still_runs_once(host):
    assert host.service("inkapp-celery-beat").is_running
    beats = host.check_output("ps -eo args= | grep -c '[c]elery --app=inkapp.celery_app beat'")
    assert beats.strip() == "1"
