"""With --json, a command that fails or is refused still says why on stdout (one JSON line), so
automation reading stdout gets the reason and the partial result; without --json, stdout stays
free of it and the sentence goes to stderr."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from inkdeploy.cli import app
from inkdeploy.console import json_error
from inkdeploy.ops.workers import WorkersFailed, WorkersRefused

PARTIAL = {"action": "restart", "hosts": [{"host": "worker1", "state": "failed"}]}


def _restart_failing(monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    monkeypatch.setattr("inkdeploy.ops.workers_cli.load_environment", lambda *_a, **_k: None)

    def restart(*_args: object, **_kwargs: object) -> None:
        raise exc

    monkeypatch.setattr("inkdeploy.ops.workers_cli.restart_workers", restart)


def test_a_failed_restart_prints_the_reason_and_the_partial_result_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed = WorkersFailed("The workers on worker1 did not come back: no ping.",
                           detail=json.dumps(PARTIAL))  # fmt: skip
    _restart_failing(monkeypatch, failed)
    result = CliRunner().invoke(app, ["workers", "restart", "-i", "x", "--json"])
    assert result.exit_code == 1
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["type"] == "error"
    assert line["data"]["message"].startswith("The workers on worker1 did not come back")
    assert line["data"]["exit_code"] == 1
    assert line["data"]["detail"] == PARTIAL  # still JSON, not a string of it
    assert "Traceback" not in result.output


def test_a_refusal_keeps_its_exit_code_in_the_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = WorkersRefused("Nothing was restarted: worker2 is not a worker host.")
    _restart_failing(monkeypatch, refused)
    result = CliRunner().invoke(app, ["workers", "restart", "-i", "x", "--json"])
    assert result.exit_code == refused.exit_code != 0
    line = json.loads(result.stdout)
    assert line == {"type": "error", "data": {"message": refused.message,
                                              "exit_code": refused.exit_code}}  # fmt: skip


def test_without_json_stdout_has_no_json_and_stderr_has_the_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _restart_failing(monkeypatch, WorkersFailed("The workers on worker1 did not come back."))
    result = CliRunner().invoke(app, ["workers", "restart", "-i", "x"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "did not come back" in result.stderr


def test_a_detail_that_is_not_json_stays_text() -> None:
    assert json_error("No.", 2, "ssh: connect timed out")["data"]["detail"] == (
        "ssh: connect timed out"
    )
