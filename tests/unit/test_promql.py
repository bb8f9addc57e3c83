"""inkdeploy.promql.metric_names: what a dashboard or gate query reads from Prometheus."""

import pytest

from inkdeploy.promql import PromQLSyntaxError, metric_names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("up", {"up"}),
        ("up == 0", {"up"}),
        ('up{job="app"}', {"up"}),
        ("node_load1", {"node_load1"}),
        # Recording rules carry colons.
        ("version:http_requests:rate30s", {"version:http_requests:rate30s"}),
        (
            'sum by (version) (version:http_errors:ratio_rate1m{version=~"$version"})',
            {"version:http_errors:ratio_rate1m"},
        ),
        # Functions, aggregations, label lists and ranges are not metric names.
        (
            "sum by (version, status) "
            '(rate(http_requests_total{status=~"5..", method!="GET"}[1m]))',
            {"http_requests_total"},
        ),
        (
            "histogram_quantile(0.95, sum without (instance) "
            "(rate(http_request_duration_seconds_bucket[$__rate_interval])))",
            {"http_request_duration_seconds_bucket"},
        ),
        # The by clause after the aggregation's body.
        ("sum(rate(nginx_http_requests_total[5m])) by (instance)", {"nginx_http_requests_total"}),
        # Vector matching with on/ignoring and group_left/group_right label lists.
        (
            "node_filesystem_avail_bytes / on (instance, mountpoint) group_left (device) "
            "node_filesystem_size_bytes",
            {"node_filesystem_avail_bytes", "node_filesystem_size_bytes"},
        ),
        (
            "rate(http_requests_total[1m]) * ignoring(status) group_right http_requests_total",
            {"http_requests_total"},
        ),
        # Keywords, in any case, and literals.
        (
            "redis_up and on(instance) redis_connected_slaves > bool 0 OR vector(0)",
            {"redis_up", "redis_connected_slaves"},
        ),
        ("pg_up unless patroni_primary", {"pg_up", "patroni_primary"}),
        ("node_load1 > Inf or node_load1 != NaN", {"node_load1"}),
        ("node_load1 atan2 node_load1", {"node_load1"}),
        ("1 - 0.5 * 1e3 + 0x1f", set()),
        # Offsets, @ modifiers and subqueries.
        (
            "rate(http_requests_total[5m] offset 1h30m) / rate(http_requests_total[5m] @ start())",
            {"http_requests_total"},
        ),
        ("max_over_time(node_load1[1h:5m])", {"node_load1"}),
        # Strings are never names; an exact __name__ matcher is.
        (
            'label_replace(up, "host", "$1", "instance", "(.*):9100")',
            {"up"},
        ),
        ('count_values("version", redis_instance_info)', {"redis_instance_info"}),
        ('{__name__="pg_up", instance="db1"}', {"pg_up"}),
        ('{__name__=~"pg_.*"}', set()),
        # Grafana variables in every form.
        (
            'sum(rate(http_requests_total{version=~"${version:regex}", slot="$slot"}'
            "[$__rate_interval])) / $__interval_ms",
            {"http_requests_total"},
        ),
        # A comment line.
        ("up # is it up?\n", {"up"}),
        # Whitespace between a function and its parenthesis.
        ("sum (redis_key_size{key='celery'})", {"redis_key_size"}),
    ],
)
def test_metric_names(expr, expected):
    assert metric_names(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(up[5m])",
        "rate(up[5m)",
        'up{job="app"',
        "up)",
        'up{job="app}',
        "sum(up{job='x})",
    ],
)
def test_broken_expressions_raise(expr):
    with pytest.raises(PromQLSyntaxError):
        metric_names(expr)


def test_error_names_the_expression():
    with pytest.raises(PromQLSyntaxError, match=r"sum\(rate\(up\[5m\]\)"):
        metric_names("sum(rate(up[5m])")
