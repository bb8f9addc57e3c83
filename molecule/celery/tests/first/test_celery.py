"""The celery role on a real host: a worker per queue, beat, and a task round trip via Sentinel."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from celery_client import run

testinfra_hosts = ["worker1"]


def test_worker_and_beat_run_the_release(host):
    for unit in ("inkapp-celery-worker@celery", "inkapp-celery-beat"):
        service = host.service(unit)
        assert service.is_running and service.is_enabled, unit
    assert host.file("/srv/inkapp/slots/celery").linked_to == "/srv/inkapp/releases/1.0.0"
    props = host.check_output(
        "systemctl show -p KillSignal -p KillMode -p TimeoutStopUSec inkapp-celery-worker@celery"
    )
    assert "KillSignal=15" in props and "KillMode=mixed" in props
    assert "TimeoutStopUSec=5min" in props
    # Workers run as the app's user, never root.
    pid = host.check_output("systemctl show -p MainPID --value inkapp-celery-worker@celery")
    assert host.check_output(f"ps -o user= -p {pid}").strip() == "inkapp"


def test_a_task_goes_through_the_sentinel_broker_and_back(host):
    result = run(
        host,
        "r = tasks.square.delay(12); print(json.dumps(r.get(timeout=20)))",
    )
    assert result["square"] == 144 and result["worker"] in ("worker1", "worker2")


def test_worker2_runs_a_worker_and_no_beat(host):
    worker2 = host.get_host("ansible://worker2", ansible_inventory=host.backend.ansible_inventory)
    assert worker2.service("inkapp-celery-worker@celery").is_running
    assert not worker2.service("inkapp-celery-beat").is_running


def test_beat_schedules_the_heartbeat(host):
    result = run(
        host,
        "first = cache.get('inkapp:beat'); time.sleep(11); "
        "print(json.dumps({'first': first, 'second': cache.get('inkapp:beat')}))",
    )
    assert result["first"] and result["second"] and result["second"] > result["first"]


def test_environment_file_is_root_only(host):
    env = host.file("/etc/inkapp/env")
    assert env.user == "root" and env.mode == 0o600
    assert "INKDEPLOY_REDIS_SENTINELS=" in env.content_string
