"""Canary judge: the canary's samples against the baseline's, metric by metric, as Kayenta does.

Per metric, a two-sided Mann-Whitney U test says whether the two sets of samples differ at all;
the metric only counts against the canary when the difference is significant, in the bad
direction, beyond the metric's relative tolerance and beyond its minimum absolute effect. The
score is the weighted share of metrics that pass, among those with enough data.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from inkdeploy.config import Judge, JudgeMetric
from inkdeploy.gates.prometheus import PrometheusClient, format_value, render
from inkdeploy.gates.result import GateResult, Outcome

__all__ = ["MetricVerdict", "classify", "judge", "score"]

Classification = Literal["pass", "high", "low", "nodata"]


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    classification: Classification  # "high"/"low": worse than the baseline in that direction
    p_value: float | None
    canary_median: float | None
    baseline_median: float | None
    canary_n: int
    baseline_n: int
    reason: str  # one sentence: why this classification
    weight: float = 1.0
    critical: bool = False

    @property
    def failed(self) -> bool:
        return self.classification in ("high", "low")


def classify(
    canary: list[float],
    baseline: list[float],
    metric: JudgeMetric,
    alpha: float,
    min_samples: int,
) -> MetricVerdict:
    """Compare one metric's CANARY samples with the BASELINE's (NaNs are dropped first)."""
    c = [v for v in canary if not math.isnan(v)]
    b = [v for v in baseline if not math.isnan(v)]

    def verdict(kind: Classification, reason: str, p: float | None = None) -> MetricVerdict:
        return MetricVerdict(
            metric=metric.name,
            classification=kind,
            p_value=p,
            canary_median=statistics.median(c) if c else None,
            baseline_median=statistics.median(b) if b else None,
            canary_n=len(c),
            baseline_n=len(b),
            reason=reason,
            weight=metric.weight,
            critical=metric.critical,
        )

    if len(c) < min_samples or len(b) < min_samples:
        sides = (("canary", len(c)), ("baseline", len(b)))
        short = [f"{side} has {n}" for side, n in sides if n < min_samples]
        return verdict("nodata", f"Too few samples: {' and '.join(short)}, need {min_samples}.")
    cm, bm = statistics.median(c), statistics.median(b)
    medians = f"median {format_value(cm)} vs {format_value(bm)}"
    if len(set(c) | set(b)) == 1 or sorted(c) == sorted(b):
        return verdict("pass", f"Canary and baseline samples are identical ({medians}).", 1.0)

    # imported here: scipy.stats takes most of a second to import, which every command (status
    # above all) would pay at start-up; only a judged gate needs it
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(c, b, alternative="two-sided").pvalue)
    p = 1.0 if math.isnan(p) else p
    # How much worse the canary is: positive when it moved in the bad direction.
    worse_by = cm - bm if metric.worse == "higher" else bm - cm
    # Relative to the baseline's median; any rise over a zero baseline is infinitely worse.
    relative = worse_by / abs(bm) if bm != 0 else (math.inf if worse_by > 0 else 0.0)
    stats = f"{medians}, {format_p(p)}, {len(c)} vs {len(b)} samples"
    if p >= alpha:
        return verdict("pass", f"No significant difference ({stats}).", p)
    if not worse_by > 0:  # also false for NaN (both medians infinite)
        return verdict("pass", f"Significantly better than the baseline ({stats}).", p)
    if not relative > metric.tolerance:
        return verdict(
            "pass",
            f"Worse by {relative:.0%}, within the tolerance of {metric.tolerance:.0%} ({stats}).",
            p,
        )
    if not abs(cm - bm) > metric.min_effect:
        return verdict(
            "pass",
            f"Worse by {format_value(abs(cm - bm))}, below the minimum effect of "
            f"{metric.min_effect:g} ({stats}).",
            p,
        )
    kind: Classification = "high" if metric.worse == "higher" else "low"
    word = "higher" if kind == "high" else "lower"
    return verdict(kind, f"Significantly {word} than the baseline ({stats}).", p)


def score(verdicts: list[MetricVerdict], spec: Judge) -> tuple[float, Outcome, str]:
    """The weighted share (0-100) of passing metrics among those with data, its outcome, and
    a short summary. A failing critical metric fails outright; no data at all, or none for a
    critical metric (the judge cannot vouch for the canary without it), gives "nodata"."""
    judged = [v for v in verdicts if v.classification != "nodata"]
    thresholds = f"pass {spec.pass_score:g}, marginal {spec.marginal_score:g}"
    missing_critical = [v.metric for v in verdicts if v.critical and v.classification == "nodata"]
    if not judged or missing_critical:
        which = ", ".join(missing_critical) if judged else "any metric"
        return 0.0, "nodata", f"not enough samples for {which}"
    total = sum(v.weight for v in judged)
    value = 100.0 * sum(v.weight for v in judged if not v.failed) / total
    summary = f"score {value:.0f}/100, {thresholds}"
    critical = [v.metric for v in judged if v.critical and v.failed]
    if critical:
        return value, "fail", f"{summary}; critical metric failed: {', '.join(critical)}"
    if value >= spec.pass_score:
        return value, "pass", summary
    if value >= spec.marginal_score:
        return value, "marginal", summary
    return value, "fail", summary


def judge(
    client: PrometheusClient,
    spec: Judge,
    canary: str,
    baseline: str,
    start: float,
    end: float,
) -> GateResult:
    """Judge version CANARY against BASELINE over [START, END] with SPEC's metrics.

    Prometheus errors propagate (PrometheusError): the caller decides what an unanswerable
    judgement means for the rollout.
    """
    began = time.time()
    verdicts: list[MetricVerdict] = []
    queries: list[dict[str, str]] = []
    for metric in spec.metrics:
        canary_q = render(metric.query, version=canary)
        baseline_q = render(metric.query, version=baseline)
        queries.append({"canary": canary_q, "baseline": baseline_q})
        verdicts.append(
            classify(
                _samples(client, canary_q, start, end, spec.step_s),
                _samples(client, baseline_q, start, end, spec.step_s),
                metric,
                spec.alpha,
                spec.min_samples,
            )
        )
    value, outcome, summary = score(verdicts, spec)
    evidence: dict[str, Any] = {
        "metrics": [{**asdict(v), "queries": q} for v, q in zip(verdicts, queries, strict=True)],
        "score": value,
        "pass_score": spec.pass_score,
        "marginal_score": spec.marginal_score,
        "alpha": spec.alpha,
        "min_samples": spec.min_samples,
        "window": {"start": start, "end": end, "step_s": spec.step_s},
    }
    if outcome == "nodata":
        # The outcome is the judge's no_data policy, not a verdict: early in a window the
        # caller may prefer to wait for more samples.
        evidence["no_data"] = spec.no_data
        outcome, message = _no_data(verdicts, spec, canary, baseline)
    else:
        message = _message(verdicts, outcome, summary, canary, baseline)
    return GateResult(
        gate="canary judge",
        kind="judge",
        outcome=outcome,
        message=message,
        target=f"{canary} vs {baseline}",
        evidence=evidence,
        started=began,
        seconds=time.time() - began,
    )


def format_p(p: float) -> str:
    return "p<0.0001" if p < 0.0001 else f"p={p:.4f}"


def _samples(client: PrometheusClient, query: str, start: float, end: float, step: float) -> list:
    return [
        value for _, points in client.query_range(query, start, end, step) for _, value in points
    ]


def _message(
    verdicts: list[MetricVerdict], outcome: Outcome, summary: str, canary: str, baseline: str
) -> str:
    failed = [v for v in verdicts if v.failed]
    details = "; ".join(_describe(v, baseline) for v in failed)
    skipped = [v.metric for v in verdicts if v.classification == "nodata"]
    tail = f" ({', '.join(skipped)} not judged: too few samples)" if skipped else ""
    if outcome == "pass":
        despite = f" despite {details}" if failed else ""
        return f"Canary {canary} passed the judge against {baseline} ({summary}){despite}{tail}."
    verb = "failed" if outcome == "fail" else "was marginal in"
    return f"Canary {canary} {verb} the judge ({summary}): {details}{tail}."


def _describe(v: MetricVerdict, baseline: str) -> str:
    name = f"{v.metric} (critical)" if v.critical else v.metric
    p = format_p(v.p_value) if v.p_value is not None else "p=n/a"
    return (
        f"{name} median {format_value(v.canary_median or 0.0)} vs "
        f"{format_value(v.baseline_median or 0.0)} on {baseline} "
        f"({p}, {v.canary_n} vs {v.baseline_n} samples)"
    )


def _no_data(
    verdicts: list[MetricVerdict], spec: Judge, canary: str, baseline: str
) -> tuple[Outcome, str]:
    short = []
    for v in verdicts:
        if v.classification != "nodata":
            continue
        sides = []
        if v.canary_n < spec.min_samples:
            sides.append(f"canary {canary} had {v.canary_n}")
        if v.baseline_n < spec.min_samples:
            sides.append(f"baseline {baseline} had {v.baseline_n}")
        short.append(f"{v.metric} ({' and '.join(sides)})")
    seen = (
        f"Canary {canary} could not be judged against {baseline}: too few samples for "
        f"{'; '.join(short)}, need {spec.min_samples} each"
    )
    if spec.no_data == "pass":
        return "pass", f"{seen}; passing anyway as judge.no_data is pass."
    if spec.no_data == "pause":
        return "pause", f"{seen}; waiting for an operator as judge.no_data is pause."
    return "fail", f"{seen}; the canary may be receiving no traffic or not be scraped."
