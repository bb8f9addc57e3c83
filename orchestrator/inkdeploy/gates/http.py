"""HTTP gate: GET a new slot directly until it answers as the policy expects, or give up."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import httpx

from inkdeploy.config import HttpGate
from inkdeploy.gates.result import GateResult

__all__ = ["check_http"]

_BODY_EVIDENCE = 300
_MISSING = object()


def check_http(
    url: str,
    gate: HttpGate,
    version: str,
    target: str,
    *,
    verify: bool | str = False,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    """GET URL up to gate.retries times, gate.interval_s apart; pass on the first good answer.

    A good answer has the expected status, every expect_json field (a dotted path such as
    "checks.db") equal to its value, expect_body in the body, and a latency within the limit;
    "{version}" in the expectations is VERSION. VERIFY is httpx's: False, True or a CA file.
    """
    began = time.time()
    expected_json = {
        path: value.replace("{version}", version) for path, value in gate.expect_json.items()
    }
    expected_body = gate.expect_body.replace("{version}", version) if gate.expect_body else None
    headers = {"Host": gate.host_header} if gate.host_header else {}
    attempts: list[dict[str, Any]] = []
    waited = 0.0
    problem = ""
    # httpx 0.28 wants a CA file as an SSLContext; no proxy: slots are checked directly.
    tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    with httpx.Client(verify=tls, timeout=gate.timeout_s, trust_env=False) as client:
        for attempt in range(1, gate.retries + 1):
            record, problem = _try(client, url, headers, gate, expected_json, expected_body)
            attempts.append(record)
            if not problem:
                break
            if attempt < gate.retries:
                sleep(gate.interval_s)
                waited += gate.interval_s
    span = waited + sum(a["latency_ms"] for a in attempts) / 1000
    where = f"GET {url} on {target}" if target else f"GET {url}"
    last = attempts[-1]
    if not problem:
        message = (
            f"{where} answered {last['status']} in {last['latency_ms']} ms "
            f"(try {len(attempts)} of {gate.retries})."
        )
    else:
        tries = f"{len(attempts)} {'try' if len(attempts) == 1 else 'tries'}"
        message = f"{where} {problem} after {tries} over {span:.0f} s"
        if last["status"] is not None:
            message += f"; last body: {_one_line(last['body'])}"
    evidence = {
        "url": url,
        "host_header": gate.host_header,
        "attempts": attempts,
        "expectations": {
            "status": gate.expect_status,
            "json": expected_json,
            "body": expected_body,
            "max_latency_ms": gate.max_latency_ms,
        },
    }
    return GateResult(
        gate=gate.name,
        kind="http",
        outcome="fail" if problem else "pass",
        message=message,
        target=target,
        evidence=evidence,
        started=began,
        seconds=span,
    )


def _try(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    gate: HttpGate,
    expected_json: dict[str, str],
    expected_body: str | None,
) -> tuple[dict[str, Any], str]:
    """One GET: its record for the evidence, and what was wrong with it ("" if nothing)."""
    started = time.perf_counter()
    try:
        response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        latency_ms = round((time.perf_counter() - started) * 1000)
        error = _error_text(exc, gate.timeout_s)
        record = {"status": None, "latency_ms": latency_ms, "error": error, "body": None}
        return record, f"could not connect: {error}" if _is_connect(exc) else f"failed: {error}"
    latency_ms = round((time.perf_counter() - started) * 1000)
    body = response.text
    record = {
        "status": response.status_code,
        "latency_ms": latency_ms,
        "error": None,
        "body": body[:_BODY_EVIDENCE],
    }
    return record, _problem(response, body, latency_ms, gate, expected_json, expected_body)


def _problem(
    response: httpx.Response,
    body: str,
    latency_ms: int,
    gate: HttpGate,
    expected_json: dict[str, str],
    expected_body: str | None,
) -> str:
    """The first expectation RESPONSE misses, as words for the message ("" if none)."""
    if response.status_code != gate.expect_status:
        return f"returned {response.status_code} (expected {gate.expect_status})"
    if expected_json:
        try:
            document = response.json()
        except ValueError:
            path, value = next(iter(expected_json.items()))
            return f"answered a body that is not JSON, expected {path} {json.dumps(value)}"
        for path, value in expected_json.items():
            found = _lookup(document, path)
            if found is _MISSING:
                return f"answered without {path}, expected {path} {json.dumps(value)}"
            shown = found if isinstance(found, str) else json.dumps(found)
            if shown != value:
                return f"answered {path} {json.dumps(found)}, expected {json.dumps(value)}"
    if expected_body is not None and expected_body not in body:
        return f"answered without {json.dumps(expected_body)} in the body"
    if latency_ms > gate.max_latency_ms:
        return f"took {latency_ms} ms, limit {gate.max_latency_ms} ms"
    return ""


def _lookup(document: Any, path: str) -> Any:
    """DOCUMENT's value at a dotted PATH ("checks.db", "items.0.id"), or _MISSING."""
    node = document
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def _is_connect(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)


def _error_text(exc: httpx.HTTPError, timeout_s: float) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout_s:g} s"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within {timeout_s:g} s"
    text = str(exc) or type(exc).__name__
    return "connection refused" if "refused" in text.lower() else text


def _one_line(body: str) -> str:
    text = " ".join(body.split())
    return text if len(text) <= 200 else text[:200] + "..."
