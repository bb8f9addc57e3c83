"""Prometheus metrics: requests by status and latency, labelled with the app version.

The names are the ones inkdeploy's Prometheus rules expect of every app (roles/prometheus):
http_requests_total{version, method, status} and http_request_duration_seconds{version}.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes the workers share their counts.
"""

import os
import time

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "http_requests_total", "HTTP requests by status", ["version", "method", "status"]
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class MetricsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == "/metrics":
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        version = settings.APP_VERSION
        LATENCY.labels(version).observe(time.perf_counter() - started)
        REQUESTS.labels(version, request.method, str(response.status_code)).inc()
        response["X-App-Version"] = version
        return response


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
