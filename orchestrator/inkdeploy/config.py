"""Rollout policy per environment: strategy defaults, steps, gates and thresholds.

Read from the inventory's group_vars (variable ``inkdeploy_rollout``) and validated here before
anything runs. Pure: no I/O beyond what the caller passes in.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    HttpUrl,
    field_validator,
    model_validator,
)

Strategy = Literal["rolling", "blue-green", "canary"]
NoData = Literal["fail", "pause", "pass"]
_PERCENT = re.compile(r"^(\d{1,3})%$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_count(value: int | str, total: int) -> int:
    """A host count given as a number (2) or a share of TOTAL ("50%"), at least 1."""
    if isinstance(value, int):
        return max(1, min(value, total))
    match = _PERCENT.match(value.strip())
    if not match:
        raise ValueError(f"expected a number of hosts or a percentage like 25%, got {value!r}")
    return max(1, min(total, (total * int(match.group(1)) + 99) // 100))


class HttpGate(_Strict):
    """GET a URL on each new slot directly (no load balancer) until it answers as expected.

    ``{version}`` in ``expect_json`` values and ``expect_body`` is the release being deployed.
    """

    name: str = "app healthy"
    path: str = "/healthz"
    scheme: Literal["http", "https"] = "http"
    host_header: str | None = "localhost"
    expect_status: int = Field(200, ge=100, le=599)
    expect_json: dict[str, str] = Field(default_factory=lambda: {"version": "{version}"})
    expect_body: str | None = None
    max_latency_ms: int = Field(2000, gt=0)
    retries: int = Field(15, ge=1)
    interval_s: float = Field(2.0, gt=0)
    timeout_s: float = Field(5.0, gt=0)


class PrometheusGate(_Strict):
    """A PromQL query evaluated over the analysis window; every sample must satisfy
    ``value OP threshold``. ``{version}`` and ``{previous}`` are substituted (label values)."""

    name: str
    query: str
    op: Literal["<", "<=", ">", ">="] = "<"
    threshold: float
    # Evaluate at this resolution over the window (query_range step).
    step_s: float = Field(5.0, gt=0)
    # Share of samples allowed to break the threshold (a spike tolerance); 0 = none.
    max_breach_ratio: float = Field(0.0, ge=0, lt=1)
    no_data: NoData = "fail"
    # When the gate fails for {version}, run the same query for the baseline ({previous}) over
    # the same window; if it breaches too, pause (a fleet-wide problem) instead of failing.
    compare_baseline: bool = True
    # A failure with a baseline to compare is acted on only if it still holds this long after it
    # was first seen (the window runs on meanwhile): each target is scraped at its own moment,
    # and a counter series born with the first error needs a second scrape before rate() shows
    # it, so the baseline's data of a fleet-wide outage can trail the canary's by two scrapes.
    # 0 acts at once. Without a baseline (first deploy, compare_baseline off) it always does.
    confirm_s: float = Field(15.0, ge=0)


class JudgeMetric(_Strict):
    """One metric the canary judge compares, as a query of one series per version.

    ``{version}`` is replaced by the canary's or the baseline's version in turn.
    ``worse`` says which direction is bad; ``tolerance`` is the relative difference (of the
    medians) accepted before a statistically significant difference counts against the canary.
    """

    name: str
    query: str
    worse: Literal["higher", "lower"] = "higher"
    tolerance: float = Field(0.1, ge=0)
    # An absolute difference below this never fails (an error ratio of 0.001 vs 0 is noise).
    min_effect: float = Field(0.0, ge=0)
    weight: float = Field(1.0, gt=0)
    critical: bool = False


def _default_judge_metrics() -> list[JudgeMetric]:
    return [
        JudgeMetric(
            name="error ratio",
            # 0, not missing, for a version that serves without errors (as the recording rules).
            query=(
                '(sum(rate(http_requests_total{{version="{version}",status=~"5.."}}[15s]))'
                ' or sum(rate(http_requests_total{{version="{version}"}}[15s])) * 0)'
                ' / sum(rate(http_requests_total{{version="{version}"}}[15s]))'
            ),
            tolerance=0.0,
            min_effect=0.005,
            critical=True,
        ),
        JudgeMetric(
            name="p95 latency",
            query=(
                "histogram_quantile(0.95, sum by (le) "
                '(rate(http_request_duration_seconds_bucket{{version="{version}"}}[15s])))'
            ),
            tolerance=0.2,
            min_effect=0.05,
        ),
    ]


class Judge(_Strict):
    """Canary versus baseline, in the manner of Kayenta: per metric a Mann-Whitney U test of the
    canary's samples against the baseline's over the window; a metric fails when the difference
    is significant, in the bad direction and beyond its tolerance. The score is the weighted
    share of metrics that pass; >= pass_score passes, >= marginal_score is marginal (the step
    is repeated once), below fails. A failing critical metric fails the judgement outright."""

    enabled: bool = True
    metrics: list[JudgeMetric] = Field(default_factory=_default_judge_metrics)
    step_s: float = Field(5.0, gt=0)
    min_samples: int = Field(6, ge=3)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    pass_score: float = Field(95.0, ge=0, le=100)
    marginal_score: float = Field(75.0, ge=0, le=100)
    no_data: NoData = "fail"

    @model_validator(mode="after")
    def _scores(self) -> Judge:
        if self.marginal_score > self.pass_score:
            raise ValueError("judge.marginal_score must not be above judge.pass_score")
        return self


def _default_prometheus_gates() -> list[PrometheusGate]:
    return [
        PrometheusGate(
            name="error ratio of {version}",
            query='version:http_errors:ratio_rate30s{{version="{version}"}}',
            op="<",
            threshold=0.01,
            max_breach_ratio=0.0,
        ),
        PrometheusGate(
            name="p95 latency of {version}",
            query='version:http_request_duration_seconds:p95_1m{{version="{version}"}}',
            op="<",
            threshold=1.0,
            max_breach_ratio=0.2,
            no_data="pass",
        ),
    ]


class Rolling(_Strict):
    # Hosts out of service at once: a number or a percentage of the app hosts.
    max_unavailable: int | str = 1
    # Never drain below this many serving hosts (a number or a percentage).
    min_healthy: int | str = 1


class BlueGreen(_Strict):
    # Watch the new slots under full traffic for this long (gates) before the old ones stop.
    bake_s: float = Field(30.0, ge=0)
    # Stop the old slots (true), or leave them running until the next rollout reuses them.
    stop_old: bool = True
    # ...this long after the switch: until then `inkdeploy rollback` is only an LB switch.
    # A timer on each host stops the slot, so the orchestrator need not wait for it.
    stop_old_after_s: float = Field(900.0, ge=0)


class Canary(_Strict):
    # Hosts whose idle slot gets the canary: a number, a percentage, or "all".
    hosts: int | str = 1
    # Share of traffic on the new release at each step, in percent; the last must be 100.
    steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    analysis_s: float = Field(60.0, ge=0)
    # Steps (percentages) that wait for `inkdeploy promote` (or --yes) before traffic moves on.
    manual_approval: list[int] = Field(default_factory=list)
    stop_old: bool = True
    stop_old_after_s: float = Field(900.0, ge=0)

    @model_validator(mode="after")
    def _approvals(self) -> Canary:
        unknown = sorted(set(self.manual_approval) - set(self.steps))
        if unknown:
            raise ValueError(f"canary.manual_approval names steps that do not exist: {unknown}")
        return self

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100:
            raise ValueError("canary.steps must end with 100 (all traffic on the new release)")
        if any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"canary.steps must increase, got {steps}")
        return steps


class Hooks(_Strict):
    # Commands run on the controller with INKDEPLOY_* variables; a failing pre hook stops the
    # rollout before anything changes, a failing post hook is reported.
    pre: list[str] = Field(default_factory=list)
    post: list[str] = Field(default_factory=list)
    timeout_s: float = Field(300.0, gt=0)
    # Hooks get a minimal environment (HOOK_BASE_ENV and the INKDEPLOY_* variables), not the
    # controller's: no Grafana token, cloud or database credentials by accident. Names of more
    # controller variables to pass through, for a hook that needs them.
    env: list[str] = Field(default_factory=list)


class Notify(_Strict):
    webhooks: list[HttpUrl] = Field(default_factory=list)
    grafana_url: HttpUrl | None = None
    # Name of an environment variable holding a Grafana service account token (never the token).
    grafana_token_env: str = "INKDEPLOY_GRAFANA_TOKEN"  # noqa: S105 - a variable name
    # CA certificate Grafana's https certificate is verified with: the grafana role's internal
    # CA (grafana_pki_dir/ca.crt, by default pki/grafana/ca.crt next to the inventory). Unset:
    # the controller's trust store (a certificate from a public CA).
    grafana_ca_file: FilePath | None = None


class Policy(_Strict):
    """Everything a rollout needs to know besides the version: one per environment."""

    strategy: Strategy = "canary"
    app: str = "inkapp"
    migrate: bool = True
    celery: bool = True
    prometheus_url: HttpUrl | None = None
    http_gate: HttpGate = Field(default_factory=HttpGate)
    prometheus_gates: list[PrometheusGate] = Field(default_factory=_default_prometheus_gates)
    judge: Judge = Field(default_factory=Judge)
    rolling: Rolling = Field(default_factory=Rolling)
    blue_green: BlueGreen = Field(default_factory=BlueGreen)
    canary: Canary = Field(default_factory=Canary)
    hooks: Hooks = Field(default_factory=Hooks)
    notify: Notify = Field(default_factory=Notify)
    # A lock held without a lease (a freeze by hand) looks possibly stale after this long.
    lock_stale_s: float = Field(7200.0, gt=0)
    # A rollout's lock lease, renewed every lease/4 s (at most 15 s): a holder silent for longer
    # has died (on whatever controller) and the next rollout takes the lock over.
    lock_lease_s: float = Field(90.0, ge=10)
    # A paused rollout (a gate asking for an operator, `inkdeploy pause`, a manual approval)
    # waits this long for resume/promote/abort, then rolls back: it holds the lock and possibly
    # a partial canary weight meanwhile.
    pause_timeout_s: float = Field(1800.0, gt=0)
    # Weight steps, the deploy lock, reading the fleet and cancelling a pending slot stop over
    # one SSH command per host (inkdeploy/fastpath.py) instead of a playbook each: seconds
    # instead of tens of seconds for a rollback. false: always the playbooks.
    fast_path: bool = True
