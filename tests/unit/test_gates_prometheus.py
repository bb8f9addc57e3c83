"""inkdeploy.gates.prometheus: the API client, query rendering and threshold gates, against a
fake Prometheus on 127.0.0.1 that answers in the real server's response format."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from inkdeploy.config import Policy, PrometheusGate
from inkdeploy.errors import InkdeployError
from inkdeploy.gates.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusUnreachable,
    PromQueryError,
    evaluate,
    format_value,
    render,
)
from inkdeploy.promql import PromQLSyntaxError, metric_names
from tests.unit.loopback import LoopbackServer

START = 1_700_000_000.0
END = START + 60


def _sample(value: float) -> str:
    """A sample value as Prometheus writes it: a string, with NaN and +Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class FakePrometheus(LoopbackServer):
    """Serves /api/v1/query and /api/v1/query_range (GET or form POST) from canned series.

    ``matrix[query]`` is a list of (labels, values): the values are laid out at start, start +
    step, ... up to end, as a range query evaluates. ``vector[query]`` answers instant queries.
    ``errors[query]`` is (HTTP status, errorType, error) returned as Prometheus does; a query
    that is not even roughly PromQL gets Prometheus's 400 bad_data. Anything else: no data.
    """

    def __init__(self) -> None:
        self.matrix: dict[str, list[tuple[dict[str, str], list[float]]]] = {}
        self.vector: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.errors: dict[str, tuple[int, str, str]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # method, endpoint, params
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer("GET", dict(parse_qsl(urlsplit(self.path).query)))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                self._answer("POST", dict(parse_qsl(self.rfile.read(length).decode())))

            def _answer(self, method: str, params: dict[str, str]) -> None:
                endpoint = urlsplit(self.path).path
                fake.requests.append((method, endpoint, params))
                status, body = fake.respond(endpoint, params)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def respond(self, endpoint: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if endpoint not in ("/api/v1/query", "/api/v1/query_range"):
            return 404, {"status": "error", "errorType": "not_found", "error": "not found"}
        query = params.get("query", "")
        if query in self.errors:
            status, kind, text = self.errors[query]
            return status, {"status": "error", "errorType": kind, "error": text}
        try:
            metric_names(query)
        except PromQLSyntaxError as exc:
            return 400, _bad_data(f'invalid parameter "query": 1:1: parse error: {exc}')
        if endpoint == "/api/v1/query":
            at = float(params.get("time", END))
            result = [
                {"metric": labels, "value": [at, _sample(value)]}
                for labels, value in self.vector.get(query, [])
            ]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        for name in ("start", "end", "step"):
            if name not in params:
                return 400, _bad_data(f'invalid parameter "{name}": cannot parse "" to a valid')
        start, end, step = (float(params[name]) for name in ("start", "end", "step"))
        result = []
        for labels, values in self.matrix.get(query, []):
            points = [
                [start + i * step, _sample(v)]
                for i, v in enumerate(values)
                if start + i * step <= end
            ]
            result.append({"metric": labels, "values": points})
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": result}}


def _bad_data(text: str) -> dict[str, str]:
    return {"status": "error", "errorType": "bad_data", "error": text}


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    with FakePrometheus() as fake:
        yield fake


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the client -------------------------------------------------------------------------------


def test_query_returns_each_series_labels_and_value(prom: FakePrometheus) -> None:
    prom.vector["up"] = [({"__name__": "up", "job": "app"}, 1.0), ({"job": "db"}, 0.0)]
    result = PrometheusClient(prom.url).query("up", at=START)
    assert result == [({"__name__": "up", "job": "app"}, 1.0), ({"job": "db"}, 0.0)]
    method, endpoint, params = prom.requests[-1]
    assert (method, endpoint, params) == (
        "POST",
        "/api/v1/query",
        {"query": "up", "time": f"{START:.3f}"},
    )


def test_query_range_drops_nan_and_keeps_infinity(prom: FakePrometheus) -> None:
    prom.matrix["lat"] = [({"version": "2.0.0"}, [0.1, math.nan, math.inf, 0.2])]
    [(labels, points)] = PrometheusClient(prom.url).query_range("lat", START, END, 5)
    assert labels == {"version": "2.0.0"}
    assert points == [(START, 0.1), (START + 10, math.inf), (START + 15, 0.2)]
    assert prom.requests[-1][2] == {
        "query": "lat",
        "start": f"{START:.3f}",
        "end": f"{END:.3f}",
        "step": "5.000",
    }


def test_check_query_raises_with_prometheus_own_error_text(prom: FakePrometheus) -> None:
    text = 'invalid parameter "query": 1:29: parse error: unexpected "}" in label matching'
    prom.errors["version:http_errors{version=}"] = (400, "bad_data", text)
    with pytest.raises(PromQueryError) as caught:
        PrometheusClient(prom.url).check_query("version:http_errors{version=}")
    assert isinstance(caught.value, InkdeployError)
    assert text in caught.value.message
    assert "version:http_errors{version=}" in caught.value.message
    assert "fix it in the rollout policy" in caught.value.message


def test_check_query_accepts_a_valid_query_and_refuses_unbalanced_brackets(
    prom: FakePrometheus,
) -> None:
    client = PrometheusClient(prom.url)
    client.check_query('sum(rate(http_requests_total{version="2.0.0"}[1m]))')
    with pytest.raises(PromQueryError, match="bad_data: invalid parameter"):
        client.check_query('sum(rate(http_requests_total{version="2.0.0"}[1m])')


def test_unreachable_prometheus_says_where_and_what_to_do() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(PrometheusUnreachable) as caught:
        PrometheusClient(url, timeout=2).query("up")
    message = caught.value.message
    assert message.startswith(f"Prometheus at {url} is unreachable (connection refused)")
    assert "prometheus_url" in message


def test_a_server_that_is_not_prometheus_is_named_as_such(prom: FakePrometheus) -> None:
    client = PrometheusClient(prom.url + "/wrong")
    with pytest.raises(PrometheusError) as caught:
        client.query("up")
    assert not isinstance(caught.value, PromQueryError | PrometheusUnreachable)
    assert "HTTP 404" in caught.value.message


def test_a_prometheus_timeout_is_not_blamed_on_the_query(prom: FakePrometheus) -> None:
    prom.errors["slow"] = (503, "timeout", "query timed out in expression evaluation")
    with pytest.raises(PrometheusError) as caught:
        PrometheusClient(prom.url).query("slow")
    assert not isinstance(caught.value, PromQueryError)
    assert "HTTP 503, timeout: query timed out" in caught.value.message


# --- rendering --------------------------------------------------------------------------------


def test_default_gate_query_renders_to_a_plain_selector() -> None:
    gate = Policy().prometheus_gates[0]
    assert (
        render(gate.query, version="2.0.0") == 'version:http_errors:ratio_rate30s{version="2.0.0"}'
    )


def test_every_default_query_renders_to_balanced_promql() -> None:
    policy = Policy()
    queries = [g.query for g in policy.prometheus_gates] + [m.query for m in policy.judge.metrics]
    for query in queries:
        rendered = render(query, version="2.0.0", previous="1.0.0")
        assert "{{" not in rendered and "}}" not in rendered and "{version}" not in rendered
        assert 'version="2.0.0"' in rendered
        assert metric_names(rendered)  # raises on unbalanced brackets or quotes


def test_an_unescaped_brace_is_refused_with_the_fix() -> None:
    with pytest.raises(PromQueryError) as caught:
        render('up{job="app",version="{version}"}', version="2.0.0")
    assert "must be doubled" in caught.value.message
    with pytest.raises(PromQueryError, match=r"placeholders here are \{version\}"):
        render('up{{version="{previous}"}}', version="2.0.0")


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.094, "0.094"), (0.0, "0.000"), (412.53, "412.5"), (0.00042, "0.00042"), (math.inf, "+Inf")],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


# --- evaluate ---------------------------------------------------------------------------------

ERRORS = PrometheusGate(
    name="error ratio of {version}",
    query='version:http_errors:ratio_rate30s{{version="{version}"}}',
    op="<",
    threshold=0.01,
)
RENDERED = 'version:http_errors:ratio_rate30s{version="2.0.0"}'


def run(prom: FakePrometheus, gate: PrometheusGate = ERRORS) -> Any:
    return evaluate(PrometheusClient(prom.url), gate, {"version": "2.0.0"}, START, END)


def test_gate_fails_and_says_how_bad_and_how_often(prom: FakePrometheus) -> None:
    values = [0.0, 0.001, 0.002, 0.003, 0.004, 0.02, 0.03, 0.05, 0.094, 0.06, 0.04, 0.011]
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, values)]
    result = run(prom)
    assert result.outcome == "fail"
    assert result.gate == "error ratio of 2.0.0"
    assert result.message == (
        f'Gate "error ratio of 2.0.0" failed: {RENDERED} was 0.094 '
        "(max over 60 s, 12 samples, 7 at or above) against < 0.01."
    )
    assert result.evidence["samples"] == 12
    assert result.evidence["breaches"] == 7
    assert result.evidence["max"] == 0.094
    assert result.evidence["min"] == 0.0
    assert result.evidence["median"] == pytest.approx(0.0155)
    assert prom.requests[-1][2]["step"] == "5.000"


def test_gate_passes_when_every_sample_is_under_the_threshold(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, [0.0, 0.002, 0.004] * 4)]
    result = run(prom)
    assert result.outcome == "pass"
    assert result.message.startswith('Gate "error ratio of 2.0.0" passed:')
    assert "was 0.004 (max over 60 s, 12 samples, 0 at or above)" in result.message


def test_spikes_within_max_breach_ratio_pass_and_beyond_it_fail(prom: FakePrometheus) -> None:
    gate = ERRORS.model_copy(update={"max_breach_ratio": 0.2})
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, [0.0] * 10 + [0.5, 0.5])]
    result = run(prom, gate)
    assert result.outcome == "pass"
    assert "12 samples, 2 at or above, 2 allowed" in result.message
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, [0.0] * 9 + [0.5, 0.5, 0.5])]
    result = run(prom, gate)
    assert result.outcome == "fail"
    assert "12 samples, 3 at or above, 2 allowed" in result.message


def test_a_lower_bound_reports_the_minimum(prom: FakePrometheus) -> None:
    gate = PrometheusGate(name="throughput", query="version:rps", op=">=", threshold=5)
    prom.matrix["version:rps"] = [({}, [9.0, 8.0, 4.5, 7.0])]
    result = run(prom, gate)
    assert result.outcome == "fail"
    assert "was 4.500 (min over 60 s, 4 samples, 1 below) against >= 5" in result.message


def test_samples_of_all_series_count(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"host": "app1"}, [0.0] * 6), ({"host": "app2"}, [0.0] * 5 + [0.2])]
    result = run(prom)
    assert result.outcome == "fail"
    assert "12 samples, 1 at or above" in result.message
    assert [s["labels"]["host"] for s in result.evidence["series"]] == ["app1", "app2"]


@pytest.mark.parametrize(
    ("policy", "outcome", "words"),
    [
        ("fail", "fail", "may be receiving no traffic or not be scraped"),
        ("pause", "pause", "waiting for an operator"),
        ("pass", "pass", "passing as its no_data policy says"),
    ],
)
def test_no_data_follows_the_gate_policy(
    prom: FakePrometheus, policy: str, outcome: str, words: str
) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, [math.nan] * 12)]  # NaNs are no data
    result = run(prom, ERRORS.model_copy(update={"no_data": policy}))
    assert result.outcome == outcome
    assert f"{RENDERED} returned no data over 60 s" in result.message
    assert words in result.message
    assert result.evidence["samples"] == 0
    assert result.evidence["no_data"] == policy


def test_evidence_keeps_at_most_200_points_including_the_last(prom: FakePrometheus) -> None:
    values = [0.001 * (i % 7) for i in range(500)]
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, values)]
    result = evaluate(
        PrometheusClient(prom.url), ERRORS, {"version": "2.0.0"}, START, START + 5 * 499
    )
    assert result.outcome == "pass"
    [series] = result.evidence["series"]
    assert series["points"] == 500
    assert len(series["values"]) == 200
    assert series["values"][-1] == [START + 5 * 499, values[-1]]
    assert series["values"][0] == [START, 0.0]


# --- the baseline: a fleet-wide spike is not the release's fault -------------------------------

BASELINE = 'version:http_errors:ratio_rate30s{version="1.0.0"}'
BAD = [0.0, 0.02, 0.31, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.02, 0.015, 0.012]  # 11 of 12 >= 0.01


def with_baseline(prom: FakePrometheus, gate: PrometheusGate = ERRORS) -> Any:
    params = {"version": "2.0.0", "previous": "1.0.0"}
    return evaluate(PrometheusClient(prom.url), gate, params, START, END)


def queried(prom: FakePrometheus) -> list[str]:
    return [params["query"] for _, endpoint, params in prom.requests if endpoint.endswith("range")]


def test_a_bad_canary_beside_a_healthy_baseline_fails(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.matrix[BASELINE] = [({"version": "1.0.0"}, [0.0, 0.001, 0.002] * 4)]
    result = with_baseline(prom)
    assert result.outcome == "fail"
    assert result.message == (
        f'Gate "error ratio of 2.0.0" failed: {RENDERED} was 0.310 '
        "(max over 60 s, 12 samples, 11 at or above) against < 0.01."
    )
    assert queried(prom) == [RENDERED, BASELINE]  # the same window, for the old version
    assert prom.requests[-1][2]["start"] == f"{START:.3f}"
    assert prom.requests[-1][2]["end"] == f"{END:.3f}"
    baseline = result.evidence["baseline"]
    assert (baseline["version"], baseline["samples"], baseline["breaches"]) == ("1.0.0", 12, 0)
    assert baseline["max"] == 0.002


def test_both_versions_bad_is_a_fleet_wide_pause_not_a_failure(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.matrix[BASELINE] = [({"version": "1.0.0"}, [0.28, 0.2, 0.1, 0.05] * 2 + [0.0] * 4)]
    result = with_baseline(prom)
    assert result.outcome == "pause"
    assert result.message == (
        'Gate "error ratio of 2.0.0" breached on 2.0.0 AND on the baseline 1.0.0 over the same '
        "window (max 0.310 vs 0.280; 11 of 12 vs 8 of 12 samples at or above 0.01): a "
        "fleet-wide problem (database, broker?), not the release; pausing: 'inkdeploy resume' "
        "or 'promote' to go on, 'abort' to roll back."
    )
    evidence = result.evidence
    assert (evidence["samples"], evidence["breaches"], evidence["max"]) == (12, 11, 0.31)
    baseline = evidence["baseline"]
    assert (baseline["samples"], baseline["breaches"], baseline["max"]) == (12, 8, 0.28)
    assert baseline["query"] == BASELINE
    assert baseline["series"][0]["labels"] == {"version": "1.0.0"}


def test_a_baseline_breaching_far_less_often_leaves_the_failure(prom: FakePrometheus) -> None:
    # 11 of 12 for the canary, 2 of 12 for the baseline: the release is worse, not the fleet.
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.matrix[BASELINE] = [({"version": "1.0.0"}, [0.0] * 10 + [0.05, 0.05])]
    result = with_baseline(prom)
    assert result.outcome == "fail"
    assert result.evidence["baseline"]["breaches"] == 2


def test_a_baseline_without_data_keeps_the_failure(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.matrix[BASELINE] = [({"version": "1.0.0"}, [math.nan] * 12)]  # it gets no traffic
    result = with_baseline(prom)
    assert result.outcome == "fail"
    assert result.message.startswith('Gate "error ratio of 2.0.0" failed: ')
    assert result.evidence["baseline"] == {"version": "1.0.0", "query": BASELINE, "samples": 0}


def test_a_baseline_query_error_keeps_the_failure(prom: FakePrometheus) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.errors[BASELINE] = (503, "timeout", "query timed out in expression evaluation")
    result = with_baseline(prom)
    assert result.outcome == "fail"
    assert "query timed out" in result.evidence["baseline"]["error"]


def test_no_baseline_query_without_a_previous_version_or_with_the_option_off(
    prom: FakePrometheus,
) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, BAD)]
    prom.matrix[BASELINE] = [({"version": "1.0.0"}, BAD)]
    first_deploy = evaluate(
        PrometheusClient(prom.url), ERRORS, {"version": "2.0.0", "previous": ""}, START, END
    )
    assert first_deploy.outcome == "fail"
    off = with_baseline(prom, ERRORS.model_copy(update={"compare_baseline": False}))
    assert off.outcome == "fail"
    assert "baseline" not in off.evidence
    assert queried(prom) == [RENDERED, RENDERED]


def test_only_a_failing_gate_about_the_new_version_asks_for_the_baseline(
    prom: FakePrometheus,
) -> None:
    prom.matrix[RENDERED] = [({"version": "2.0.0"}, [0.0] * 12)]
    assert with_baseline(prom).outcome == "pass"
    # A query that compares the two versions itself has no baseline of its own.
    ratio = PrometheusGate(
        name="errors vs baseline",
        query='ratio{{new="{version}",old="{previous}"}}',
        op="<",
        threshold=2,
    )
    prom.matrix['ratio{new="2.0.0",old="1.0.0"}'] = [({}, [3.0] * 12)]
    assert with_baseline(prom, ratio).outcome == "fail"
    assert queried(prom) == [RENDERED, 'ratio{new="2.0.0",old="1.0.0"}']


def test_compare_baseline_is_on_by_default() -> None:
    assert all(gate.compare_baseline for gate in Policy().prometheus_gates)
    assert ERRORS.compare_baseline
