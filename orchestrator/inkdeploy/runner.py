"""The only place that runs Ansible: playbooks through ansible-runner, events to a callback.

Each run gets a private data directory that is deleted afterwards, so no artifact (stdout, job
events, extra vars) outlives it; tasks that handle secrets are no_log in the roles, so their
events carry nothing secret either.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.lab.procs import pid_alive

PROJECT = Path(__file__).resolve().parents[2]
PLAYBOOKS = PROJECT / "playbooks"

PRIVATE_PREFIX = "inkdeploy-runner-"


def remove_orphans() -> None:
    """Delete the private directories of orchestrators that were killed (SIGKILL leaves them):
    they hold a run's extra vars and output."""
    for path in Path(tempfile.gettempdir()).glob(f"{PRIVATE_PREFIX}*"):
        pid = path.name[len(PRIVATE_PREFIX) :].split("-", 1)[0]
        if not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


# (host, task name, status) for each finished task; status ok|changed|failed|skipped|unreachable.
Progress = Callable[[str, str, str], None]


@dataclass
class TaskFailure:
    host: str
    task: str
    message: str
    unreachable: bool = False


@dataclass
class PlaybookResult:
    playbook: str
    rc: int
    status: str
    seconds: float
    failures: list[TaskFailure] = field(default_factory=list)
    # task name -> host -> module result, for tasks whose results the caller asked for
    results: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    # host -> why, where the playbook said ignore_unreachable (not failures of the run)
    ignored_unreachable: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures

    def first_failure(self) -> str:
        if not self.failures:
            return f"{self.playbook} ended with status {self.status} (rc {self.rc})"
        f = self.failures[0]
        return f"{f.task} failed on {f.host}: {f.message}"


def _set_aside_ignored_unreachable(result: PlaybookResult, dark: dict[str, int] | None) -> None:
    """A host the recap (DARK: host -> unreachable count) does not count unreachable was so only
    where a task or play said ignore_unreachable (the lock plays, where a majority of lock hosts
    decides): not a failure of the playbook, kept in result.ignored_unreachable instead. Without
    a recap nothing is set aside."""
    if dark is None:
        return
    ignored = [f for f in result.failures if f.unreachable and not dark.get(f.host)]
    result.ignored_unreachable.update((f.host, f.message) for f in ignored)
    result.failures = [f for f in result.failures if f not in ignored]


def _message(res: dict[str, Any]) -> str:
    if res.get("censored"):
        return "the output is hidden because the task handles secrets (no_log)"
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if value:
            text = str(value).strip()
            return text.splitlines()[-1][:400] if key == "stderr" else text[:600]
    return "no message"


class Runner:
    def __init__(
        self,
        inventory: Path,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.inventory = inventory
        self.progress = progress
        self.cancel = cancel
        # The rollout id under which this orchestrator holds the deploy lock, passed to every
        # playbook as inkdeploy_lock_owner: the lock checks of site.yml, lb-weights.yml and
        # celery.yml (playbooks/lock-check.yml) let the holder through and refuse anyone else.
        self.lock_owner = ""

    def run(
        self,
        playbook: str,
        extravars: dict[str, Any] | None = None,
        collect: tuple[str, ...] = (),
        timeout: int = 3600,
    ) -> PlaybookResult:
        """Run playbooks/PLAYBOOK; COLLECT names tasks whose per-host results are returned."""
        result = PlaybookResult(playbook, rc=-1, status="unstarted", seconds=0.0)
        recap: list[dict[str, int]] = []  # the recap's unreachable count per host, once seen

        def on_event(event: dict[str, Any]) -> bool:
            kind = event.get("event", "")
            data = event.get("event_data") or {}
            host = data.get("host", "")
            task = data.get("task", "")
            res = data.get("res") or {}
            status = {
                "runner_on_ok": "changed" if res.get("changed") else "ok",
                "runner_on_failed": "ignored" if data.get("ignore_errors") else "failed",
                "runner_on_unreachable": "unreachable",
                "runner_on_skipped": "skipped",
            }.get(kind)
            if kind == "playbook_on_stats":
                recap.append(dict(data.get("dark") or {}))
            if status is None:
                return False  # nothing kept in the (deleted) artifacts either
            if status in {"failed", "unreachable"}:
                failure = TaskFailure(host, task, _message(res), status == "unreachable")
                result.failures.append(failure)
            if status == "changed":
                result.changed[host] = result.changed.get(host, 0) + 1
            if task in collect and status in {"ok", "changed"}:
                result.results.setdefault(task, {})[host] = res
            if self.progress:
                self.progress(host, task, status)
            return False

        import ansible_runner  # only when a playbook runs: `plan` and `status` read over SSH

        bindir = str(Path(sys.executable).parent)
        remove_orphans()
        private = tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-")
        started = time.monotonic()
        try:
            run = ansible_runner.run(
                private_data_dir=private,
                project_dir=str(PROJECT),
                playbook=str(PLAYBOOKS / playbook),
                inventory=str(self.inventory.resolve()),
                extravars={
                    **({"inkdeploy_lock_owner": self.lock_owner} if self.lock_owner else {}),
                    **(extravars or {}),
                },
                envvars={
                    "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
                    "ANSIBLE_NOCOLOR": "1",
                    "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
                },
                quiet=True,
                event_handler=on_event,
                cancel_callback=self.cancel or (lambda: False),
                timeout=timeout,
                settings={"suppress_ansible_output": True},
            )
            result.rc = run.rc if run.rc is not None else -1
            result.status = run.status
        finally:
            shutil.rmtree(private, ignore_errors=True)
        result.seconds = time.monotonic() - started
        _set_aside_ignored_unreachable(result, recap[-1] if recap else None)
        return result
