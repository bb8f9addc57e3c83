"""inkdeploy.gates.judge: the canary judge, metric by metric (classify), as a score, and end to
end against the fake Prometheus with the policy's default metrics."""

from __future__ import annotations

import math
import random
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inkdeploy.config import Judge, JudgeMetric
from inkdeploy.gates.judge import MetricVerdict, classify, judge, score
from inkdeploy.gates.prometheus import PrometheusClient, render

from .test_gates_prometheus import START, FakePrometheus

REPO = Path(__file__).resolve().parents[2]
END = START + 60  # 12 samples at the default 5 s step (plus the one at END)

ERRORS = Judge().metrics[0]  # error ratio: critical, tolerance 0, min_effect 0.005
LATENCY = Judge().metrics[1]  # p95 latency: tolerance 20 %, min_effect 50 ms
THROUGHPUT = JudgeMetric(name="throughput", query="rps", worse="lower", tolerance=0.1)


def noisy(center: float, spread: float, n: int = 12, seed: int = 0) -> list[float]:
    rng = random.Random(seed)  # noqa: S311 (reproducible noise, not secrets)
    return [max(0.0, rng.gauss(center, spread)) for _ in range(n)]


# --- classify ---------------------------------------------------------------------------------


def test_a_clear_error_regression_is_high() -> None:
    verdict = classify(noisy(0.1, 0.01), [0.0] * 12, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.classification == "high"
    assert verdict.failed
    assert verdict.p_value is not None and verdict.p_value < 0.001
    assert verdict.baseline_median == 0.0
    assert verdict.canary_median == pytest.approx(0.1, abs=0.01)
    assert (verdict.canary_n, verdict.baseline_n) == (12, 12)
    assert re.fullmatch(
        r"Significantly higher than the baseline "
        r"\(median 0\.\d{3} vs 0\.000, p<0\.0001, 12 vs 12 samples\)\.",
        verdict.reason,
    )


def test_300_ms_more_latency_is_caught() -> None:
    canary, baseline = noisy(0.41, 0.02, seed=1), noisy(0.11, 0.02, seed=2)
    verdict = classify(canary, baseline, LATENCY, alpha=0.05, min_samples=6)
    assert verdict.classification == "high"
    assert verdict.canary_median - verdict.baseline_median == pytest.approx(0.3, abs=0.03)


@pytest.mark.parametrize("seed", range(40))
def test_noise_is_not_flagged(seed: int) -> None:
    canary, baseline = noisy(0.11, 0.02, seed=seed), noisy(0.11, 0.02, seed=1000 + seed)
    verdict = classify(canary, baseline, LATENCY, alpha=0.05, min_samples=6)
    assert verdict.classification == "pass", verdict.reason


def test_a_significant_but_small_slowdown_is_within_tolerance() -> None:
    canary, baseline = noisy(0.12, 0.002, seed=3), noisy(0.11, 0.002, seed=4)
    verdict = classify(canary, baseline, LATENCY, alpha=0.05, min_samples=6)
    assert verdict.p_value is not None and verdict.p_value < 0.05
    assert verdict.classification == "pass"
    assert "within the tolerance of 20%" in verdict.reason


def test_an_error_ratio_below_min_effect_is_noise() -> None:
    canary = [0.003] * 12
    verdict = classify(canary, [0.0] * 12, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.p_value is not None and verdict.p_value < 0.05
    assert verdict.classification == "pass"
    assert "below the minimum effect of 0.005" in verdict.reason


def test_all_zeros_on_both_sides_passes() -> None:
    verdict = classify([0.0] * 12, [0.0] * 12, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.classification == "pass"
    assert verdict.p_value == 1.0
    assert verdict.reason == "Canary and baseline samples are identical (median 0.000 vs 0.000)."


def test_an_improvement_is_not_a_failure() -> None:
    canary, baseline = noisy(0.05, 0.005, seed=5), noisy(0.4, 0.02, seed=6)
    verdict = classify(canary, baseline, LATENCY, alpha=0.05, min_samples=6)
    assert verdict.classification == "pass"
    assert verdict.reason.startswith("Significantly better than the baseline")


def test_lower_is_worse_for_throughput() -> None:
    drop = classify(noisy(50, 2, seed=7), noisy(100, 2, seed=8), THROUGHPUT, 0.05, 6)
    assert drop.classification == "low"
    assert drop.reason.startswith("Significantly lower than the baseline")
    rise = classify(noisy(150, 2, seed=7), noisy(100, 2, seed=8), THROUGHPUT, 0.05, 6)
    assert rise.classification == "pass"


def test_nans_are_dropped_before_counting() -> None:
    canary = [math.nan, *noisy(0.1, 0.01, n=8), math.nan]
    verdict = classify(canary, [0.0] * 12, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.classification == "high"
    assert verdict.canary_n == 8
    verdict = classify([math.nan] * 12, [0.0] * 12, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.classification == "nodata"
    assert verdict.reason == "Too few samples: canary has 0, need 6."


def test_too_few_samples_is_nodata_and_names_the_side() -> None:
    verdict = classify([0.1] * 3, [0.0] * 2, ERRORS, alpha=0.05, min_samples=6)
    assert verdict.classification == "nodata"
    assert verdict.p_value is None
    assert verdict.reason == "Too few samples: canary has 3 and baseline has 2, need 6."


# --- score ------------------------------------------------------------------------------------


def verdict(name: str, kind: str, weight: float = 1.0, critical: bool = False) -> MetricVerdict:
    return MetricVerdict(name, kind, 0.5, 0.0, 0.0, 12, 12, "", weight, critical)  # type: ignore[arg-type]


def test_score_is_the_weighted_share_of_passing_metrics() -> None:
    spec = Judge()
    assert score([verdict("a", "pass"), verdict("b", "pass")], spec)[:2] == (100.0, "pass")
    value, outcome, summary = score([verdict("a", "pass", 3), verdict("b", "high", 1)], spec)
    assert (value, outcome) == (75.0, "marginal")
    assert summary == "score 75/100, pass 95, marginal 75"
    value, outcome, _ = score([verdict("a", "pass", 2), verdict("b", "low", 1.01)], spec)
    assert outcome == "fail" and value < 75


def test_thresholds_are_the_spec_s() -> None:
    verdicts = [verdict("a", "pass", 3), verdict("b", "high", 1)]
    assert score(verdicts, Judge(pass_score=75, marginal_score=50))[1] == "pass"
    assert score(verdicts, Judge(pass_score=90, marginal_score=80))[1] == "fail"


def test_a_failing_critical_metric_fails_whatever_the_score() -> None:
    verdicts = [verdict("errors", "high", 1, critical=True), verdict("latency", "pass", 99)]
    value, outcome, summary = score(verdicts, Judge())
    assert value == 99.0 and outcome == "fail"
    assert summary.endswith("critical metric failed: errors")


def test_nodata_metrics_are_left_out_of_the_score() -> None:
    value, outcome, _ = score([verdict("a", "pass"), verdict("b", "nodata")], Judge())
    assert (value, outcome) == (100.0, "pass")


def test_no_data_at_all_or_for_a_critical_metric_is_nodata() -> None:
    assert score([verdict("a", "nodata"), verdict("b", "nodata")], Judge())[1] == "nodata"
    verdicts = [verdict("errors", "nodata", critical=True), verdict("latency", "pass")]
    _, outcome, summary = score(verdicts, Judge())
    assert outcome == "nodata"
    assert summary == "not enough samples for errors"


# --- judge, end to end --------------------------------------------------------------------------

CANARY, BASELINE = "3.0.0", "1.0.0"


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    with FakePrometheus() as fake:
        yield fake


def serve(prom: FakePrometheus, metric: JudgeMetric, version: str, values: list[float]) -> None:
    prom.matrix[render(metric.query, version=version)] = [({}, values)]


def healthy_baseline(prom: FakePrometheus) -> None:
    serve(prom, ERRORS, BASELINE, [0.0] * 12)
    serve(prom, LATENCY, BASELINE, noisy(0.11, 0.01, seed=10))


def test_judge_fails_an_erroring_canary_and_names_the_metric(prom: FakePrometheus) -> None:
    healthy_baseline(prom)
    serve(prom, ERRORS, CANARY, [0.098] * 6 + [0.09, 0.1, 0.11, 0.097, 0.099, 0.12])
    serve(prom, LATENCY, CANARY, noisy(0.11, 0.01, seed=11))
    result = judge(PrometheusClient(prom.url), Judge(), CANARY, BASELINE, START, END)
    assert (result.gate, result.kind, result.target) == ("canary judge", "judge", "3.0.0 vs 1.0.0")
    assert result.outcome == "fail"
    assert result.message == (
        "Canary 3.0.0 failed the judge (score 50/100, pass 95, marginal 75; critical metric "
        "failed: error ratio): error ratio (critical) median 0.098 vs 0.000 on 1.0.0 "
        "(p<0.0001, 12 vs 12 samples)."
    )
    assert result.evidence["score"] == 50.0
    errors, latency = result.evidence["metrics"]
    assert errors["classification"] == "high" and latency["classification"] == "pass"
    assert errors["queries"]["canary"] == render(ERRORS.query, version=CANARY)
    steps = {params["step"] for _, _, params in prom.requests}
    assert steps == {"5.000"}
    assert len(prom.requests) == 4  # two metrics, canary and baseline


def test_judge_catches_a_slower_canary_as_marginal_or_worse(prom: FakePrometheus) -> None:
    healthy_baseline(prom)
    serve(prom, ERRORS, CANARY, [0.0] * 12)
    serve(prom, LATENCY, CANARY, noisy(0.41, 0.01, seed=12))
    result = judge(PrometheusClient(prom.url), Judge(), CANARY, BASELINE, START, END)
    assert result.outcome == "fail"  # 50/100: latency weighs as much as errors
    assert re.search(
        r"p95 latency median 0\.4\d\d vs 0\.1\d\d on 1\.0\.0 \(p<0\.0001, 12 vs 12 samples\)",
        result.message,
    )
    marginal = Judge(pass_score=95, marginal_score=50)
    result = judge(PrometheusClient(prom.url), marginal, CANARY, BASELINE, START, END)
    assert result.outcome == "marginal"
    assert result.message.startswith("Canary 3.0.0 was marginal in the judge (score 50/100")


def test_judge_passes_a_canary_like_its_baseline(prom: FakePrometheus) -> None:
    healthy_baseline(prom)
    serve(prom, ERRORS, CANARY, [0.0] * 11 + [0.002])
    serve(prom, LATENCY, CANARY, noisy(0.11, 0.01, seed=13))
    result = judge(PrometheusClient(prom.url), Judge(), CANARY, BASELINE, START, END)
    assert result.outcome == "pass"
    assert result.message == (
        "Canary 3.0.0 passed the judge against 1.0.0 (score 100/100, pass 95, marginal 75)."
    )
    assert "no_data" not in result.evidence


@pytest.mark.parametrize(
    ("policy", "outcome", "words"),
    [
        ("fail", "fail", "the canary may be receiving no traffic or not be scraped."),
        ("pause", "pause", "waiting for an operator as judge.no_data is pause."),
        ("pass", "pass", "passing anyway as judge.no_data is pass."),
    ],
)
def test_a_canary_without_traffic_follows_the_no_data_policy(
    prom: FakePrometheus, policy: str, outcome: str, words: str
) -> None:
    healthy_baseline(prom)
    serve(prom, LATENCY, CANARY, [0.1, 0.1])  # two samples; the error ratio: none at all
    spec = Judge(no_data=policy)  # type: ignore[arg-type]
    result = judge(PrometheusClient(prom.url), spec, CANARY, BASELINE, START, END)
    assert result.outcome == outcome
    assert result.evidence["no_data"] == policy
    assert result.message == (
        "Canary 3.0.0 could not be judged against 1.0.0: too few samples for "
        "error ratio (canary 3.0.0 had 0); p95 latency (canary 3.0.0 had 2), need 6 each; " + words
    )


def test_a_missing_baseline_is_named_too(prom: FakePrometheus) -> None:
    serve(prom, ERRORS, CANARY, [0.0] * 12)
    serve(prom, LATENCY, CANARY, [0.1] * 12)
    result = judge(PrometheusClient(prom.url), Judge(), CANARY, BASELINE, START, END)
    assert result.outcome == "fail"
    assert (
        "error ratio (baseline 1.0.0 had 0); p95 latency (baseline 1.0.0 had 0)" in result.message
    )


def test_a_non_critical_metric_without_data_is_reported_not_scored(prom: FakePrometheus) -> None:
    healthy_baseline(prom)
    serve(prom, ERRORS, CANARY, [0.0] * 12)
    result = judge(PrometheusClient(prom.url), Judge(), CANARY, BASELINE, START, END)
    assert result.outcome == "pass"
    assert result.message.endswith("(p95 latency not judged: too few samples).")


# --- the default queries, evaluated by the real PromQL engine ------------------------------------


def test_default_judge_queries_give_zero_errors_for_a_clean_version(tmp_path: Path) -> None:
    """A version that never answered 5xx has no 5xx series at all: its error ratio must be 0,
    not missing, or a healthy canary is judged as having no data."""
    promtool = REPO / ".cache/bin/promtool"
    if not promtool.exists():
        pytest.fail(f"{promtool} is missing: run `make tools` (make unit does).")
    (tmp_path / "empty.yml").write_text("groups: []\n")

    def req(version: str, status: str) -> str:
        return f'http_requests_total{{version="{version}",method="GET",status="{status}"}}'

    def bucket(version: str, le: str) -> str:
        return f'http_request_duration_seconds_bucket{{version="{version}",le="{le}"}}'

    def at(version: str, metric: JudgeMetric, value: float) -> dict[str, object]:
        return {
            "expr": render(metric.query, version=version),
            "eval_time": "1m",
            "exp_samples": [{"labels": "{}", "value": value}],
        }

    tests = {
        "rule_files": ["empty.yml"],
        "evaluation_interval": "5s",
        "tests": [
            {
                "interval": "5s",
                "input_series": [
                    {"series": req("1.0.0", "200"), "values": "0+50x24"},
                    {"series": req("3.0.0", "200"), "values": "0+45x24"},
                    {"series": req("3.0.0", "500"), "values": "0+5x24"},
                    {"series": bucket("1.0.0", "0.1"), "values": "0+50x24"},
                    {"series": bucket("1.0.0", "+Inf"), "values": "0+50x24"},
                ],
                "promql_expr_test": [
                    at("1.0.0", ERRORS, 0.0),
                    at("3.0.0", ERRORS, 0.1),
                    at("1.0.0", LATENCY, 0.095),
                ],
            }
        ],
    }
    (tmp_path / "judge_test.yml").write_text(yaml.safe_dump(tests))
    run = subprocess.run(
        [str(promtool), "test", "rules", "judge_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
