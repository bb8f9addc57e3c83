"""inkdeploy.events: the event file, redaction, and webhook / Grafana delivery against a real
local HTTP server that can answer, fail, hang or be gone."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inkdeploy.config import Notify
from inkdeploy.events import (
    Event,
    Events,
    GrafanaAnnotations,
    JsonLinesFile,
    JsonStdout,
    Webhook,
    environment_secrets,
    redact,
    sinks_from_notify,
)
from tests.unit.test_status_data_tier import _ca_and_server_cert

TOKEN = "glsa_s3cr3tTOKENvalue"  # noqa: S105 (a fake, to prove it never leaks)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Receiver:
    """What the server does with each request: answer STATUS after sleeping DELAY seconds."""

    url: str
    status: int = 200
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    next_id: int = 41

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with _serve() as state:
        yield state


@contextlib.contextmanager
def _serve(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A Receiver on loopback; over https with the server context TLS when given."""
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length) if length else b""
            # the answer is fixed before the request is counted: a test that changes STATUS
            # once it saw N requests does not change the answer to the Nth
            status = state.status
            state.requests.append(
                Request(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
            )
            time.sleep(state.delay)
            answer = b"{}"
            if self.command == "POST" and self.path == "/api/annotations":
                state.next_id += 1
                answer = json.dumps({"id": state.next_id, "message": "Annotation added"}).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
            except OSError:  # the client gave up waiting
                pass

        do_POST = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def refused_url() -> str:
    """A local port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def timed_emits(events: Events, count: int) -> float:
    """The slowest of COUNT emit() calls of important events, in seconds."""
    slowest = 0.0
    for i in range(count):
        start = time.monotonic()
        events.emit("step_failed", step=f"drain app{i}", error="boom")
        slowest = max(slowest, time.monotonic() - start)
    return slowest


# --- Event and the local sinks ---------------------------------------------------------------


def test_event_json_is_one_sorted_line_with_iso_and_epoch_time() -> None:
    event = Event("step_done", "r-1", 1_700_000_000.25, {"step": "drain app1\nnow", "b": 1})
    line = event.to_json()
    assert "\n" not in line
    record = json.loads(line)
    assert list(record) == sorted(record)
    assert record["ts"] == "2023-11-14T22:13:20.250Z"
    assert datetime.fromisoformat(record["ts"]).timestamp() == record["epoch"] == event.ts
    assert record["type"] == "step_done"
    assert record["rollout"] == "r-1"
    assert record["data"] == {"b": 1, "step": "drain app1\nnow"}


def test_json_lines_file_appends_fsynced_lines_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "rollouts" / "r-1.jsonl"
    events = Events("r-1", [JsonLinesFile(path)])
    events.emit("rollout_started", app="inkapp", version="2.3.1")
    # The line is on disk before emit returns, without closing: read it from another handle.
    assert json.loads(path.read_text())["type"] == "rollout_started"
    events.emit("step_done", step="drain app1")
    events.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # A second run appends; it does not truncate the record.
    again = JsonLinesFile(path)
    again.emit(Event("rollout_finished", "r-1", time.time(), {"result": "succeeded"}))
    again.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["type"] for r in records] == ["rollout_started", "step_done", "rollout_finished"]
    assert records[0]["data"] == {"app": "inkapp", "version": "2.3.1"}
    assert records[1]["data"] == {"step": "drain app1"}
    assert all(r["rollout"] == "r-1" for r in records)


def test_json_lines_file_tightens_an_existing_file_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("")
    path.chmod(0o644)
    JsonLinesFile(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_json_stdout_writes_one_line_per_event() -> None:
    stream = io.StringIO()
    events = Events("r-2", [JsonStdout(stream)])
    events.emit("step_started", step="a")
    events.emit("step_done", step="a")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["type"] for line in lines] == ["step_started", "step_done"]


# --- Redaction -------------------------------------------------------------------------------


def test_redact_masks_secret_keys_at_any_depth() -> None:
    value = {
        "db": {"host": "db1", "PASSWORD": "hunter22", "users": [{"name": "a", "api_key": "k"}]},
        "Authorization": "Bearer abc",
        "headers": [{"Cookie": "sid=1"}, {"accept": "json"}],
        "vault_id": "prod",
        "grafana_token_env": "INKDEPLOY_GRAFANA_TOKEN",
        "private-key": "-----BEGIN",
        "count": 3,
        "ok": True,
        "none": None,
    }
    assert redact(value) == {
        "db": {"host": "db1", "PASSWORD": "***", "users": [{"name": "a", "api_key": "***"}]},
        "Authorization": "***",
        "headers": [{"Cookie": "***"}, {"accept": "json"}],
        "vault_id": "***",
        "grafana_token_env": "***",
        "private-key": "***",
        "count": 3,
        "ok": True,
        "none": None,
    }
    assert value["db"]["PASSWORD"] == "hunter22"  # noqa: S105 (a copy: the input is untouched)


def test_redact_masks_secret_values_inside_strings_and_ignores_short_ones() -> None:
    value = {
        "cmd": ["psql", "postgres://app@db1/app?password=hunter22"],
        "log": ("stderr: auth failed for hunter22", 5),
        "short": "abc is not masked",
    }
    assert redact(value, secrets=["hunter22", "abc", ""]) == {
        "cmd": ["psql", "postgres://app@db1/app?password=***"],
        "log": ("stderr: auth failed for ***", 5),
        "short": "abc is not masked",
    }


def test_redact_masks_the_password_in_url_userinfo() -> None:
    assert redact("https://deploy:pa55word@hooks.example.com/x") == (
        "https://deploy:***@hooks.example.com/x"
    )
    assert redact({"msg": "GET redis://:s3cret@10.0.0.5:6379/0 failed; http://h/ok"}) == {
        "msg": "GET redis://:***@10.0.0.5:6379/0 failed; http://h/ok"
    }
    # Objects are made strings first, so their str() cannot smuggle a secret through.
    assert redact([Path("/srv/hunter22")], secrets=["hunter22"]) == ["/srv/***"]


def test_redact_masks_credentials_in_command_lines_and_keeps_prose() -> None:
    masked = {
        "curl -fsS -H 'Authorization: Bearer eyJhbGciOi.x' https://ci/hook": (
            "curl -fsS -H 'Authorization: Bearer ***' https://ci/hook"
        ),
        "PGPASSWORD=s3cr3t psql -h db1 -c 'select 1'": "PGPASSWORD=*** psql -h db1 -c 'select 1'",
        "notify --token tok123 --channel ops": "notify --token *** --channel ops",
        "migrate --db-password=hunter2 --fast": "migrate --db-password=*** --fast",
        'SLACK_SECRET="a b c" ./post.sh': "SLACK_SECRET=*** ./post.sh",
        "api_key: XYZ123": "api_key: ***",
    }
    for text, expected in masked.items():
        assert redact(text) == expected
    for prose in (
        "The lock token is held by alice",
        "password reset link sent",
        "x --password --next",  # a flag without a value
        'version:http_errors:ratio_rate30s{version="2.0.0"} was 0.2',
    ):
        assert redact(prose) == prose


def test_environment_secrets_are_the_values_of_secret_looking_names() -> None:
    env = {
        "PATH": "/usr/bin", "PGPASSWORD": "pgpw1234", "AWS_SECRET_ACCESS_KEY": "awskey99",
        "VAULT_TOKEN": "", "HOME": "/root", "grafana_annotations_token_name": "inkdeploy",
        "ansible_ssh_private_key_file": "/srv/key", "redis_password": "{{ vault_redis }}",
    }  # fmt: skip
    assert sorted(environment_secrets(env)) == ["awskey99", "pgpw1234"]
    assert redact("hook said: pgpw1234 rejected", environment_secrets(env)) == (
        "hook said: *** rejected"
    )


def test_events_redact_before_any_sink_or_subscriber_sees_the_event(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    seen: list[Event] = []
    events = Events("r-3", [JsonLinesFile(path)], secrets=["hunter22"])
    events.subscribe(seen.append)
    returned = events.emit("step_failed", error="login hunter22 refused", env={"DB_PASSWORD": "x"})
    events.close()
    assert returned.data == {"error": "login *** refused", "env": {"DB_PASSWORD": "***"}}
    assert seen == [returned]
    assert "hunter22" not in path.read_text()
    assert json.loads(path.read_text())["data"] == returned.data


def test_a_failing_sink_or_subscriber_is_dropped_and_the_rest_keep_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def emit(self, event: Event) -> None:
            self.calls += 1
            raise OSError("disk full")

        def close(self) -> None:
            raise OSError("still full")

    broken = Broken()
    seen: list[str] = []

    def bad_display(event: Event) -> None:
        raise RuntimeError("terminal gone")

    path = tmp_path / "events.jsonl"
    events = Events("r-4", [broken, JsonLinesFile(path)])
    events.subscribe(bad_display)
    events.subscribe(lambda e: seen.append(e.type))
    with caplog.at_level(logging.WARNING, logger="inkdeploy.events"):
        events.emit("step_started", step="a")
        events.emit("step_done", step="a")
        events.close()
    assert broken.calls == 1
    assert seen == ["step_started", "step_done"]
    assert len(path.read_text().splitlines()) == 2
    assert sum("failed; dropped" in r.getMessage() for r in caplog.records) == 2


# --- Webhook ---------------------------------------------------------------------------------


def test_webhook_receives_only_important_events_as_json(receiver: Receiver) -> None:
    events = Events("r-5", [Webhook(receiver.url + "/hook")])
    events.emit("rollout_started", app="inkapp", strategy="canary", version="2.3.1")
    events.emit("step_started", step="drain app1")
    events.emit("gate", name="app healthy", outcome="pass")
    events.emit("gate", name="error ratio", outcome="fail", value=0.2)
    events.emit("step_failed", step="start green on app1", error="exit 1")
    events.emit("lock", holder="me")
    events.emit("lock_refused", holder="someone else")
    events.emit("rollback_started", reason="gate failed")
    events.emit("rollout_finished", result="rolled_back")
    events.close()

    got = receiver.requests
    assert [(r.method, r.path) for r in got] == [("POST", "/hook")] * 6
    assert [r.body["type"] for r in got] == [
        "rollout_started",
        "gate",
        "step_failed",
        "lock_refused",
        "rollback_started",
        "rollout_finished",
    ]
    assert got[1].body["data"] == {"name": "error ratio", "outcome": "fail", "value": 0.2}
    assert all(r.headers["content-type"] == "application/json" for r in got)
    assert all(r.body["rollout"] == "r-5" and "epoch" in r.body for r in got)


def test_webhook_with_explicit_types_gets_exactly_those(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, types={"step_done"})
    events = Events("r-6", [hook])
    events.emit("rollout_started")
    events.emit("step_done", step="a")
    events.close()
    assert [r.body["type"] for r in receiver.requests] == ["step_done"]


def test_webhook_answering_500_is_retried_twice_then_logged(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.status = 500
    events = Events("r-7", [Webhook(receiver.url + "/T0123/B456/xoxsecretpath")])
    # INFO everywhere: httpx itself logs each request's full URL at INFO.
    with caplog.at_level(logging.INFO):
        assert timed_emits(events, 1) < 0.2
        events.close()
    assert len(receiver.requests) == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("HTTP 500" in m and "after 3 tries" in m for m in messages), messages
    assert not any("xoxsecretpath" in m for m in messages)


def test_a_hanging_webhook_neither_blocks_emit_nor_close(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.delay = 3.0
    hook = Webhook(receiver.url, timeout=0.3, close_timeout=0.5)
    events = Events("r-8", [hook])
    with caplog.at_level(logging.WARNING, logger="inkdeploy.events"):
        assert timed_emits(events, 5) < 0.2
        start = time.monotonic()
        events.close()
        assert time.monotonic() - start < 1.0
    assert receiver.wait_for(1)  # it did try
    assert any("gave up" in r.getMessage() for r in caplog.records)


def test_a_refused_webhook_is_logged_with_the_host_only(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = refused_url.replace("http://", "http://deploy:pa55word@") + "/hooks/abc"
    events = Events("r-9", [Webhook(url)])
    with caplog.at_level(logging.WARNING):
        assert timed_emits(events, 2) < 0.2
        events.close()  # both events: 3 tries each, about 1 s of backoff each
    messages = [r.getMessage() for r in caplog.records if r.name == "inkdeploy.events"]
    host = refused_url.removeprefix("http://")
    assert sum(host in m and "ConnectError" in m for m in messages) == 2, messages
    assert not any(
        "pa55word" in r.getMessage() or "/hooks" in r.getMessage() for r in caplog.records
    )


def test_close_meets_its_deadline_when_the_receiver_is_down(
    refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = Events("r-10", [Webhook(refused_url, close_timeout=0.5)])
    with caplog.at_level(logging.WARNING, logger="inkdeploy.events"):
        assert timed_emits(events, 10) < 0.2
        start = time.monotonic()
        events.close()
        elapsed = time.monotonic() - start
    assert elapsed < 0.8
    gave_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert gave_up and "event(s) not delivered" in gave_up[0]


def test_several_dead_receivers_drain_in_parallel_under_one_deadline(refused_url: str) -> None:
    hooks = [Webhook(refused_url, close_timeout=0.5) for _ in range(4)]
    events = Events("r-11", hooks)
    timed_emits(events, 5)
    start = time.monotonic()
    events.close()
    assert time.monotonic() - start < 0.9  # not 4 x 0.5 s


# --- Grafana ---------------------------------------------------------------------------------


def test_grafana_region_annotation_from_start_to_finish(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "events.jsonl"
    events = Events(
        "r-12", [JsonLinesFile(path), GrafanaAnnotations(receiver.url + "/", TOKEN)], [TOKEN]
    )
    with caplog.at_level(logging.DEBUG):
        started = events.emit(
            "rollout_started",
            app="inkapp",
            strategy="canary",
            version="2.3.1",
            note=f"grafana token is {TOKEN}",
        )
        events.emit("step_done", step="shift 10%")
        events.emit("rollback_started", reason="error ratio 0.2 >= 0.01")
        finished = events.emit("rollout_finished", result="rolled_back")
        events.close()

    create, rollback, patch = receiver.requests
    assert (create.method, create.path) == ("POST", "/api/annotations")
    assert create.body["tags"] == ["inkdeploy", "deploy", "inkapp", "canary", "2.3.1"]
    assert create.body["time"] == int(started.ts * 1000)
    assert "2.3.1" in create.body["text"]
    assert "timeEnd" not in create.body

    assert (rollback.method, rollback.path) == ("POST", "/api/annotations")
    assert "rollback" in rollback.body["tags"]
    assert "timeEnd" not in rollback.body
    assert "error ratio 0.2" in rollback.body["text"]

    assert (patch.method, patch.path) == ("PATCH", "/api/annotations/42")  # the id from create
    assert patch.body["timeEnd"] == int(finished.ts * 1000)
    assert "rolled_back" in patch.body["text"]

    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in receiver.requests)
    assert TOKEN not in path.read_text()
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def test_grafana_over_https_trusts_the_ca_of_notify_grafana_ca_file(tmp_path: Path) -> None:
    """The grafana role serves https with a certificate from its internal CA: the sink trusts
    grafana_ca_file, and refuses a Grafana whose certificate that CA did not sign."""
    ca, cert, key = _ca_and_server_cert(tmp_path / "pki" / "grafana")
    _, other_cert, other_key = _ca_and_server_cert(tmp_path / "other")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    impostor = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    impostor.load_cert_chain(other_cert, other_key)
    policy = Notify.model_validate({"grafana_url": "https://127.0.0.1:1", "grafana_ca_file": ca})
    with _serve(server) as grafana, _serve(impostor) as other:
        for target in (grafana, other):
            sink = GrafanaAnnotations(target.url, TOKEN, 2, close_timeout=3, cafile=ca)
            events = Events("r-15", [sink], [TOKEN])
            events.emit("rollout_started", app="inkapp", strategy="canary", version="2.3.1")
            events.close()
    assert [r.path for r in grafana.requests] == ["/api/annotations"]
    assert other.requests == []  # the handshake failed: nothing reached it
    assert policy.grafana_ca_file == ca
    with pytest.raises(ValidationError):
        Notify.model_validate({"grafana_ca_file": tmp_path / "missing.crt"})


def test_grafana_without_a_start_annotation_adds_the_whole_region_at_the_end(
    receiver: Receiver,
) -> None:
    receiver.status = 503
    grafana = GrafanaAnnotations(receiver.url, TOKEN)
    events = Events("r-13", [grafana])
    started = events.emit("rollout_started", app="inkapp", strategy="rolling", version="2.4.0")
    receiver.wait_for(3)  # the create failed three times
    receiver.status = 200
    finished = events.emit("rollout_finished", result="succeeded")
    events.close()
    last = receiver.requests[-1]
    assert (last.method, last.path) == ("POST", "/api/annotations")
    assert last.body["time"] == int(started.ts * 1000)
    assert last.body["timeEnd"] == int(finished.ts * 1000)
    assert "succeeded" in last.body["tags"]


def test_a_hanging_grafana_does_not_block_emit_and_close_keeps_its_deadline(
    receiver: Receiver,
) -> None:
    receiver.delay = 3.0
    events = Events("r-14", [GrafanaAnnotations(receiver.url, TOKEN, 0.3, close_timeout=0.5)])
    start = time.monotonic()
    events.emit("rollout_started", app="inkapp", version="2")
    events.emit("rollout_finished", result="succeeded")
    assert time.monotonic() - start < 0.2
    events.close()
    assert time.monotonic() - start < 1.0


# --- Configuration ---------------------------------------------------------------------------


def test_sinks_from_notify(receiver: Receiver) -> None:
    notify = Notify(
        webhooks=[receiver.url + "/a", receiver.url + "/b"],
        grafana_url=receiver.url,
        grafana_token_env="GRAFANA_TOKEN",  # noqa: S106 (the variable's name)
    )
    sinks, warnings = sinks_from_notify(notify, {"GRAFANA_TOKEN": TOKEN})
    assert warnings == []
    assert [type(s) for s in sinks] == [Webhook, Webhook, GrafanaAnnotations]
    events = Events("r-15", sinks)
    events.emit("rollout_started", app="inkapp", strategy="canary", version="1")
    events.close()
    assert sorted(r.path for r in receiver.requests) == ["/a", "/api/annotations", "/b"]


def test_sinks_from_notify_warns_when_the_grafana_token_is_missing() -> None:
    env_name = "GRAFANA_TOKEN"
    notify = Notify(grafana_url="https://grafana.example.com", grafana_token_env=env_name)
    sinks, warnings = sinks_from_notify(notify, {})
    assert sinks == []
    assert len(warnings) == 1
    assert "GRAFANA_TOKEN" in warnings[0] and "grafana.example.com" in warnings[0]
    assert sinks_from_notify(Notify(), {}) == ([], [])
