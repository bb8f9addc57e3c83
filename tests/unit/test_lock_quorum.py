"""The deploy lock on a majority of its hosts (group deploy_lock): any minority may be down for
a rollback, status or drain; a rival never holds it at the same time; the history is the union
of what every lock host kept. Each lock host here is the real lock module on a directory of its
own; a host that is "down" answers like an SSH timeout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inkdeploy.errors import InkdeployError
from inkdeploy.inventory import Environment, Policy
from inkdeploy.remote import RemoteError
from inkdeploy.runner import Runner
from inkdeploy.state.lock import (
    FleetLock,
    LockHeld,
    agreed_holder,
    holder_info,
    lock_hosts,
    merge_history,
)

from .test_lock import lock_module

HOSTS = ("lb1", "lb2", "data1")


class LockHosts:
    """The fast path's lock_each over one lock directory per host; DOWN hosts time out."""

    def __init__(self, root: Path) -> None:
        self.dirs = {h: root / h for h in HOSTS}
        for d in self.dirs.values():
            d.mkdir()
        self.down: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def serves(self, hosts: tuple[str, ...]) -> bool:
        return True

    def lock_each(self, hosts: tuple[str, ...], args: dict[str, Any], timeout_s: float) -> dict:
        answers: dict[str, Any] = {}
        for host in hosts:
            self.calls.append((host, args["state"]))
            if host in self.down:
                answers[host] = RemoteError(host, "did not answer over SSH (timeout)", True)
            else:
                answers[host] = lock_module(self.dirs[host], **{k: v for k, v in args.items()
                                                               if k != "name"})  # fmt: skip
        return answers


@pytest.fixture
def hosts(tmp_path: Path) -> LockHosts:
    return LockHosts(tmp_path)


def lock(hosts: LockHosts, tmp_path: Path) -> FleetLock:
    return FleetLock(Runner(tmp_path / "hosts.yml"), "inkapp", fast=hosts, hosts=HOSTS)  # type: ignore[arg-type]


def me(rollout: str = "r1") -> dict[str, Any]:
    return holder_info(rollout, "2.0.0", "canary", f"held by {rollout}")


def test_the_lock_is_taken_released_and_recorded_with_one_lock_host_down(
    hosts: LockHosts, tmp_path: Path
) -> None:
    hosts.down = {"lb1"}
    fleet_lock = lock(hosts, tmp_path)
    assert fleet_lock.acquire(me(), lease_s=30)["rollout"] == "r1"
    assert fleet_lock.query()["holder"]["rollout"] == "r1"
    assert list(fleet_lock.silent) == ["lb1"]
    fleet_lock.release("r1", {"rollout": "r1", "kind": "rollback", "started": 1.0})
    hosts.down = {"lb2"}  # lb1 is back, it missed both the lock and the record
    state = fleet_lock.query()
    assert state["holder"] == {}
    assert [r["rollout"] for r in state["history"]] == ["r1"]


def test_a_rival_on_a_majority_keeps_it_and_the_loser_gives_back_what_it_won(
    hosts: LockHosts, tmp_path: Path
) -> None:
    # the rival won lb2 and data1 while lb1 was down; lb1 is back and free
    hosts.down = {"lb1"}
    lock(hosts, tmp_path).acquire(me("rival"), lease_s=30)
    hosts.down = set()
    with pytest.raises(LockHeld, match="rival"):
        lock(hosts, tmp_path).acquire(me("r2"), lease_s=30)
    assert lock_module(hosts.dirs["lb1"], state="query")["holder"] == {}  # given back


def test_without_a_majority_nothing_is_taken_and_the_error_names_the_silent_hosts(
    hosts: LockHosts, tmp_path: Path
) -> None:
    hosts.down = {"lb1", "lb2"}
    with pytest.raises(InkdeployError, match="1 of 3 lock hosts answered") as refused:
        lock(hosts, tmp_path).acquire(me(), lease_s=30)
    assert "it needs 2" in str(refused.value) and "lb1" in str(refused.value)


def test_a_heartbeat_puts_the_lock_back_on_a_host_that_returned_empty(
    hosts: LockHosts, tmp_path: Path
) -> None:
    hosts.down = {"data1"}
    fleet_lock = lock(hosts, tmp_path)
    fleet_lock.acquire(me(), lease_s=30)
    hosts.down = set()
    fleet_lock.quiet_since.clear()  # ASK_SILENT_AGAIN_S later: data1 is asked again
    assert fleet_lock.heartbeat("r1")["acquired"]
    assert lock_module(hosts.dirs["data1"], state="query")["holder"]["rollout"] == "r1"


def test_a_heartbeat_is_lost_once_a_majority_has_another_holder(
    hosts: LockHosts, tmp_path: Path
) -> None:
    fleet_lock = lock(hosts, tmp_path)
    fleet_lock.acquire(me(), lease_s=30)
    for host in ("lb2", "data1"):  # `lock release --force` reached these, then a rival came
        lock_module(hosts.dirs[host], state="release", force=True)
        lock_module(hosts.dirs[host], state="acquire", holder=me("rival"))
    beat = fleet_lock.heartbeat("r1")
    assert not beat["acquired"] and beat["holder"]["rollout"] == "rival"


def test_a_silent_host_is_left_out_while_the_others_are_a_majority_and_asked_when_not(
    hosts: LockHosts, tmp_path: Path
) -> None:
    hosts.down = {"lb1"}
    fleet_lock = lock(hosts, tmp_path)
    fleet_lock.acquire(me(), lease_s=30)
    hosts.calls.clear()
    fleet_lock.heartbeat("r1")
    assert [h for h, _ in hosts.calls] == ["lb2", "data1"]  # no SSH timeout on lb1 again
    assert "not asked again" in fleet_lock.silent["lb1"]
    hosts.down = {"lb2"}  # lb1 is back, lb2 went: lb2 and data1 are no majority, lb1 is asked
    hosts.calls.clear()
    assert fleet_lock.query()["holder"]["rollout"] == "r1"
    assert [h for h, _ in hosts.calls] == ["lb2", "data1", "lb1"]


def test_agreed_holder_prefers_the_live_holder_most_hosts_name() -> None:
    live = {"rollout": "a", "heartbeat_at": 5.0}
    stale = {"rollout": "b", "expired": True}
    answers = {"lb1": {"holder": live}, "lb2": {"holder": stale}, "data1": {"holder": {}}}
    assert agreed_holder(answers)["rollout"] == "a"
    assert agreed_holder({"lb1": {"holder": stale}, "lb2": {"holder": {}}})["rollout"] == "b"
    assert agreed_holder({"lb1": {"holder": {}}}) == {}


def test_merge_history_is_the_union_in_start_order_without_duplicates() -> None:
    one = {"rollout": "r1", "started": 1.0}
    two = {"rollout": "r2", "started": 2.0}
    three = {"rollout": "r3", "started": 3.0}
    answers = {"lb1": {"history": [one, three]}, "lb2": {"history": [one, two]}}
    assert merge_history(answers, 10) == [one, two, three]
    assert merge_history(answers, 2) == [two, three]


def test_lock_hosts_come_from_deploy_lock_else_rollout_lock_host_else_the_first_lb() -> None:
    def env(groups: dict[str, list[str]], hostvars: dict[str, dict] | None = None) -> Environment:
        return Environment(Path("x"), "x", groups, hostvars or {}, Policy())

    assert lock_hosts(env({"lb": ["lb1", "lb2"], "deploy_lock": list(HOSTS)})) == HOSTS
    assert lock_hosts(env({"lb": ["lb1"]}, {"lb1": {"rollout_lock_host": "ops1"}})) == ("ops1",)
    assert lock_hosts(env({"lb": ["lb1", "lb2"]})) == ("lb1",)
    assert lock_hosts(env({"db": ["db1"]})) == ()
