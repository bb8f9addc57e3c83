"""inkdeploy.gates.http.check_http against a real HTTP server on 127.0.0.1 that answers from a
script (one canned answer per request), with the sleep between tries recorded, not slept."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from inkdeploy.config import HttpGate
from inkdeploy.gates.http import check_http
from tests.unit.loopback import LoopbackServer

TARGET = "app2 green (2.0.0)"


@dataclass
class Answer:
    status: int = 200
    body: str = '{"version": "2.0.0"}'
    delay: float = 0.0


def healthy(version: str = "2.0.0", **fields: Any) -> Answer:
    return Answer(200, json.dumps({"version": version, **fields}))


class ScriptedServer(LoopbackServer):
    """Answers the Nth request with script[N] (the last entry repeats); records Host headers."""

    def __init__(self) -> None:
        self.script: list[Answer] = [healthy()]
        self.hosts: list[str | None] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hosts.append(self.headers.get("Host"))
                answer = owner.script[min(len(owner.hosts), len(owner.script)) - 1]
                time.sleep(answer.delay)
                payload = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up (timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/healthz"


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


GATE = HttpGate(retries=5, interval_s=2.0)


def test_passes_on_the_first_good_answer_with_the_host_header(
    server: ScriptedServer, sleeps: Sleeps
) -> None:
    result = check_http(server.url, GATE, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "pass"
    assert result.kind == "http" and result.gate == "app healthy" and result.target == TARGET
    assert re.fullmatch(
        rf"GET {server.url} on app2 green \(2\.0\.0\) answered 200 in \d+ ms \(try 1 of 5\)\.",
        result.message,
    )
    assert server.hosts == ["localhost"]
    assert sleeps == []
    assert result.evidence["expectations"]["json"] == {"version": "2.0.0"}
    [attempt] = result.evidence["attempts"]
    assert attempt["status"] == 200 and attempt["error"] is None
    assert attempt["body"] == '{"version": "2.0.0"}'


def test_retries_until_the_slot_is_ready(server: ScriptedServer, sleeps: Sleeps) -> None:
    server.script = [Answer(503, '{"db": "starting"}'), Answer(503, "{}"), healthy()]
    result = check_http(server.url, GATE, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "pass"
    assert "(try 3 of 5)" in result.message
    assert sleeps == [2.0, 2.0]
    assert [a["status"] for a in result.evidence["attempts"]] == [503, 503, 200]


def test_a_failing_status_says_what_was_seen_after_every_try(
    server: ScriptedServer, sleeps: Sleeps
) -> None:
    server.script = [Answer(503, '{"db": "timeout"}')]
    result = check_http(server.url, GATE, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert result.message == (
        f"GET {server.url} on {TARGET} returned 503 (expected 200) after 5 tries over 8 s; "
        'last body: {"db": "timeout"}'
    )
    assert sleeps == [2.0] * 4  # no pointless wait after the last try
    assert len(result.evidence["attempts"]) == 5
    assert result.seconds >= 8.0


def test_the_old_version_answering_is_a_failure(server: ScriptedServer, sleeps: Sleeps) -> None:
    server.script = [healthy("1.0.0")]
    result = check_http(server.url, GATE, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert f'{TARGET} answered version "1.0.0", expected "2.0.0" after 5 tries' in result.message


def test_dotted_json_paths_are_checked(server: ScriptedServer, sleeps: Sleeps) -> None:
    gate = GATE.model_copy(update={"expect_json": {"version": "{version}", "checks.db": "ok"}})
    server.script = [healthy(checks={"db": "timeout"})]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert 'answered checks.db "timeout", expected "ok"' in result.message

    server.script = [healthy()]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert 'answered without checks.db, expected checks.db "ok"' in result.message

    server.script = [healthy(checks={"db": "ok"})]
    assert check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps).outcome == "pass"


def test_json_values_that_are_not_strings_compare_as_json(
    server: ScriptedServer, sleeps: Sleeps
) -> None:
    gate = GATE.model_copy(update={"expect_json": {"ready": "true", "workers": "4"}})
    server.script = [Answer(200, '{"ready": true, "workers": 4}')]
    assert check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps).outcome == "pass"
    server.script = [Answer(200, '{"ready": false, "workers": 4}')]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert 'answered ready false, expected "true"' in result.message


def test_a_body_that_is_not_json(server: ScriptedServer, sleeps: Sleeps) -> None:
    server.script = [Answer(200, "<html>nginx default page</html>")]
    result = check_http(server.url, GATE, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert 'answered a body that is not JSON, expected version "2.0.0"' in result.message
    assert result.message.endswith("last body: <html>nginx default page</html>")


def test_expect_body_substitutes_the_version(server: ScriptedServer, sleeps: Sleeps) -> None:
    gate = GATE.model_copy(update={"expect_json": {}, "expect_body": "inkapp {version} ready"})
    server.script = [Answer(200, "inkapp 2.0.0 ready\n")]
    assert check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps).outcome == "pass"
    server.script = [Answer(200, "inkapp 1.0.0 ready\n")]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert 'answered without "inkapp 2.0.0 ready" in the body' in result.message
    assert result.evidence["expectations"]["body"] == "inkapp 2.0.0 ready"


def test_a_slow_answer_fails_with_the_latency_and_the_limit(
    server: ScriptedServer, sleeps: Sleeps
) -> None:
    gate = GATE.model_copy(update={"retries": 2, "max_latency_ms": 100})
    server.script = [Answer(200, '{"version": "2.0.0"}', delay=0.3)]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    match = re.search(r"took (\d+) ms, limit 100 ms after 2 tries", result.message)
    assert match, result.message
    assert 300 <= int(match.group(1)) < 2000
    assert all(a["latency_ms"] >= 300 for a in result.evidence["attempts"])


def test_nothing_listening_is_a_connection_failure(sleeps: Sleeps) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/healthz"
    result = check_http(url, GATE.model_copy(update={"retries": 3}), "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert result.message == (
        f"GET {url} on {TARGET} could not connect: connection refused after 3 tries over 4 s"
    )
    assert [a["error"] for a in result.evidence["attempts"]] == ["connection refused"] * 3
    assert all(a["status"] is None for a in result.evidence["attempts"])


def test_no_answer_within_the_timeout(server: ScriptedServer, sleeps: Sleeps) -> None:
    gate = GATE.model_copy(update={"retries": 1, "timeout_s": 0.2})
    server.script = [Answer(200, '{"version": "2.0.0"}', delay=1.0)]
    result = check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps)
    assert result.outcome == "fail"
    assert "failed: no answer within 0.2 s after 1 try over 0 s" in result.message
    assert sleeps == []


def test_without_host_header_the_url_host_is_sent(server: ScriptedServer, sleeps: Sleeps) -> None:
    gate = GATE.model_copy(update={"host_header": None})
    assert check_http(server.url, gate, "2.0.0", TARGET, sleep=sleeps).outcome == "pass"
    assert server.hosts == [f"127.0.0.1:{server.server.server_address[1]}"]


def test_evidence_keeps_the_first_300_characters_of_the_body(
    server: ScriptedServer, sleeps: Sleeps
) -> None:
    server.script = [Answer(500, json.dumps({"trace": "x" * 1000}))]
    result = check_http(
        server.url, GATE.model_copy(update={"retries": 1}), "2.0.0", "", sleep=sleeps
    )
    assert result.outcome == "fail"
    assert result.message.startswith(f"GET {server.url} returned 500 (expected 200) after 1 try")
    assert len(result.evidence["attempts"][0]["body"]) == 300
    assert result.message.endswith("...")  # the message keeps one readable line
