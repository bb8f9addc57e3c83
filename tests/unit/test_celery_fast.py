"""A rollout's Celery step over the fast path: the release switch on a worker host (the
celery_switch payload, run here on a directory tree laid out as the app and celery roles lay it
out), the host-by-host order and the fallback to celery.yml (FastPath.celery_release with a
stand-in Remote), and the executor's choice. The restart itself is `inkdeploy workers
restart`'s, drilled on the lab (tests/stack, molecule/celery)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.events import Events
from inkdeploy.execute import Context, Executor, StepFailed
from inkdeploy.fastpath import FastPath, RemoteError
from inkdeploy.ops import workers
from inkdeploy.ops.workers import CeleryHost, HostRestart
from inkdeploy.payloads import celery_switch
from inkdeploy.remote import Reply
from inkdeploy.state.journal import Journal
from inkdeploy.steps import Celery

from .test_fastpath import StubRunner

# -- the payload --------------------------------------------------------------------------------


def home_with(tmp_path: Path, releases: dict[str, float], celery: str | None) -> Path:
    """ROOT/inkapp with RELEASES (version -> age in hours, installed) and the celery link."""
    home = tmp_path / "srv" / "inkapp"
    (home / "slots").mkdir(parents=True)
    now = time.time()
    for version, hours in releases.items():
        release = home / "releases" / version
        release.mkdir(parents=True)
        (release / ".installed").touch()
        os.utime(release, (now - hours * 3600, now - hours * 3600))
    if celery:
        (home / "slots" / "celery").symlink_to(home / "releases" / celery)
    (tmp_path / "log").mkdir()
    return home


def switch(tmp_path: Path, version: str, keep: int = 3, **extra: Any) -> dict[str, Any]:
    return celery_switch.run({
        "root": str(tmp_path / "srv"), "app": "inkapp", "version": version, "keep": keep,
        "release_log": str(tmp_path / "log" / "releases.log"), "by": "alice", **extra,
    })  # fmt: skip


def test_the_link_moves_to_the_installed_release_and_the_log_says_so(tmp_path: Path) -> None:
    home = home_with(tmp_path, {"1.0.0": 2, "2.0.0": 1}, celery="1.0.0")
    said = switch(tmp_path, "2.0.0")
    assert said == {"changed": True, "installed": True, "switched": True, "previous": "1.0.0",
                    "pruned": []}  # fmt: skip
    assert os.readlink(home / "slots" / "celery") == str(home / "releases" / "2.0.0")
    line = (tmp_path / "log" / "releases.log").read_text()
    assert line.endswith(" slot=celery version=2.0.0 previous=1.0.0 by=alice\n")
    assert not (home / "slots" / "celery.inkdeploy-new").exists()
    again = switch(tmp_path, "2.0.0")  # nothing left to do: no switch, no second log line
    assert again["switched"] is False and again["changed"] is False
    assert len((tmp_path / "log" / "releases.log").read_text().splitlines()) == 1


def test_a_release_that_is_not_installed_changes_nothing(tmp_path: Path) -> None:
    home = home_with(tmp_path, {"1.0.0": 1}, celery="1.0.0")
    (home / "releases" / "2.0.0").mkdir()  # unpacked, never finished: no .installed
    assert switch(tmp_path, "2.0.0") == {"changed": False, "installed": False}
    assert os.readlink(home / "slots" / "celery") == str(home / "releases" / "1.0.0")
    assert not (tmp_path / "log" / "releases.log").exists()


def test_old_releases_go_as_the_role_prunes_them(tmp_path: Path) -> None:
    """Keep the newest KEEP; never one a slot link points to or keep_versions names."""
    ages = {"0.1.0": 9, "0.2.0": 8, "0.3.0": 7, "0.4.0": 6, "1.0.0": 2, "1.1.0": 1.5, "2.0.0": 1}
    home = home_with(tmp_path, ages, celery="1.0.0")
    (home / "slots" / "blue").symlink_to(home / "releases" / "0.1.0")
    # the rollout names the release it replaces (1.0.0) in keep_versions: a rollback needs it
    said = switch(tmp_path, "2.0.0", keep=2, keep_versions=["0.3.0", "1.0.0"])
    assert said["pruned"] == ["0.2.0", "0.4.0"]
    assert sorted(p.name for p in (home / "releases").iterdir()) == [
        "0.1.0", "0.3.0", "1.0.0", "1.1.0", "2.0.0",
    ]  # fmt: skip


# -- FastPath.celery_release ------------------------------------------------------------------


class StubRemote:
    """Answers `test -f .../releases/V/.installed` from INSTALLED and runs the payload here."""

    def __init__(self, installed: dict[str, bool], silent: tuple[str, ...] = ()) -> None:
        self.installed = installed
        self.silent = silent
        self.order: list[tuple[str, str]] = []

    def usable(self, hosts: Any) -> bool:
        return True

    def commands(self, argvs: dict[str, list[str]], timeout_s: float | None = None) -> dict:
        replies = {}
        for host in argvs:
            if host in self.silent:
                replies[host] = Reply(host, 255, "", "ssh: connect timed out", 1.0)
            else:
                replies[host] = Reply(host, 0 if self.installed[host] else 1, "", "", 0.1)
        return replies

    def payload(self, name: str, params: dict[str, dict[str, Any]], timeout_s: float) -> dict:
        assert name == "celery_switch"
        (host,) = params
        self.order.append(("switch", host))
        return {host: {"installed": True, "switched": True, "previous": "1.0.0", "pruned": []}}


def fast_path(remote: StubRemote, hosts: tuple[str, ...]) -> FastPath:
    celery = {h: CeleryHost(queues=("celery",), runs_beat=h == hosts[0]) for h in hosts}
    return FastPath(remote, "inkapp", ("lb1",), ("app1",), hosts, {}, celery=celery)  # type: ignore[arg-type]


@pytest.fixture
def restarts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    done: list[tuple[str, tuple[str, ...]]] = []

    def restart_host(remote: StubRemote, celery: CeleryHost, step: Any, wait_s: float):
        remote.order.append(("restart", step.host))
        done.append((step.host, step.units))
        ok = step.host != "worker2-broken"
        return HostRestart(step.host, list(step.units), state="restarted" if ok else "failed",
                           stop_s=2.1, ping_s=1.4, seconds=4.0,
                           problem="" if ok else "no ping")  # fmt: skip

    monkeypatch.setattr(workers, "restart_host", restart_host)
    return done


def test_each_host_is_switched_then_restarted_before_the_next(
    restarts: list[tuple[str, tuple[str, ...]]],
) -> None:
    remote = StubRemote({"worker1": True, "worker2": True})
    done = fast_path(remote, ("worker1", "worker2")).celery_release(
        {"version": "2.0.0", "hosts": ["worker1", "worker2"], "keep": ["1.0.0", "2.0.0"]}
    )
    assert remote.order == [("switch", "worker1"), ("restart", "worker1"),
                            ("switch", "worker2"), ("restart", "worker2")]  # fmt: skip
    # beat is restarted where it runs, with the workers
    assert restarts == [
        ("worker1", ("inkapp-celery-worker@celery.service", "inkapp-celery-beat.service")),
        ("worker2", ("inkapp-celery-worker@celery.service",)),
    ]
    assert done and done["worker1"]["stop_s"] == 2.1 and done["worker2"]["switched"] is True


def test_a_host_without_the_release_leaves_it_all_to_the_playbook(
    restarts: list[tuple[str, tuple[str, ...]]],
) -> None:
    remote = StubRemote({"worker1": True, "worker2": False})
    assert fast_path(remote, ("worker1", "worker2")).celery_release(
        {"version": "2.0.0", "hosts": ["worker1", "worker2"]}
    ) is None  # fmt: skip
    assert remote.order == [] and restarts == []  # checked on every host before any is touched


def test_a_silent_worker_host_fails_the_step_before_any_restart(
    restarts: list[tuple[str, tuple[str, ...]]],
) -> None:
    remote = StubRemote({"worker1": True, "worker2": True}, silent=("worker2",))
    with pytest.raises(RemoteError) as caught:
        fast_path(remote, ("worker1", "worker2")).celery_release(
            {"version": "2.0.0", "hosts": ["worker1", "worker2"]}
        )
    assert caught.value.unreachable and caught.value.host == "worker2"
    assert remote.order == []


def test_workers_that_do_not_come_back_stop_the_step_there(
    restarts: list[tuple[str, tuple[str, ...]]],
) -> None:
    hosts = ("worker1", "worker2-broken", "worker3")
    remote = StubRemote(dict.fromkeys(hosts, True))
    with pytest.raises(RemoteError, match=r"did not come back on 2\.0\.0: no ping") as caught:
        fast_path(remote, hosts).celery_release({"version": "2.0.0", "hosts": list(hosts)})
    assert caught.value.refused
    assert [h for _, h in remote.order] == ["worker1", "worker1", "worker2-broken",
                                            "worker2-broken"]  # worker3 left alone  # fmt: skip


# -- the executor -------------------------------------------------------------------------------


class StubFast:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.args: list[dict[str, Any]] = []

    def celery_release(self, arg: dict[str, Any]) -> Any:
        self.args.append(arg)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def run_step(tmp_path: Path, fast: StubFast) -> list[str]:
    runner = StubRunner()
    ctx = Context(runner=runner, policy=Policy(), events=Events("r1", []),  # type: ignore[arg-type]
                  journal=Journal(tmp_path), addresses={}, slot_ports={}, environment="test",
                  fast=fast)  # type: ignore[arg-type]  # fmt: skip
    plan = SimpleNamespace(previous="1.0.0", version="2.0.0", kind="rollout")
    Executor(ctx, plan).do(Celery("2.0.0", ("worker1",)))  # type: ignore[arg-type]
    return runner.playbooks


def test_the_celery_step_takes_the_fast_path_and_runs_no_playbook(tmp_path: Path) -> None:
    fast = StubFast({"worker1": {"switched": True}})
    assert run_step(tmp_path, fast) == []
    assert fast.args == [{"version": "2.0.0", "hosts": ["worker1"], "keep": ["1.0.0", "2.0.0"]}]


def test_without_the_release_on_a_worker_celery_yml_runs(tmp_path: Path) -> None:
    assert run_step(tmp_path, StubFast(None)) == ["celery.yml"]


def test_workers_that_do_not_come_back_fail_the_step(tmp_path: Path) -> None:
    failed = RemoteError("worker1", "the workers did not come back on 2.0.0", refused=True)
    with pytest.raises(StepFailed, match="worker1"):
        run_step(tmp_path, StubFast(failed))
