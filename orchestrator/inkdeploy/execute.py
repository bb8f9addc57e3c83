"""Walk a plan's steps: run each through the runner or the gates, record it in the journal (the
events), stop at the first failure and bring traffic back to the last good release."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inkdeploy.config import Policy
from inkdeploy.events import Events, environment_secrets, redact
from inkdeploy.fastpath import FastPath, RemoteError
from inkdeploy.gates.http import check_http
from inkdeploy.gates.judge import judge
from inkdeploy.gates.prometheus import PrometheusClient, evaluate, render
from inkdeploy.gates.result import GateResult
from inkdeploy.plan import Plan
from inkdeploy.runner import Runner
from inkdeploy.state.journal import Journal
from inkdeploy.steps import (
    Analysis,
    Approval,
    Celery,
    Hook,
    HttpCheck,
    Install,
    KeepSlot,
    Record,
    SetWeights,
    StartSlot,
    Step,
    StopSlot,
)

WARMUP_S = 10.0


class StepFailed(Exception):
    def __init__(self, message: str, gate: GateResult | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.gate = gate


class Aborted(StepFailed):
    pass


class LockLost(StepFailed):
    """The deploy lock is no longer this rollout's: stop, and leave the fleet to whoever has it
    now (no automatic rollback)."""


@dataclass
class Context:
    runner: Runner
    policy: Policy
    events: Events
    journal: Journal
    addresses: dict[str, str]
    slot_ports: dict[str, dict[str, int]]  # host -> slot -> port
    environment: str
    artifact: Path | None = None
    prometheus_url: str | None = None
    # Called while waiting for an approval, with the step's label; True approves at once.
    ask_approval: Callable[[str], bool | None] | None = None
    sleep: Callable[[float], None] = time.sleep
    # wall-clock time, as the metric gates' windows are measured (tests give a fake clock)
    clock: Callable[[], float] = time.time
    # wall-clock time (time.time()) when all traffic reached the plan's release
    traffic_switched: float | None = None
    promoted: bool = False
    paused: bool = False
    # when the current pause began (time.monotonic()); pauses end after policy.pause_timeout_s
    paused_since: float | None = None
    # The lock's holder once the deploy lock stopped being this rollout's, else None
    # (state.lock.Heartbeat.lost); checked between steps and while waiting.
    lock_lost: Callable[[], dict[str, Any] | None] = lambda: None
    # weight steps and slot keeps over SSH without a playbook (None: playbooks only)
    fast: FastPath | None = None
    gate_results: list[GateResult] = field(default_factory=list)

    def prometheus(self) -> PrometheusClient:
        if not self.prometheus_url:
            raise StepFailed(
                "Metric gates need Prometheus, but the inventory has no monitoring host and "
                "inkdeploy_rollout.prometheus_url is not set."
            )
        return PrometheusClient(self.prometheus_url)


@dataclass
class Outcome:
    ok: bool
    failed_step: int | None = None
    message: str = ""
    seconds: float = 0.0
    # the deploy lock was taken away: stop where we are, do not roll back
    lock_lost: bool = False


# What a hook gets of the controller's environment besides hooks.env and INKDEPLOY_*.
HOOK_BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR")


def _env(ctx: Context, plan: Plan, result: str = "") -> dict[str, str]:
    passed = (*HOOK_BASE_ENV, *ctx.policy.hooks.env)
    return {
        **{name: os.environ[name] for name in passed if name in os.environ},
        "INKDEPLOY_ROLLOUT_ID": plan.rollout,
        "INKDEPLOY_VERSION": plan.version,
        "INKDEPLOY_PREVIOUS_VERSION": plan.previous or "",
        "INKDEPLOY_STRATEGY": plan.strategy,
        "INKDEPLOY_ENVIRONMENT": ctx.environment,
        "INKDEPLOY_RESULT": result,
    }


class Executor:
    def __init__(self, ctx: Context, plan: Plan) -> None:
        self.ctx = ctx
        self.plan = plan

    # -- the walk --------------------------------------------------------------------------
    def run(self, start: int = 0, phase: str = "rollout") -> Outcome:
        began = time.monotonic()
        for index in range(start, len(self.plan.steps)):
            step = self.plan.steps[index]
            started = time.monotonic()
            try:
                self._between_steps(phase)  # pause, promote, abort from `inkdeploy ...`
                if self._skipped(step):
                    self.ctx.events.emit(
                        "step_skipped", phase=phase, index=index, reason="promoted"
                    )
                    self.ctx.events.emit("step_done", phase=phase, index=index, seconds=0.0)
                    continue
                self.ctx.events.emit(
                    "step_started", phase=phase, index=index, step=step.to_dict(),
                    description=step.describe(),
                )  # fmt: skip
                self.do(step)
            except StepFailed as exc:
                self.ctx.events.emit(
                    "step_failed", phase=phase, index=index, message=exc.message,
                    seconds=round(time.monotonic() - started, 2),
                    lock_lost=isinstance(exc, LockLost),
                )  # fmt: skip
                return Outcome(
                    False, index, exc.message, time.monotonic() - began, isinstance(exc, LockLost)
                )
            self.ctx.events.emit(
                "step_done", phase=phase, index=index, seconds=round(time.monotonic() - started, 2)
            )
        return Outcome(True, seconds=time.monotonic() - began)

    def _skipped(self, step: Step) -> bool:
        if not self.ctx.promoted:
            return False
        if isinstance(step, Approval):
            return True
        if isinstance(step, Analysis) and step.judge:
            return True
        return isinstance(step, SetWeights) and 0 < step.new_share < 1

    def _between_steps(self, phase: str) -> None:
        if phase != "rollout":
            return
        self._poll_control()
        while self.ctx.paused:
            self._check_pause_timeout()
            self.ctx.sleep(1)
            self._poll_control()

    def _check_lock(self) -> None:
        holder = self.ctx.lock_lost()
        if holder is None:
            return
        who = (
            f"now held by {holder.get('user', '?')} on {holder.get('controller', '?')}"
            f" for {holder.get('rollout') or 'a freeze'}"
            if holder
            else "now free (released with --force)"
        )
        raise LockLost(
            f"The deploy lock was taken from this rollout ({who}); stopped without rolling back, "
            "so the fleet stays as the last finished step left it. Run `inkdeploy status`."
        )

    def _pause(self, **data: Any) -> None:
        self.ctx.paused = True
        self.ctx.paused_since = time.monotonic()
        self.ctx.events.emit("paused", timeout_s=self.ctx.policy.pause_timeout_s, **data)

    def _check_pause_timeout(self) -> None:
        since = self.ctx.paused_since
        limit = self.ctx.policy.pause_timeout_s
        if since is not None and time.monotonic() - since >= limit:
            self.ctx.events.emit("pause_timeout", timeout_s=limit)
            raise StepFailed(
                f"Paused for {limit:.0f} s without resume, promote or abort (pause_timeout_s); "
                "rolling back."
            )

    def _poll_control(self) -> None:
        self._check_lock()
        request = self.ctx.journal.take_request()
        if not request:
            return
        action, by = request["action"], request.get("by", "?")
        self.ctx.events.emit("control", action=action, by=by)
        if action == "pause":
            self._pause(by=by)
        elif action == "resume":
            self.ctx.paused = False
        elif action == "promote":
            self.ctx.paused = False
            self.ctx.promoted = True
        elif action == "abort":
            self.ctx.paused = False
            raise Aborted(f"Aborted by {by} (`inkdeploy abort`).")
        if not self.ctx.paused:
            self.ctx.paused_since = None

    # -- steps -----------------------------------------------------------------------------
    def do(self, step: Step) -> None:
        if isinstance(step, Hook):
            self._hook(step)
        elif isinstance(step, Install):
            self._playbook(
                "rollout/install.yml",
                {
                    "rollout_hosts": ",".join(step.hosts),
                    "app_version": step.version,
                    "app_artifact": self._artifact(step.version),
                    "rollout_migrate": step.migrate,
                    "app_follow_live": False,
                },
            )
        elif isinstance(step, StartSlot):
            self._playbook(
                "rollout/start-slot.yml",
                {
                    "rollout_slots": step.slots,
                    "rollout_scrape": step.scrape,
                    "app_version": step.version,
                    "app_artifact": self._artifact(step.version),
                    "app_artifact_optional": True,
                    "app_keep_versions": self._keep(),
                    "app_follow_live": False,
                },
            )
        elif isinstance(step, StopSlot):
            arg = {"slots": step.slots, "scrape": step.scrape, "after_s": int(step.after_s)}
            if self._fast("stop_slots", arg):
                return
            self._playbook(
                "rollout/stop-slot.yml",
                {
                    "rollout_slots": step.slots,
                    "rollout_scrape": step.scrape,
                    "rollout_stop_after_s": int(step.after_s),
                },
            )
        elif isinstance(step, Record):
            arg = {"app": self.ctx.policy.app, "live": step.live,
                   "workers": list(step.workers), "version": step.version}  # fmt: skip
            if self._fast("record", arg):
                return
            self._playbook(
                "rollout/record.yml",
                {
                    "rollout_app": self.ctx.policy.app,
                    "rollout_live": step.live,
                    "rollout_workers": list(step.workers),
                    "rollout_version": step.version,
                },
            )
        elif isinstance(step, KeepSlot):
            if not self._fast("keep_slots", step.slots):
                self._playbook("rollout/keep-slot.yml", {"rollout_slots": step.slots})
        elif isinstance(step, SetWeights):
            if not self._fast("set_weights", step.weights):
                self._playbook("lb-weights.yml", {"nginx_lb_slot_weights": step.weights})
            if step.new_share >= 1.0:
                self.ctx.traffic_switched = time.time()
        elif isinstance(step, HttpCheck):
            self._http(step)
        elif isinstance(step, Analysis):
            self._analysis(step)
        elif isinstance(step, Approval):
            self._approval(step)
        elif isinstance(step, Celery):
            arg = {"version": step.version, "hosts": list(step.hosts), "keep": self._keep()}
            if self._fast("celery_release", arg):
                return
            self._playbook(
                "celery.yml",
                {
                    "app_version": step.version,
                    "app_artifact": self._artifact(step.version),
                    "app_artifact_optional": True,
                    "app_keep_versions": self._keep(),
                    "app_follow_live": False,
                },
            )
        else:  # pragma: no cover - every Step type is handled above
            raise StepFailed(f"unknown step {step!r}")

    def _keep(self) -> list[str]:
        """Releases pruning must spare: the one being replaced and the one deployed."""
        return sorted({v for v in (self.plan.previous, self.plan.version) if v})

    def _artifact(self, version: str) -> str:
        if self.ctx.artifact and version == self.plan.version and self.plan.kind == "rollout":
            return str(self.ctx.artifact)
        # A release that is installed already: the role checks the manifest on the hosts only
        # when the path exists, so the conventional path is fine.
        return str(Path("dist") / f"{self.ctx.policy.app}-{version}.tar.gz")

    def _fast(self, action: str, arg: dict[str, Any]) -> bool:
        """Do ACTION over the fast path; False when it cannot serve it (the caller runs the
        playbook). A refusal or a host that does not answer fails the step: the playbook would
        meet the same. Anything else (say, sudo wanting a password) falls back to the playbook
        with a warning."""
        fast = self.ctx.fast
        if fast is None:
            return False
        started = time.monotonic()
        try:
            done = getattr(fast, action)(arg)
        except RemoteError as exc:
            if exc.refused or exc.unreachable:
                raise StepFailed(f"{action.replace('_', ' ')}: {exc}") from None
            self.ctx.events.emit(
                "warning", message=f"The fast path could not {action.replace('_', ' ')} ({exc}); "
                "running the playbook instead.",
            )  # fmt: skip
            return False
        if done is None or done is False:
            return False
        seconds = round(time.monotonic() - started, 2)
        # per host what was done (weights served, workers' stop and ping seconds)
        hosts = {"hosts": done} if isinstance(done, dict) else {}
        self.ctx.events.emit("fast_path", action=action, seconds=seconds, **hosts)
        return True

    def _playbook(self, playbook: str, extravars: dict[str, Any]) -> None:
        result = self.ctx.runner.run(playbook, extravars)
        self.ctx.events.emit(
            "playbook", playbook=playbook, rc=result.rc, seconds=round(result.seconds, 2),
            changed=result.changed,
        )  # fmt: skip
        if not result.ok:
            raise StepFailed(f"{playbook}: {result.first_failure()}")

    def _hook(self, step: Hook) -> None:
        env = _env(self.ctx, self.plan, result="" if step.phase == "pre" else "success")
        secrets = environment_secrets(os.environ)
        for command in step.commands:
            # what is said of a hook goes to the terminal, the journal and webhooks: masked
            shown = redact(command, secrets)
            try:
                proc = subprocess.run(  # noqa: S602 - hooks are shell lines from the inventory
                    command, shell=True, env=env, capture_output=True, text=True,
                    timeout=self.ctx.policy.hooks.timeout_s, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StepFailed(
                    f"The {step.phase}-deploy hook `{shown}` did not finish within "
                    f"{self.ctx.policy.hooks.timeout_s:.0f} s."
                ) from None
            self.ctx.events.emit("hook", phase=step.phase, command=shown, rc=proc.returncode)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise StepFailed(
                    f"The {step.phase}-deploy hook `{shown}` exited {proc.returncode}: "
                    f"{redact(tail[0], secrets)}"
                )

    def _gate(self, result: GateResult) -> GateResult:
        self.ctx.gate_results.append(result)
        self.ctx.events.emit("gate", **result.to_dict())
        return result

    def _http(self, step: HttpCheck) -> None:
        gate = self.ctx.policy.http_gate

        def one(item: tuple[str, str]) -> GateResult:
            host, slot = item
            port = self.ctx.slot_ports[host][slot]
            url = f"{gate.scheme}://{self.ctx.addresses[host]}:{port}{gate.path}"
            return check_http(url, gate, step.version, f"{host} {slot} ({step.version})")

        with ThreadPoolExecutor(max_workers=max(1, len(step.slots))) as pool:
            results = list(pool.map(one, sorted(step.slots.items())))
        for result in results:
            self._gate(result)
        failed = [r for r in results if not r.passed]
        if failed:
            raise StepFailed(f'Gate "{gate.name}" failed: {failed[0].message}', failed[0])

    def _analysis(self, step: Analysis) -> None:
        """Run the metric gates every few seconds over the window so far: a clear failure ends
        the step at once (once confirmed, when there is a baseline to compare); a pass needs the
        whole window."""
        if step.window_s <= 0:
            return
        client = self.ctx.prometheus()
        params = {"version": step.version, "previous": self.plan.previous or ""}
        gates = self.ctx.policy.prometheus_gates
        for gate in gates:
            client.check_query(render(gate.query, **params))
        clock = self.ctx.clock
        # Metrics lag the weights: the rates behind the gates look back 15-30 s and Prometheus
        # scrapes every 5 s, so the window starts after a warm-up.
        self._wait(WARMUP_S)
        start = clock()
        end = start + step.window_s
        finest = min((gate.step_s for gate in gates), default=5.0)
        check_every = min(15.0, max(finest, step.window_s / 4))
        # gate index -> when its failure was first seen, while it waits for confirmation
        pending: dict[int, float] = {}
        marginal_retry = True
        while True:
            now = clock()
            final = now >= end and not pending
            # while a failure is being confirmed the window runs on past its end
            until = now if pending else min(now, end)
            outcome = self._evaluate(client, step, params, start, until, final, pending)
            if outcome == "pass" and final:
                return
            if outcome == "marginal" and final:
                if marginal_retry:
                    marginal_retry = False
                    self.ctx.events.emit(
                        "analysis_extended", label=step.label, window_s=step.window_s
                    )
                    end = clock() + step.window_s
                    continue
                raise StepFailed(
                    f"The canary judge stayed marginal over two windows at {step.label}."
                )
            if pending:
                wait_until = min(seen + gates[i].confirm_s for i, seen in pending.items())
            else:
                wait_until = min(end, clock() + check_every)
            while clock() < wait_until:
                self._poll_control()
                if self.ctx.promoted and step.judge:
                    return
                self.ctx.sleep(min(1.0, max(0.0, wait_until - clock())))

    def _unconfirmed(self, results: list[GateResult], pending: dict[int, float]) -> bool:
        """Track failures that wait for confirmation (see PrometheusGate.confirm_s); True while
        one of RESULTS is such a failure that is not yet confirmed."""
        now = self.ctx.clock()
        waiting = False
        for i, (gate, result) in enumerate(
            zip(self.ctx.policy.prometheus_gates, results, strict=True)
        ):
            if result.outcome != "fail" or "baseline" not in result.evidence or not gate.confirm_s:
                pending.pop(i, None)
                continue
            if i not in pending:
                pending[i] = now
                self.ctx.events.emit(
                    "warning",
                    message=f"{result.message} Confirming it in {gate.confirm_s:.0f} s, against "
                    f"the baseline's metrics too (they can trail by a scrape or two), before "
                    "acting on it.",
                )
            if now - pending[i] < gate.confirm_s:
                waiting = True
        return waiting

    def _evaluate(
        self,
        client: PrometheusClient,
        step: Analysis,
        params: dict[str, str],
        start: float,
        end: float,
        final: bool,
        pending: dict[int, float],
    ) -> str:
        """'pass', 'marginal', 'wait' (too early to tell) or 'confirm' (a failure waits for its
        confirmation, nothing is recorded); raises StepFailed on a failure."""
        early = not final
        verdict = "pass"
        results = [
            evaluate(client, gate, params, start, end) for gate in self.ctx.policy.prometheus_gates
        ]
        if self._unconfirmed(results, pending):
            return "confirm"
        for result in results:
            if early and (result.outcome in {"nodata", "pause"} or result.evidence.get("no_data")):
                verdict = "wait"
                continue
            if early and result.outcome == "fail" and result.evidence.get("samples", 0) < 3:
                verdict = "wait"
                continue
            if early and result.passed:
                continue  # only a failure ends the window early; the final check is recorded
            self._gate(result)
            if result.outcome == "pause":
                self._wait_for_operator(f"{step.label}: {result.message}")
            elif not result.passed:
                raise StepFailed(f"At {step.label}: {result.message}", result)
        if step.judge and step.baseline:
            result = judge(client, self.ctx.policy.judge, step.version, step.baseline, start, end)
            if early and (
                result.outcome in {"nodata", "marginal", "pass"} or result.evidence.get("no_data")
            ):
                return "wait"
            if early and result.outcome == "pause":
                return "wait"
            self._gate(result)
            if result.outcome == "fail":
                raise StepFailed(f"At {step.label}: {result.message}", result)
            if result.outcome == "pause":
                self._wait_for_operator(f"{step.label}: {result.message}")
            if result.outcome == "marginal":
                return "marginal"
        return verdict if early else "pass"

    def _wait(self, seconds: float) -> None:
        clock = self.ctx.clock
        until = clock() + seconds
        while clock() < until:
            self._poll_control()
            self.ctx.sleep(min(1.0, max(0.0, until - clock())))

    def _wait_for_operator(self, why: str) -> None:
        self._pause(reason=why)
        while self.ctx.paused and not self.ctx.promoted:
            self._check_pause_timeout()
            self.ctx.sleep(1)
            self._poll_control()

    def _approval(self, step: Approval) -> None:
        self.ctx.events.emit(
            "approval_waiting", label=step.label, timeout_s=self.ctx.policy.pause_timeout_s
        )
        self.ctx.paused_since = time.monotonic()
        if self.ctx.ask_approval:
            answer = self.ctx.ask_approval(step.label)
            if answer is True:
                self.ctx.events.emit("approved", label=step.label, by="prompt")
                self.ctx.paused_since = None
                return
            if answer is False:
                raise Aborted(f"Not approved at {step.label}.")
        while True:
            self._check_lock()
            self._check_pause_timeout()
            request = self.ctx.journal.take_request()
            if request:
                action, by = request["action"], request.get("by", "?")
                self.ctx.events.emit("control", action=action, by=by)
                if action in {"promote", "resume"}:
                    self.ctx.events.emit("approved", label=step.label, by=by)
                    self.ctx.paused_since = None
                    return
                if action == "abort":
                    raise Aborted(f"Aborted by {by} at {step.label} (`inkdeploy abort`).")
            self.ctx.sleep(1)
