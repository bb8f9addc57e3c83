"""The last two playbooks a rollback waited for, over the fast path: stopping the abandoned slots
(rollout/stop-slot.yml, with Prometheus's app targets) and recording the live release
(rollout/record.yml). The payloads run here on a directory tree and with stand-in systemctl and
systemd-run on PATH; the files they write are compared byte for byte with what Ansible renders
(the prometheus role's template, to_nice_json), so a later site.yml changes nothing. The
executor takes the fast path and runs no playbook. On the lab every stack rollout and rollback
goes through them (tests/stack)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from inkdeploy.fastpath import FastPath, app_targets_file, nice_json
from inkdeploy.payloads import state_files, stop_slot
from inkdeploy.steps import Record, StopSlot

from .role_templates import render
from .test_fastpath import StubFast, executor

HOSTVARS = {
    "app1": {"ansible_host": "10.0.0.1"},
    "app2": {"ansible_host": "10.0.0.2", "app_slot": "green"},
    "mon1": {"ansible_host": "10.0.0.9"},
}


def role_targets(app_hosts: list[str], scrape: dict[str, list[str]]) -> str:
    return render(
        "prometheus",
        "app.yml.j2",
        groups={"all": [*app_hosts, "mon1"], "app": app_hosts, "monitoring": ["mon1"]},
        hostvars=HOSTVARS,
        prometheus_app_slots=scrape,
    )


@pytest.mark.parametrize(
    ("app_hosts", "scrape"),
    [
        (["app1", "app2"], {"app1": ["green", "blue"], "app2": ["blue"]}),
        (["app1", "app2"], {"app1": ["green"]}),  # app2 missing: its app_slot, as the role does
        (["app1", "app2"], {"app1": [], "app2": ["blue"]}),  # a host with no slot to scrape
        (["app1"], {"app1": ["blue"], "app9": ["green"]}),  # not an app host: left out
    ],
)
def test_the_targets_file_is_the_roles_byte_for_byte(
    app_hosts: list[str], scrape: dict[str, list[str]]
) -> None:
    addresses = {h: HOSTVARS[h]["ansible_host"] for h in app_hosts}
    defaults = {h: HOSTVARS[h].get("app_slot", "blue") for h in app_hosts}
    ours = app_targets_file(tuple(app_hosts), scrape, addresses, {"blue": 8001, "green": 8002},
                            defaults)  # fmt: skip
    assert ours == role_targets(app_hosts, scrape)


def test_the_live_file_is_what_to_nice_json_writes() -> None:
    state = {"version": "2.0.0", "slot": "green", "note": "ü"}
    templar = Templar(loader=DataLoader(), variables={"v": state})
    ansible = str(templar.template(trust_as_template("{{ v | to_nice_json }}")))
    assert nice_json(state) == ansible + "\n"
    assert json.loads(nice_json(state)) == state


# -- the payloads ----------------------------------------------------------------------------


def test_state_files_writes_atomically_only_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "inkdeploy" / "inkapp-live.json"
    spec = {"path": str(path), "content": '{"slot": "blue"}\n', "mode": "0644"}
    assert state_files.run({"files": [spec]}) == {"changed": [str(path)]}
    assert path.read_text() == '{"slot": "blue"}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    inode = path.stat().st_ino
    assert state_files.run({"files": [spec]}) == {"changed": []}
    assert path.stat().st_ino == inode  # nothing rewritten
    path.chmod(0o600)
    assert state_files.run({"files": [spec]}) == {"changed": [str(path)]}  # the mode counts
    spec["content"] = '{"slot": "green"}\n'
    state_files.run({"files": [spec]})
    assert path.read_text() == '{"slot": "green"}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["inkapp-live.json"]


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """systemctl and systemd-run stand-ins on PATH that log their arguments; FAIL_UNIT makes
    'systemctl stop' of that unit fail as a unit that does not exist would."""
    log = tmp_path / "calls.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("systemctl", "systemd-run"):
        script = bindir / name
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{name} $*" >> {log}\n'
            'if [ "$2" = "$FAIL_UNIT" ]; then echo "Unit $2 not loaded." >&2; exit 5; fi\n'
        )
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_stop_slot_cancels_a_pending_stop_then_stops_now(systemd: Path) -> None:
    said = stop_slot.run({"unit": "inkapp@green.service", "timer": "inkdeploy-stop-inkapp-green",
                          "after_s": 0})  # fmt: skip
    assert said == {"changed": True, "stopped_now": True, "stop_after_s": 0}
    assert systemd.read_text().splitlines() == [
        "systemctl stop inkdeploy-stop-inkapp-green.timer",
        "systemctl stop inkapp@green.service",
    ]


def test_stop_slot_later_is_a_transient_timer_as_the_playbook_starts_it(systemd: Path) -> None:
    stop_slot.run({"unit": "inkapp@blue.service", "timer": "inkdeploy-stop-inkapp-blue",
                   "after_s": 900})  # fmt: skip
    assert systemd.read_text().splitlines()[1] == (
        "systemd-run --unit=inkdeploy-stop-inkapp-blue --on-active=900s "
        "--timer-property=AccuracySec=1s /bin/systemctl stop inkapp@blue.service"
    )


def test_a_slot_that_does_not_stop_fails_with_systemctls_words(
    systemd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_UNIT", "inkapp@green.service")
    said = stop_slot.run({"unit": "inkapp@green.service", "timer": "t", "after_s": 0})
    assert said["failed"] is True
    assert (
        said["msg"]
        == "systemctl stop inkapp@green.service exited 5: Unit inkapp@green.service not loaded."
    )


# -- FastPath.stop_slots and FastPath.record ---------------------------------------------------


class StubRemote:
    def __init__(self, usable: bool = True) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._usable = usable

    def usable(self, hosts: Any) -> bool:
        return self._usable

    def payload(self, name: str, params: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.calls.append((name, params))
        return {host: {"changed": True} for host in params}


def fast_path(remote: StubRemote, hostvars: dict[str, Any] | None = None) -> FastPath:
    return FastPath(remote, "inkapp", ("lb1",), ("app1", "app2"), ("worker1",),  # type: ignore[arg-type]
                    hostvars or HOSTVARS, monitoring=("mon1",))  # fmt: skip


def test_stop_slots_stops_each_host_then_rewrites_prometheus_targets() -> None:
    remote = StubRemote()
    scrape = {"app1": ["blue"], "app2": ["blue"]}
    done = fast_path(remote).stop_slots(
        {"slots": {"app1": "green", "app2": "green"}, "scrape": scrape, "after_s": 0}
    )
    assert done is not None and set(done) == {"slots", "targets"}
    (stop_name, stops), (write_name, writes) = remote.calls
    assert stop_name == "stop_slot" and stops == {
        h: {"unit": "inkapp@green.service", "timer": "inkdeploy-stop-inkapp-green", "after_s": 0}
        for h in ("app1", "app2")
    }
    assert write_name == "state_files" and list(writes) == ["mon1"]
    (written,) = writes["mon1"]["files"]
    assert written["path"] == "/etc/prometheus/file_sd/app.yml"
    assert written["content"] == role_targets(["app1", "app2"], scrape)


@pytest.mark.parametrize(
    "hostvars",
    [
        {**HOSTVARS, "app1": {"ansible_host": "{{ lookup('env', 'APP1') }}"}},
        {**HOSTVARS, "app1": {"ansible_host": "10.0.0.1", "app_name": "{{ my_app }}"}},
    ],
)
def test_values_only_ansible_can_template_leave_it_to_the_playbook(hostvars: dict) -> None:
    remote = StubRemote()
    arg = {"slots": {"app1": "green"}, "scrape": {"app1": ["blue"]}, "after_s": 0}
    assert fast_path(remote, hostvars).stop_slots(arg) is None
    assert remote.calls == []  # nothing touched before the playbook runs


def test_record_writes_the_live_file_on_app_hosts_and_the_release_on_workers() -> None:
    remote = StubRemote()
    live = {
        "app1": {"slot": "green", "version": "2.0.0"},
        "app2": {"slot": "green", "version": "2.0.0"},
    }
    fast_path(remote).record(
        {"app": "inkapp", "live": live, "workers": ["worker1"], "version": "2.0.0"}
    )
    ((name, params),) = remote.calls
    assert name == "state_files" and sorted(params) == ["app1", "app2", "worker1"]
    path = "/var/lib/inkdeploy/inkapp-live.json"
    assert params["app1"]["files"] == [
        {"path": path, "content": nice_json(live["app1"]), "mode": "0644"}
    ]
    assert json.loads(params["worker1"]["files"][0]["content"]) == {"version": "2.0.0"}
    assert (
        fast_path(StubRemote(usable=False)).record(
            {"app": "inkapp", "live": live, "workers": [], "version": "2.0.0"}
        )
        is None
    )


# -- the executor ------------------------------------------------------------------------------


class RollbackStub(StubFast):
    def stop_slots(self, arg: dict[str, Any]) -> Any:
        return self._answer("stop_slots", arg)

    def record(self, arg: dict[str, Any]) -> Any:
        return self._answer("record", arg)


STOP = StopSlot(slots={"app1": "green"}, scrape={"app1": ["blue"]}, after_s=900)
RECORD = Record(live={"app1": {"slot": "blue", "version": "1.0.0"}}, version="1.0.0",
                workers=("worker1",))  # fmt: skip


def test_stop_and_record_take_the_fast_path_and_run_no_playbook(tmp_path: Path) -> None:
    stub = RollbackStub({"app1": {"changed": True}})
    ex, runner, seen = executor(tmp_path, stub)
    ex.do(STOP)
    ex.do(RECORD)
    assert runner.playbooks == []
    assert [a for a, _ in stub.calls] == ["stop_slots", "record"]
    assert stub.calls[0][1] == {"slots": {"app1": "green"}, "scrape": {"app1": ["blue"]},
                                "after_s": 900}  # fmt: skip
    assert stub.calls[1][1]["workers"] == ["worker1"] and stub.calls[1][1]["app"] == "inkapp"
    assert [e.data["action"] for e in seen if e.type == "fast_path"] == ["stop_slots", "record"]


def test_without_a_fast_path_stop_and_record_run_their_playbooks(tmp_path: Path) -> None:
    ex, runner, _ = executor(tmp_path, RollbackStub(None))
    ex.do(STOP)
    ex.do(RECORD)
    assert runner.playbooks == ["rollout/stop-slot.yml", "rollout/record.yml"]
