"""Prometheus gates: a PromQL query over the analysis window, every sample against a threshold.

Also home to the small HTTP API client the judge shares (``/api/v1/query`` and
``/api/v1/query_range``) and to ``render``, which puts versions into a policy's queries.
"""

from __future__ import annotations

import math
import operator
import statistics
import string
import time
from collections.abc import Callable
from typing import Any

import httpx

from inkdeploy.config import PrometheusGate
from inkdeploy.errors import InkdeployError
from inkdeploy.gates.result import GateResult, Outcome

__all__ = [
    "PromQueryError",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusUnreachable",
    "evaluate",
    "format_value",
    "render",
]

Labels = dict[str, str]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# How a breaching sample relates to the threshold, per operator, for messages.
_BREACH_WORD = {"<": "at or above", "<=": "above", ">": "at or below", ">=": "below"}
_EVIDENCE_POINTS = 200
# A baseline breaching in at least this share of the canary's breach share counts as the same
# problem (fleet-wide), not a worse release.
_COMPARABLE_SHARE = 0.5


class PrometheusError(InkdeployError):
    """Prometheus answered, but not with something a gate can use."""


class PrometheusUnreachable(PrometheusError):
    """No answer from Prometheus at all."""


class PromQueryError(PrometheusError):
    """Prometheus refused the query (it does not parse, or cannot be executed)."""


class PrometheusClient:
    """The two read endpoints of Prometheus's HTTP API, with errors turned into sentences."""

    def __init__(self, base_url: str, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def query(self, q: str, at: float | None = None) -> list[tuple[Labels, float]]:
        """Instant query: one (labels, value) per series; a scalar result has empty labels."""
        params = {"query": q} if at is None else {"query": q, "time": _ts(at)}
        data = self._call("query", q, params)
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [({}, float(result[1]))]
        if kind != "vector":
            raise PromQueryError(
                f"Prometheus answered the query {q} with a {kind}, not an instant vector: "
                "gates need one value per series (drop the [range] or wrap it in a function)."
            )
        return [(item["metric"], float(item["value"][1])) for item in result]

    def query_range(
        self, q: str, start: float, end: float, step: float
    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        """Range query: per series its (timestamp, value) points, NaN points dropped."""
        params = {"query": q, "start": _ts(start), "end": _ts(end), "step": _ts(step)}
        data = self._call("query_range", q, params)
        if data.get("resultType") != "matrix":
            raise PromQueryError(
                f"Prometheus answered the range query {q} with a {data.get('resultType')}, "
                "not a matrix: use an expression that yields series."
            )
        out = []
        for item in data["result"]:
            points = [(float(ts), float(value)) for ts, value in item["values"]]
            out.append((item["metric"], [p for p in points if not math.isnan(p[1])]))
        return out

    def check_query(self, q: str) -> None:
        """Raise PromQueryError unless Prometheus parses and runs Q (an instant query at now)."""
        self.query(q)

    def _call(self, endpoint: str, q: str, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.base_url}/api/v1/{endpoint}"
        try:
            # POST (form-encoded) so a long query never hits a URL length limit.
            response = httpx.post(url, data=params, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise PrometheusUnreachable(
                f"Prometheus at {self.base_url} did not answer within {self.timeout:g} s: "
                "check that it runs and is not overloaded, or raise the timeout.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
        except httpx.TransportError as exc:
            raise PrometheusUnreachable(
                f"Prometheus at {self.base_url} is unreachable ({_reason(exc)}): check that it "
                "runs and that prometheus_url in the rollout policy points at it.",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            raise PrometheusError(
                f"{url} answered HTTP {response.status_code} without Prometheus's API JSON: "
                "check that prometheus_url is the server's base URL (e.g. http://host:9090).",
                detail=response.text[:500],
            )
        if body["status"] == "success":
            return body["data"]
        error = f"{body.get('errorType', 'error')}: {body.get('error', 'no error text')}"
        if response.status_code in (400, 422):
            raise PromQueryError(
                f"Prometheus refused the query {q} ({error}): fix it in the rollout policy.",
                detail=error,
            )
        raise PrometheusError(
            f"Prometheus at {self.base_url} failed to answer the query {q} "
            f"(HTTP {response.status_code}, {error}): check its logs, then retry.",
            detail=error,
        )


def render(query: str, **params: str) -> str:
    """Put PARAMS ({version}, {previous}) into QUERY; PromQL's own braces are written {{ }}."""
    try:
        return query.format(**params)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join("{" + name + "}" for name in params) or "none"
        raise PromQueryError(
            f"The query {query} has a placeholder or brace that cannot be filled ({exc}): "
            f"the placeholders here are {known}, and PromQL's own braces must be doubled, "
            'as in metric{{version="{version}"}}.'
        ) from exc


def format_value(value: float) -> str:
    """A sample for a message: 0.094, 0.000, 412.5, 0.00042, +Inf."""
    if not math.isfinite(value):
        return "+Inf" if value > 0 else ("-Inf" if value < 0 else "NaN")
    if abs(value) >= 100:
        return f"{value:.1f}"
    if value == 0 or abs(value) >= 0.001:
        return f"{value:.3f}"
    return f"{value:.2g}"


def evaluate(
    client: PrometheusClient,
    gate: PrometheusGate,
    params: dict[str, str],
    start: float,
    end: float,
) -> GateResult:
    """Every sample of GATE's query over [START, END] against its threshold.

    When the gate fails for ``{version}`` and ``compare_baseline`` is on, the same query runs for
    the baseline (``params["previous"]``) over the same window: a baseline that breaches in a
    comparable share of its samples makes the outcome "pause" (a fleet-wide problem, both
    versions), not "fail". Without a baseline, or without its data, the gate fails as before.

    Prometheus errors propagate as PrometheusError: the caller decides what an unanswerable
    gate means for the rollout. (An error on the baseline's query only keeps the failure.)
    """
    began = time.time()
    name = _name(gate.name, params)
    query = render(gate.query, **params)
    series = client.query_range(query, start, end, gate.step_s)
    values = [value for _, points in series for _, value in points]
    window = f"{end - start:.0f} s"
    evidence: dict[str, Any] = {
        "query": query,
        "op": gate.op,
        "threshold": gate.threshold,
        "max_breach_ratio": gate.max_breach_ratio,
        "window": {"start": start, "end": end, "step_s": gate.step_s},
        "samples": len(values),
    }
    target = ", ".join(f"{k}={v}" for k, v in params.items())

    def result(outcome: Outcome, message: str) -> GateResult:
        return GateResult(
            gate=name,
            kind="prometheus",
            outcome=outcome,
            message=message,
            target=target,
            evidence=evidence,
            started=began,
            seconds=time.time() - began,
        )

    if not values:
        # The outcome below is the gate's no_data policy, not a measurement: say so.
        evidence["no_data"] = gate.no_data
        seen = f'Gate "{name}": {query} returned no data over {window}'
        if gate.no_data == "pass":
            return result("pass", f"{seen}; passing as its no_data policy says.")
        if gate.no_data == "pause":
            return result("pause", f"{seen}; waiting for an operator as its no_data policy says.")
        return result(
            "fail",
            f"{seen}: the new version may be receiving no traffic or not be scraped.",
        )

    figures = _figures(gate, values)
    evidence.update(figures, series=_series_evidence(series))
    breaches, worst = figures["breaches"], figures["worst"]
    which = "max" if gate.op in ("<", "<=") else "min"
    allowed = math.floor(gate.max_breach_ratio * len(values))
    counts = f"{len(values)} samples, {breaches} {_BREACH_WORD[gate.op]}"
    if gate.max_breach_ratio:
        counts += f", {allowed} allowed"
    seen = (
        f"{query} was {format_value(worst)} ({which} over {window}, {counts}) "
        f"against {gate.op} {gate.threshold:g}"
    )
    if figures["breach_ratio"] <= gate.max_breach_ratio:
        return result("pass", f'Gate "{name}" passed: {seen}.')
    baseline = _baseline(client, gate, params, start, end)
    if baseline is not None:
        evidence["baseline"] = baseline
        if _fleet_wide(gate, figures, baseline):
            return result("pause", _fleet_wide_message(name, gate, params, figures, baseline))
    return result("fail", f'Gate "{name}" failed: {seen}.')


def _figures(gate: PrometheusGate, values: list[float]) -> dict[str, Any]:
    """Breaches of the threshold and the spread of VALUES (not empty)."""
    passes = _OPS[gate.op]
    breaches = sum(1 for value in values if not passes(value, gate.threshold))
    return {
        "samples": len(values),
        "breaches": breaches,
        "breach_ratio": breaches / len(values),
        "worst": max(values) if gate.op in ("<", "<=") else min(values),
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def _baseline(
    client: PrometheusClient,
    gate: PrometheusGate,
    params: dict[str, str],
    start: float,
    end: float,
) -> dict[str, Any] | None:
    """The gate's query for the baseline over the same window, as evidence; None when there is
    nothing to compare: compare_baseline off, no previous version (a first deploy), or a query
    without {version} or already about {previous} (it compares the two versions itself)."""
    previous = params.get("previous") or ""
    if not gate.compare_baseline or not previous or previous == params.get("version"):
        return None
    fields = _placeholders(gate.query)
    if "version" not in fields or "previous" in fields:
        return None
    query = render(gate.query, **{**params, "version": previous})
    evidence: dict[str, Any] = {"version": previous, "query": query}
    try:
        series = client.query_range(query, start, end, gate.step_s)
    except PrometheusError as exc:
        return {**evidence, "samples": 0, "error": exc.message}
    values = [value for _, points in series for _, value in points]
    if not values:
        return {**evidence, "samples": 0}
    return {**evidence, **_figures(gate, values), "series": _series_evidence(series)}


def _fleet_wide(gate: PrometheusGate, canary: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """The baseline fails the gate on its own, in at least half the canary's share of samples."""
    if not baseline.get("samples"):
        return False
    share = baseline["breach_ratio"]
    return share > gate.max_breach_ratio and share >= _COMPARABLE_SHARE * canary["breach_ratio"]


def _fleet_wide_message(
    name: str,
    gate: PrometheusGate,
    params: dict[str, str],
    canary: dict[str, Any],
    baseline: dict[str, Any],
) -> str:
    which = "max" if gate.op in ("<", "<=") else "min"
    word = _BREACH_WORD[gate.op]
    return (
        f'Gate "{name}" breached on {params.get("version")} AND on the baseline '
        f"{baseline['version']} over the same window ({which} {format_value(canary['worst'])} "
        f"vs {format_value(baseline['worst'])}; {canary['breaches']} of {canary['samples']} vs "
        f"{baseline['breaches']} of {baseline['samples']} samples {word} {gate.threshold:g}): "
        "a fleet-wide problem (database, broker?), not the release; pausing: "
        "'inkdeploy resume' or 'promote' to go on, 'abort' to roll back."
    )


def _placeholders(query: str) -> set[str]:
    """The {names} in QUERY (PromQL's doubled braces are not placeholders)."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(query) if field}
    except ValueError:
        return set()


def _name(template: str, params: dict[str, str]) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template  # a name is only a label; never fail a gate over it


def _series_evidence(series: list[tuple[Labels, list[tuple[float, float]]]]) -> list[dict]:
    per_series = max(1, _EVIDENCE_POINTS // max(1, len(series)))
    return [
        {"labels": labels, "points": len(points), "values": _thin(points, per_series)}
        for labels, points in series
    ]


def _thin(points: list[tuple[float, float]], limit: int) -> list[list[float]]:
    """At most LIMIT points, evenly spread, the last one always kept."""
    if len(points) <= limit:
        return [list(p) for p in points]
    if limit == 1:
        return [list(points[-1])]
    last = len(points) - 1
    return [list(points[round(i * last / (limit - 1))]) for i in range(limit)]


def _ts(value: float) -> str:
    return f"{value:.3f}"


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text
