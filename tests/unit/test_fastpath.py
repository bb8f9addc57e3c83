"""The SSH fast path's parts that need no host: the weights payload against upstreams.conf as the
nginx_lb role renders it (through Ansible's templar), the connection settings read from the
inventory, and the executor's choice between fast path and playbook. The payload's nginx side
(check, reload, wait) runs on the lab: tests/stack and molecule/nginx_lb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inkdeploy.config import Policy
from inkdeploy.events import Events
from inkdeploy.execute import Context, Executor, StepFailed
from inkdeploy.fastpath import RemoteError
from inkdeploy.payloads import lb_weights
from inkdeploy.remote import connection
from inkdeploy.runner import PlaybookResult
from inkdeploy.state.journal import Journal
from inkdeploy.steps import KeepSlot, SetWeights

from .role_templates import render

HOSTVARS = {"app1": {"ansible_host": "10.0.0.1"}, "app2": {"ansible_host": "10.0.0.2"}}


def role_upstreams(weights: dict[str, int], **extra: Any) -> str:
    return render(
        "nginx_lb",
        "etc/nginx/inkdeploy/upstreams.conf.j2",
        groups={"all": ["app1", "app2"], "app": ["app1", "app2"]},
        hostvars=HOSTVARS,
        nginx_lb_slot_weights=weights,
        **extra,
    )


def fast(text: str, wanted: dict[str, int], allow_empty: bool = False) -> str:
    structure, current = lb_weights.parse(text)
    new = lb_weights.resolve(current, wanted, allow_empty)
    return lb_weights.render(text, new, lb_weights.upstreams_id(structure, new))


@pytest.mark.parametrize(
    "wanted",
    [
        {"app1:blue": 90, "app1:green": 10},
        {"app1:blue": 0, "app1:green": 100, "app2:blue": 0, "app2:green": 100},
        {"inkapp:app2:green": 7, "app2:green": 3},  # the APP:HOST:SLOT key wins, as in the role
    ],
)
def test_the_payload_writes_byte_for_byte_what_the_role_would(wanted: dict[str, int]) -> None:
    before = role_upstreams({})
    after = fast(before, wanted)
    assert after == role_upstreams(wanted)
    assert after != before


def test_the_identifier_follows_the_structure_not_only_the_weights() -> None:
    """Same weights, another upstream setting: a new identifier, so a wait cannot pass early."""
    plain = lb_weights.parse(role_upstreams({}))[0]
    tuned = lb_weights.parse(role_upstreams({}, nginx_lb_upstream_max_fails=5))[0]
    assert plain != tuned


@pytest.mark.parametrize(
    ("wanted", "allow_empty", "message"),
    [
        ({"app9:blue": 10}, False, "unknown keys app9:blue"),
        ({"app1:blue": 1001}, False, "whole numbers from 0 to 1000, got app1:blue=1001"),
        ({"app1:blue": True}, False, "whole numbers"),
        ({"app1:blue": "50"}, False, "whole numbers"),
        ({"app1:blue": 0, "app2:blue": 0}, False, "every slot of inkapp would be drained"),
    ],
)
def test_wrong_weights_are_refused_naming_what_is_wrong(
    wanted: dict[str, Any], allow_empty: bool, message: str
) -> None:
    with pytest.raises(lb_weights.Refused, match=message):
        fast(role_upstreams({}), wanted, allow_empty)


def test_draining_every_slot_needs_allow_empty() -> None:
    drained = {"app1:blue": 0, "app2:blue": 0}
    assert fast(role_upstreams({}), drained, allow_empty=True) == role_upstreams(
        drained, nginx_lb_allow_empty_upstream=True
    )


def test_a_file_from_an_older_role_is_refused_with_what_to_run() -> None:
    old = "\n".join(
        line for line in role_upstreams({}).splitlines() if "inkdeploy-structure" not in line
    )
    with pytest.raises(lb_weights.Refused, match=r"run playbooks/site\.yml"):
        lb_weights.parse(old)


# -- connection settings -----------------------------------------------------------------


def test_a_lab_host_is_reached_as_ansible_would() -> None:
    conn = connection(
        "lb1",
        {
            "ansible_host": "10.77.47.10",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": "/lab/id_ed25519",
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/lab/known_hosts",
        },
    )
    assert conn is not None and not conn.sudo
    argv = conn.argv(5)
    assert argv[-1] == "10.77.47.10"
    assert argv[argv.index("-i") + 1] == "/lab/id_ed25519"
    assert argv[argv.index("-l") + 1] == "root"
    assert "UserKnownHostsFile=/lab/known_hosts" in argv
    assert "BatchMode=yes" in argv and "ControlPersist=60s" in argv


def test_a_user_other_than_root_goes_through_sudo() -> None:
    conn = connection("lb1", {"ansible_host": "lb1.example", "ansible_user": "deploy"})
    assert conn is not None and conn.sudo


@pytest.mark.parametrize(
    "hostvars",
    [
        {"ansible_connection": "local"},
        {"ansible_become_password": "s3cret"},
        {"ansible_host": "{{ inventory_hostname }}.example"},
        {"ansible_user": "deploy", "ansible_become_method": "su"},
    ],
)
def test_settings_only_ansible_can_honour_leave_the_host_to_the_playbooks(
    hostvars: dict[str, Any],
) -> None:
    assert connection("lb1", hostvars) is None


# -- fast path or playbook ---------------------------------------------------------------


class StubFast:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls: list[tuple[str, Any]] = []

    def set_weights(self, weights: dict[str, int]) -> Any:
        return self._answer("set_weights", weights)

    def keep_slots(self, slots: dict[str, str]) -> Any:
        return self._answer("keep_slots", slots)

    def _answer(self, action: str, arg: Any) -> Any:
        self.calls.append((action, arg))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class StubRunner:
    def __init__(self) -> None:
        self.playbooks: list[str] = []

    def run(self, playbook: str, extravars: dict[str, Any], **_: Any) -> PlaybookResult:
        self.playbooks.append(playbook)
        return PlaybookResult(playbook, rc=0, status="successful", seconds=0.1)


def executor(tmp_path: Path, fast: StubFast | None) -> tuple[Executor, StubRunner, list[Any]]:
    runner = StubRunner()
    events = Events("r1", [])
    seen: list[Any] = []
    events.subscribe(seen.append)
    ctx = Context(
        runner=runner,  # type: ignore[arg-type]
        policy=Policy(),
        events=events,
        journal=Journal(tmp_path),
        addresses={},
        slot_ports={},
        environment="test",
        fast=fast,  # type: ignore[arg-type]
    )
    return Executor(ctx, plan=None), runner, seen  # type: ignore[arg-type]


WEIGHTS = SetWeights(weights={"app1:blue": 0, "app1:green": 100}, label="all", new_share=1.0)


def test_a_weight_step_takes_the_fast_path_and_runs_no_playbook(tmp_path: Path) -> None:
    ex, runner, seen = executor(tmp_path, StubFast({"lb1": {"changed": True}}))
    ex.do(WEIGHTS)
    assert runner.playbooks == []
    assert ex.ctx.traffic_switched is not None
    assert [e.data["action"] for e in seen if e.type == "fast_path"] == ["set_weights"]


@pytest.mark.parametrize("outcome", [None, False])
def test_without_a_fast_path_the_playbooks_run(tmp_path: Path, outcome: Any) -> None:
    ex, runner, _ = executor(tmp_path, StubFast(outcome))
    ex.do(WEIGHTS)
    ex.do(KeepSlot(slots={"app1": "blue"}))
    assert runner.playbooks == ["lb-weights.yml", "rollout/keep-slot.yml"]


@pytest.mark.parametrize(
    "error",
    [
        RemoteError("lb1", "nginx -t failed, the old upstreams were put back", refused=True),
        RemoteError("lb1", "did not answer over SSH (timeout)", unreachable=True),
    ],
)
def test_a_refusal_or_a_silent_host_fails_the_step(tmp_path: Path, error: RemoteError) -> None:
    ex, runner, _ = executor(tmp_path, StubFast(error))
    with pytest.raises(StepFailed, match="lb1"):
        ex.do(WEIGHTS)
    assert runner.playbooks == []


def test_a_fast_path_that_cannot_work_here_falls_back_to_the_playbook(tmp_path: Path) -> None:
    ex, runner, seen = executor(
        tmp_path, StubFast(RemoteError("lb1", "sudo: a password is required"))
    )
    ex.do(WEIGHTS)
    assert runner.playbooks == ["lb-weights.yml"]
    warnings = [e.data["message"] for e in seen if e.type == "warning"]
    assert warnings and "sudo: a password is required" in warnings[0]


class _DeadLbs:
    """A Remote whose every host is powered off (ssh exits 255)."""

    def usable(self, hosts) -> bool:
        return True

    def commands(self, argvs, timeout_s, patience_s=0.0):
        from inkdeploy.remote import Reply

        return {h: Reply(h, 255, "", "ssh: connect to host: Connection timed out", timeout_s)
                for h in argvs}  # fmt: skip


def test_with_every_load_balancer_down_only_status_gets_an_answer() -> None:
    """Status says no load balancer answered; a rollback or rollout gets the error (nothing
    to switch) instead of an empty fleet."""
    from inkdeploy.fastpath import FastPath
    from inkdeploy.remote import RemoteError

    fast = FastPath(_DeadLbs(), "inkapp", ("lb1",), ("app1",), (), {})  # type: ignore[arg-type]
    seen = fast.upstreams(tolerate_unreachable=True, none_may_answer=True)
    assert seen is not None and isinstance(seen["lb1"], RemoteError) and seen["lb1"].unreachable
    with pytest.raises(RemoteError, match="did not answer over SSH"):
        fast.upstreams(tolerate_unreachable=True)
