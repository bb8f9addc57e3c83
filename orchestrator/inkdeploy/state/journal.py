"""The rollout journal on the controller: every event of a rollout as a JSON line, fsync'd as it
happens, so that after the orchestrator is killed `inkdeploy status` shows where it stopped and
`rollout --resume` or `rollback` can finish the job. Also the control file through which
`inkdeploy pause|resume|promote|abort` talk to a running rollout."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.lab.procs import pid_alive
from inkdeploy.steps import Step, step_from_dict

CONTROL_ACTIONS = ("pause", "resume", "promote", "abort")


def state_dir(inventory: Path) -> Path:
    """Where an environment's journal lives: next to its inventory (git-ignored)."""
    base = inventory if inventory.is_dir() else inventory.parent
    return base / ".inkdeploy"


@dataclass
class JournalView:
    """A rollout as its journal tells it."""

    rollout: str
    path: Path
    started: dict[str, Any] = field(default_factory=dict)  # the rollout_started event's data
    steps: list[Step] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    running: int | None = None  # step started, neither done nor failed
    failed: dict[int, str] = field(default_factory=dict)
    finished: dict[str, Any] | None = None  # the rollout_finished event's data
    last_event: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None
    # the rollback_started event's data once the automatic rollback began
    rollback: dict[str, Any] | None = None
    signalled: bool = False  # Ctrl-C or SIGTERM ended the rollout phase
    # the last pause (gate, operator, approval) not yet resumed: its data and time
    paused: dict[str, Any] | None = None

    @property
    def next_step(self) -> int:
        """The rollout step to run next on resume (only meaningful when not must_roll_back)."""
        return max(self.done) + 1 if self.done else 0

    @property
    def must_roll_back(self) -> bool:
        """A step failed, the rollout was interrupted by a signal or its automatic rollback had
        begun: what is left to do is the rollback, never the rest of the rollout."""
        return bool(self.failed or self.rollback or self.signalled)

    @property
    def stopped(self) -> bool:
        """It stopped on its own because its deploy lock was taken away (no rollback ran)."""
        return bool(self.finished) and self.finished.get("result") == "stopped"

    @property
    def interrupted(self) -> bool:
        """Not finished and the process that ran it is gone, or stopped: left for `rollback`
        or `rollout --resume` to finish."""
        return (self.finished is None and not _alive(self.pid)) or self.stopped

    @property
    def active(self) -> bool:
        return self.finished is None and _alive(self.pid)


def _alive(pid: int | None) -> bool:
    return bool(pid) and pid_alive(int(pid))  # a zombie (killed, not reaped) counts as gone


class Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rollouts = root / "rollouts"

    def path(self, rollout: str) -> Path:
        return self.rollouts / f"{rollout}.jsonl"

    def set_current(self, rollout: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        current = self.root / "current"
        if rollout is None:
            current.unlink(missing_ok=True)
            return
        tmp = current.with_suffix(".tmp")
        tmp.write_text(rollout)
        os.replace(tmp, current)

    def current(self) -> str | None:
        try:
            return (self.root / "current").read_text().strip() or None
        except FileNotFoundError:
            return None

    def latest(self) -> str | None:
        if not self.rollouts.is_dir():
            return None
        files = sorted(self.rollouts.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        return files[-1].stem if files else None

    def read(self, rollout: str) -> JournalView:
        view = JournalView(rollout=rollout, path=self.path(rollout))
        try:
            lines = view.path.read_text().splitlines()
        except FileNotFoundError:
            return view
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            kind, data = event.get("type"), event.get("data", {})
            view.last_event = event
            if kind in {"paused", "approval_waiting"}:
                view.paused = {**data, "since": event.get("epoch"), "type": kind}
            elif kind in {"step_started", "step_done", "approved", "rollback_started"} or (
                kind == "control" and data.get("action") in {"resume", "promote", "abort"}
            ):
                view.paused = None
            if kind == "rollout_started":
                view.started = data
                view.steps = [step_from_dict(s) for s in data.get("steps", [])]
                view.pid = data.get("pid")
            elif kind == "resumed":
                view.pid = data.get("pid")
                view.finished = None
            elif kind == "step_started" and data.get("phase") == "rollout":
                view.running = data["index"]
            elif kind == "step_done" and data.get("phase") == "rollout":
                view.done.add(data["index"])
                view.running = None
            elif kind == "step_failed" and data.get("phase") == "rollout":
                view.failed[data["index"]] = data.get("message", "")
                view.running = None
            elif kind == "rollback_started":
                view.rollback = data
            elif kind == "interrupted":
                view.signalled = True
            elif kind == "rollout_finished":
                view.finished = data
        return view

    # -- control: the running rollout reads what the operator asks for -------------------------
    def request(self, action: str, by: str) -> None:
        if action not in CONTROL_ACTIONS:
            raise ValueError(action)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "control.tmp"
        tmp.write_text(json.dumps({"action": action, "by": by, "ts": time.time()}))
        os.replace(tmp, self.root / "control")

    def take_request(self) -> dict[str, Any] | None:
        """The pending request, removed so that it is acted on once."""
        path = self.root / "control"
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        path.unlink(missing_ok=True)
        return data

    def clear_requests(self) -> None:
        (self.root / "control").unlink(missing_ok=True)
