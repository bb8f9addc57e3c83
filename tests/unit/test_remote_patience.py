"""A read that times out on a host that still accepts TCP on its SSH port is asked once more,
with patience (a starved host is slow, not down); a host that does not accept TCP costs its
short timeout only; a change is never asked twice. `ssh` here is a stand-in script on PATH that
answers late the first time; the TCP side is a real listening socket (or a closed port)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inkdeploy.fastpath import FastPath
from inkdeploy.remote import READ_PATIENCE_S, Remote

FAKE_SSH = """#!/bin/sh
n=$(cat "{calls}" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{calls}"
[ $n -le {slow} ] && sleep 5
echo answered
"""


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once it is closed


def fake_ssh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slow: int = 1) -> Path:
    calls = tmp_path / "calls"
    script = tmp_path / "bin" / "ssh"
    script.parent.mkdir()
    script.write_text(FAKE_SSH.format(calls=calls, slow=slow))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls


def remote(port: int) -> Remote:
    return Remote({"app1": {"ansible_host": "127.0.0.1", "ansible_port": port,
                            "ansible_user": "root"}})  # fmt: skip


def test_a_slow_but_alive_host_is_asked_again_and_answers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening: int
) -> None:
    calls = fake_ssh(monkeypatch, tmp_path)
    reply = remote(listening).command("app1", ["true"], timeout_s=1, patience_s=10)
    assert reply.rc == 0 and reply.stdout.strip() == "answered"
    assert calls.read_text().strip() == "2"
    assert 1 <= reply.seconds < 5  # the whole wait, both attempts


def test_a_host_that_refuses_tcp_costs_only_its_timeout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = fake_ssh(monkeypatch, tmp_path)
    started = time.monotonic()
    reply = remote(closed_port()).command("app1", ["true"], timeout_s=1, patience_s=10)
    assert reply.unreachable and reply.stderr == "no answer within 1 s"
    assert calls.read_text().strip() == "1"
    assert time.monotonic() - started < 3


def test_a_change_is_never_asked_twice(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening: int
) -> None:
    calls = fake_ssh(monkeypatch, tmp_path)
    reply = remote(listening).command("app1", ["true"], timeout_s=1)
    assert reply.unreachable and calls.read_text().strip() == "1"


def test_too_slow_even_with_patience_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listening: int
) -> None:
    fake_ssh(monkeypatch, tmp_path, slow=2)
    reply = remote(listening).command("app1", ["true"], timeout_s=1, patience_s=2)
    assert reply.unreachable
    assert "alive but too slow" in reply.problem()


class _Recorder:
    def __init__(self) -> None:
        self.patience: list[float] = []

    def usable(self, hosts: Any) -> bool:
        return True

    def payload_each(self, name: str, params: Any, timeout_s: Any, patience_s: float = 0.0):
        self.patience.append(patience_s)
        return {h: {} for h in params}


@pytest.mark.parametrize(
    ("args", "patience"),
    [
        ({"state": "query", "history_lines": 500}, READ_PATIENCE_S),
        ({"state": "query", "record": {"kind": "db"}}, 0.0),  # writes a history record
        ({"state": "acquire", "holder": {}}, 0.0),
        ({"state": "release", "rollout": "r1"}, 0.0),
    ],
)
def test_only_a_pure_lock_query_is_asked_with_patience(
    args: dict[str, Any], patience: float
) -> None:
    recorder = _Recorder()
    fast = FastPath(recorder, "inkapp", ("lb1",), ("app1",), (), {})  # type: ignore[arg-type]
    fast.lock_each(("lb1",), args, 3.0)
    assert recorder.patience == [patience]
