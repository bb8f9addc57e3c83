"""HTTP(S) load generator with browser-like keep-alive semantics, standard library only.

`bench/load.py` is the command line over it; benchmarks and tests use it in-process:

    gen = LoadGenerator(LoadConfig("https://10.77.0.2/", cacert="ca.crt", rate=200)).start()
    ...  # drain a host, kill a host, roll out a release
    report = gen.stop()
    assert report.failed == 0, report.format()

Model:

- `concurrency` keep-alive HTTP/1.1 connections, one per worker thread.
- Open-loop pacing: request k is due at `k / rate` seconds after the start. A free worker takes the
  next due request and sends it at once if it is already late, so slow responses do not lower
  the offered rate; they show as `not_sent` (due but no connection free before the end) and as
  schedule lag.
- A request that fails on a reused connection before any response byte arrived (the server
  closed the idle connection, as nginx does on every reload) counts as a `raw_reset`. Idempotent
  requests are then resent once on a fresh connection, like browsers and urllib3; only when that
  retry fails too, or the method is not idempotent, is the request `failed` (kind `reset`).
- Only loopback and private addresses are targeted unless `allow_public_target` is set.

Kinds of failed requests (`Report.failures[kind]` counts the detail: status code or exception):

    http_5xx / http_4xx  a response whose status is not expected (default: 200-399 are ok)
    http_other           any other unexpected status (only with expect_status)
    connect              TCP connect failed: refused, unreachable, DNS, connect timeout
    tls                  handshake or certificate failure, or another SSL error later
    timeout              no progress within the request's deadline (detail: the phase)
    reset                connection closed or reset: before any response byte on a fresh
                         connection, on a reused one when not retried or again on the retry,
                         or in the middle of a response (IncompleteRead included)
    other                anything else (detail: the exception class)

The timeout is one deadline per request (connect, TLS, send, response, a retry included);
each socket operation waits at most for what remains of it.
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import itertools
import math
import socket
import ssl
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_COUNT_HEADERS",
    "IDEMPOTENT_METHODS",
    "KINDS",
    "LoadConfig",
    "LoadConfigError",
    "LoadGenerator",
    "Report",
    "Second",
    "parse_header",
    "parse_status_set",
    "percentile",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DEFAULT_COUNT_HEADERS = ("X-App-Version",)
NO_VALUE = "(none)"
# Kinds of failed requests, in report order.
KINDS = ("http_5xx", "http_4xx", "http_other", "timeout", "connect", "tls", "reset", "other")
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
# The peer closed the connection. RemoteDisconnected (empty status line) is a ConnectionResetError.
CLOSED_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    http.client.IncompleteRead,
)


class LoadConfigError(ValueError):
    """The configuration cannot work (bad URL, option, certificate file or target)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LoadConfig:
    """What to send, how fast, for how long. Sequences are stored as tuples."""

    url: str
    rate: float = 100.0
    duration: float | None = None  # seconds; None: until stop()
    concurrency: int = 8
    timeout: float = 10.0  # per request, connect and a retry included
    cacert: str | None = None
    insecure: bool = False
    server_name: str | None = None  # TLS SNI/certificate name and Host header; default URL host
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    data: bytes | None = None
    paths: tuple[str, ...] = ()  # round-robin, relative to the URL's path
    count_headers: tuple[str, ...] = DEFAULT_COUNT_HEADERS
    expect_status: frozenset[int] | None = None  # None: 200-399 are ok
    allow_public_target: bool = False
    # DNS round robin: the addresses the URL's host name stands for (one per load balancer);
    # each new connection goes to the next one, as a client resolving the name would. Empty:
    # the URL's host. TLS name and Host header stay the URL's host (or server_name).
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        headers = self.headers.items() if isinstance(self.headers, Mapping) else self.headers
        object.__setattr__(self, "headers", tuple((str(k), str(v)) for k, v in headers))
        object.__setattr__(self, "paths", tuple(self.paths))
        object.__setattr__(self, "addresses", tuple(str(a) for a in self.addresses))
        object.__setattr__(self, "count_headers", tuple(self.count_headers))
        object.__setattr__(self, "method", self.method.upper())
        if isinstance(self.data, str):
            object.__setattr__(self, "data", self.data.encode())
        if self.expect_status is not None:
            object.__setattr__(self, "expect_status", frozenset(self.expect_status))
        self._validate()

    def _validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise LoadConfigError(f"{self.url!r}: need an http:// or https:// URL with a host")
        if not self.rate > 0:
            raise LoadConfigError("rate must be > 0 requests/s")
        if self.concurrency < 1:
            raise LoadConfigError("concurrency must be at least 1")
        if not self.timeout > 0:
            raise LoadConfigError("timeout must be > 0 s")
        if self.duration is not None and not self.duration > 0:
            raise LoadConfigError("duration must be > 0 s (or None: until stopped)")
        if self.cacert and self.insecure:
            raise LoadConfigError("cacert and insecure exclude each other")
        if not self.method.isalpha():
            raise LoadConfigError(f"{self.method!r} is not an HTTP method")
        for path in self.paths:
            if "://" in path:
                raise LoadConfigError(f"path {path!r} must be relative to the URL")

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' (or 'Name:value') -> ('Name', 'value')."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
        raise LoadConfigError(f"header {text!r} is not NAME:VALUE")
    return name.strip(), value.strip()


def parse_status_set(specs: Iterable[str]) -> frozenset[int]:
    """'200,204' '200-299' '2xx' (comma separated, several specs allowed) -> set of codes."""
    codes: set[int] = set()
    for spec in specs:
        for item in filter(None, (s.strip().lower() for s in spec.split(","))):
            codes.update(_status_item(item))
    if not codes:
        raise LoadConfigError("empty status set")
    return frozenset(codes)


def _status_item(item: str) -> range:
    try:
        if len(item) == 3 and item.endswith("xx") and item[0].isdigit():
            low, high = int(item[0]) * 100, int(item[0]) * 100 + 99
        elif "-" in item:
            low_s, high_s = item.split("-", 1)
            low, high = int(low_s), int(high_s)
        else:
            low = high = int(item)
    except ValueError:
        raise LoadConfigError(f"{item!r} is not a status code, range or Nxx") from None
    if not 100 <= low <= high <= 599:
        raise LoadConfigError(f"{item!r} is not within 100-599")
    return range(low, high + 1)


# --------------------------------------------------------------------------- target


@dataclass(frozen=True)
class _Target:
    https: bool
    host: str
    port: int
    sni: str
    addresses: tuple[str, ...]  # where connections go, in turn (at least the host)
    ssl_context: ssl.SSLContext | None
    requests: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # (path, headers), round-robin


def _join_path(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def _request_paths(url: str, paths: tuple[str, ...]) -> list[str]:
    parts = urlsplit(url)
    base = parts.path or "/"
    if not paths:
        return [base + (f"?{parts.query}" if parts.query else "")]
    return [_join_path(base, p) for p in paths]


def _ssl_context(config: LoadConfig) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=config.cacert)
    except (OSError, ssl.SSLError) as exc:
        raise LoadConfigError(f"cannot load CA file {config.cacert}: {exc}") from exc
    if config.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _check_private(host: str, port: int) -> None:
    """Refuse names that resolve to anything but loopback or private addresses."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LoadConfigError(f"cannot resolve {host}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not (address.is_loopback or address.is_private):
            raise LoadConfigError(
                f"{host} resolves to {address}, which is neither loopback nor private; "
                "load is only sent to lab hosts (allow_public_target to override)"
            )


def _target(config: LoadConfig) -> _Target:
    parts = urlsplit(config.url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if https else 80)
    except ValueError as exc:
        raise LoadConfigError(f"{config.url!r}: {exc}") from exc
    addresses = config.addresses or (host,)
    if not config.allow_public_target:
        for address in addresses:
            _check_private(address, port)
    headers = list(config.headers)
    if config.server_name and not any(k.lower() == "host" for k, _ in headers):
        default_port = 443 if https else 80
        suffix = "" if port == default_port else f":{port}"
        headers.append(("Host", config.server_name + suffix))
    frozen_headers = tuple(headers)
    return _Target(
        https=https,
        host=host,
        port=port,
        sni=config.server_name or host,
        addresses=addresses,
        ssl_context=_ssl_context(config) if https else None,
        requests=tuple((p, frozen_headers) for p in _request_paths(config.url, config.paths)),
    )


# --------------------------------------------------------------------------- one connection


class _AttemptError(Exception):
    """One attempt failed; kind is one of KINDS."""

    def __init__(self, kind: str, detail: str, *, before_response: bool) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.before_response = before_response


class _NoResponseBytes(Exception):
    """Raised by _ProbingResponse when the connection failed before any response byte."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


class _ProbingResponse(http.client.HTTPResponse):
    """An HTTPResponse that tells 'nothing at all arrived' apart from a broken response."""

    def begin(self) -> None:
        if self.headers is None:
            try:
                first = self.fp.peek(1)
            except Exception as exc:
                raise _NoResponseBytes(exc) from exc
            if not first:
                closed = http.client.RemoteDisconnected("closed without any response byte")
                raise _NoResponseBytes(closed)
        super().begin()


def _remaining(deadline: float) -> float:
    left = deadline - time.perf_counter()
    if left <= 0:
        raise TimeoutError("request deadline passed")
    return left


def _os_error_name(exc: OSError) -> str:
    name = type(exc).__name__
    if name == "OSError" and exc.errno in errno.errorcode:
        return f"OSError({errno.errorcode[exc.errno]})"
    return name


def _classify(exc: BaseException, phase: str, *, before_response: bool) -> _AttemptError:
    """Map an exception raised after the connection was established to a failure kind."""
    if isinstance(exc, _NoResponseBytes):
        return _classify(exc.cause, phase, before_response=True)
    if isinstance(exc, TimeoutError):
        return _AttemptError("timeout", phase, before_response=before_response)
    if isinstance(exc, CLOSED_ERRORS):
        return _AttemptError("reset", type(exc).__name__, before_response=before_response)
    if isinstance(exc, ssl.SSLError):
        return _AttemptError("tls", type(exc).__name__, before_response=before_response)
    return _AttemptError("other", type(exc).__name__, before_response=before_response)


def _read_body(response: http.client.HTTPResponse, sock: socket.socket, deadline: float) -> None:
    """Read and drop the body, a socket read at a time, so the deadline bounds the whole."""
    while True:
        sock.settimeout(_remaining(deadline))  # the response reads through the same socket
        if not response.read1(65536):
            break
    # read1 leaves a complete Content-Length response open; read() marks it done (reads nothing)
    # so that the connection accepts the next request.
    response.read()


@dataclass
class _Reply:
    status: int
    headers: http.client.HTTPMessage


class _Connection:
    """One keep-alive connection of one worker; reopened on demand after it closed."""

    def __init__(self, target: _Target, turns: Iterator[int]) -> None:
        self._target = target
        self._turns = turns  # shared by the generator's connections: the next address in turn
        self._http: http.client.HTTPConnection | None = None
        self.opened = 0
        self.address = target.addresses[0]

    @property
    def is_open(self) -> bool:
        return self._http is not None and self._http.sock is not None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _open(self, deadline: float) -> http.client.HTTPConnection:
        target = self._target
        self.address = target.addresses[next(self._turns) % len(target.addresses)]
        try:
            sock = socket.create_connection((self.address, target.port), _remaining(deadline))
        except TimeoutError:
            raise _AttemptError("connect", "timeout", before_response=True) from None
        except OSError as exc:
            raise _AttemptError("connect", _os_error_name(exc), before_response=True) from None
        self.opened += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.ssl_context is not None:
            sock = self._handshake(sock, target.ssl_context, deadline)
        conn: http.client.HTTPConnection
        if target.ssl_context is not None:
            conn = http.client.HTTPSConnection(target.host, target.port, context=target.ssl_context)
        else:
            conn = http.client.HTTPConnection(target.host, target.port)
        conn.response_class = _ProbingResponse
        conn.sock = sock
        return conn

    def _handshake(
        self, sock: socket.socket, context: ssl.SSLContext, deadline: float
    ) -> ssl.SSLSocket:
        try:
            sock.settimeout(_remaining(deadline))
            return context.wrap_socket(sock, server_hostname=self._target.sni)
        except TimeoutError:
            sock.close()
            raise _AttemptError("timeout", "tls handshake", before_response=True) from None
        except OSError as exc:  # ssl.SSLError included
            sock.close()
            raise _AttemptError("tls", _os_error_name(exc), before_response=True) from None

    def exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: Mapping[str, str],
        deadline: float,
    ) -> _Reply:
        """Send one request and read the whole response; _AttemptError on failure."""
        if not self.is_open:
            self.close()
            self._http = self._open(deadline)
        conn = self._http
        sock = conn.sock if conn is not None else None
        if conn is None or sock is None:
            raise _AttemptError("other", "NotConnected", before_response=True)
        phase = "send"
        try:
            sock.settimeout(_remaining(deadline))
            conn.request(method, path, body=body, headers=dict(headers))
            phase = "response"
            sock.settimeout(_remaining(deadline))
            response = conn.getresponse()
            phase = "body"
            _read_body(response, sock, deadline)
        except Exception as exc:
            self.close()
            raise _classify(exc, phase, before_response=phase == "send") from None
        if response.will_close:
            self.close()
        return _Reply(response.status, response.headers)


# --------------------------------------------------------------------------- outcomes and stats


@dataclass
class _Outcome:
    kind: str | None  # None: ok
    detail: str = ""
    status: int | None = None
    latency: float = 0.0  # seconds, retry included
    raw_reset: bool = False
    retried: bool = False
    values: tuple[tuple[str, str], ...] = ()
    address: str = ""  # where the connection that answered went


@dataclass(frozen=True)
class Second:
    """Requests completed during one second of the run (second 0 = first second)."""

    second: int
    requests: int
    ok: int
    failed: int
    raw_resets: int
    failed_by_kind: dict[str, int]
    counts: dict[str, dict[str, int]]  # header -> value -> responses

    def format(self) -> str:
        """One line: counts, failures by kind, values of the counted headers."""
        kinds = " ".join(f"{k}={n}" for k, n in self.failed_by_kind.items())
        values = "  ".join(
            f"{h} " + " ".join(f"{v}={n}" for v, n in c.items()) for h, c in self.counts.items()
        )
        return (
            f"{self.second:>5}s  req {self.requests:>5}  ok {self.ok:>5}  failed {self.failed:>4}"
            f"  raw_resets {self.raw_resets:>3}  {kinds}  {values}"
        ).rstrip()

    def to_dict(self) -> dict[str, object]:
        return {
            "second": self.second,
            "requests": self.requests,
            "ok": self.ok,
            "failed": self.failed,
            "raw_resets": self.raw_resets,
            "failed_by_kind": dict(self.failed_by_kind),
            "counts": {h: dict(v) for h, v in self.counts.items()},
        }


class _SecondStats:
    def __init__(self) -> None:
        self.requests = self.ok = self.failed = self.raw_resets = 0
        self.failed_by_kind: Counter[str] = Counter()
        self.counts: dict[str, Counter[str]] = {}

    def freeze(self, second: int) -> Second:
        return Second(
            second=second,
            requests=self.requests,
            ok=self.ok,
            failed=self.failed,
            raw_resets=self.raw_resets,
            failed_by_kind=_ordered_kinds(self.failed_by_kind),
            counts={h: dict(sorted(c.items())) for h, c in self.counts.items()},
        )


def _ordered_kinds(counter: Mapping[str, int]) -> dict[str, int]:
    return {k: counter[k] for k in KINDS if counter.get(k)}


def percentile(sorted_values: list[float] | array, pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (pct in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(pct * len(sorted_values) / 100 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _summary(values: array, names: tuple[tuple[str, float], ...]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    result = {name: round(percentile(ordered, pct), 3) for name, pct in names}
    result["max"] = round(ordered[-1], 3)
    result["mean"] = round(sum(ordered) / len(ordered), 3)
    return result


def _slots_before(rate: float, window: float) -> int:
    """How many schedule slots (slot k due at k / rate) are due before `window` seconds."""
    if window <= 0:
        return 0
    k = math.ceil(window * rate)
    while k > 0 and (k - 1) / rate >= window:
        k -= 1
    while k / rate < window:
        k += 1
    return k


class _Stats:
    """Everything counted during a run; every method takes the lock."""

    def __init__(self, count_headers: tuple[str, ...]) -> None:
        self.lock = threading.Lock()
        self.count_headers = count_headers
        self.started = self.requests = self.ok = self.failed = 0
        self.raw_resets = self.retries = self.connections = 0
        self.failures: dict[str, Counter[str]] = {}
        self.status_codes: Counter[int] = Counter()
        self.counts: dict[str, Counter[str]] = {h: Counter() for h in count_headers}
        self.by_address: Counter[str] = Counter()
        self.latencies_ms = array("d")
        self.lags_ms = array("d")
        self.seconds: dict[int, _SecondStats] = {}
        self.first_failure: float | None = None
        self.last_failure: float | None = None

    def request_started(self, lag: float) -> None:
        with self.lock:
            self.started += 1
            self.lags_ms.append(max(0.0, lag) * 1000)

    def connections_opened(self, count: int) -> None:
        if count:
            with self.lock:
                self.connections += count

    def record(self, outcome: _Outcome, at: float) -> None:
        with self.lock:
            sec = self.seconds.setdefault(int(at), _SecondStats())
            self.requests += 1
            sec.requests += 1
            if outcome.raw_reset:
                self.raw_resets += 1
                sec.raw_resets += 1
            self.retries += outcome.retried
            if outcome.status is not None:
                self.status_codes[outcome.status] += 1
                self.by_address[outcome.address] += 1
            for header, value in outcome.values:
                self.counts[header][value] += 1
                sec.counts.setdefault(header, Counter())[value] += 1
            if outcome.kind is None:
                self.ok += 1
                sec.ok += 1
                self.latencies_ms.append(outcome.latency * 1000)
                return
            self.failed += 1
            sec.failed += 1
            sec.failed_by_kind[outcome.kind] += 1
            self.failures.setdefault(outcome.kind, Counter())[outcome.detail] += 1
            if self.first_failure is None:
                self.first_failure = at
            self.last_failure = max(at, self.last_failure or 0.0)

    def view(self, upto: float, samples: bool = True) -> _StatsView:
        """A consistent copy, taken quickly under the lock (sorting happens outside);
        samples=False leaves the latency and lag samples out."""
        with self.lock:
            last = max([*self.seconds, math.ceil(upto) - 1, -1])
            empty = _SecondStats()
            return _StatsView(
                started=self.started,
                requests=self.requests,
                ok=self.ok,
                failed=self.failed,
                raw_resets=self.raw_resets,
                retries=self.retries,
                connections=self.connections,
                failures={k: Counter(c) for k, c in self.failures.items()},
                status_codes=Counter(self.status_codes),
                counts={h: Counter(c) for h, c in self.counts.items()},
                by_address=Counter(self.by_address),
                latencies_ms=array("d", self.latencies_ms if samples else ()),
                lags_ms=array("d", self.lags_ms if samples else ()),
                first_failure=self.first_failure,
                last_failure=self.last_failure,
                timeline=[self.seconds.get(s, empty).freeze(s) for s in range(last + 1)],
            )


@dataclass
class _StatsView:
    started: int
    requests: int
    ok: int
    failed: int
    raw_resets: int
    retries: int
    connections: int
    failures: dict[str, Counter[str]]
    status_codes: Counter[int]
    counts: dict[str, Counter[str]]
    by_address: Counter[str]
    latencies_ms: array
    lags_ms: array
    first_failure: float | None
    last_failure: float | None
    timeline: list[Second]


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Report:
    """Numbers of a run (final) or of a run in progress (snapshot). Times in seconds since start."""

    url: str
    method: str
    concurrency: int
    rate: float  # offered (scheduled) requests/s
    final: bool
    elapsed_s: float  # the schedule's window: start until the end of the duration or stop()
    offered: int  # requests due in that window
    started: int
    requests: int  # completed (ok + failed)
    ok: int
    failed: int
    raw_resets: int  # failures on a reused connection before any response byte
    retries: int  # resends after a raw reset (idempotent methods)
    in_flight: int
    not_sent: int  # due but not started: every connection was busy
    connections: int  # connections opened
    offered_rate: float
    achieved_rate: float  # completed requests / elapsed_s
    failed_by_kind: dict[str, int]
    failures: dict[str, dict[str, int]]  # kind -> status code or exception -> count
    status_codes: dict[int, int]
    latency_ms: dict[str, float] | None  # p50 p90 p99 p99.9 max mean of ok requests
    slow: dict[str, int] | None  # ok requests slower than 1 s and 5 s (retries included)
    schedule_lag_ms: dict[str, float] | None  # p50 p99 max: send time minus due time
    counts: dict[str, dict[str, int]]  # count header -> value -> responses (any status)
    first_failure_s: float | None
    last_failure_s: float | None
    timeline: list[Second] = field(repr=False)
    by_address: dict[str, int] = field(default_factory=dict)  # address -> responses (any status)

    @property
    def versions(self) -> dict[str, int]:
        """Responses per X-App-Version value (empty if that header is not counted)."""
        return self.counts.get("X-App-Version", {})

    def first_second_with(self, value: str, header: str = "X-App-Version") -> int | None:
        """First second in which a response carried header=value."""
        return next((s.second for s in self.timeline if s.counts.get(header, {}).get(value)), None)

    def last_second_with(self, value: str, header: str = "X-App-Version") -> int | None:
        found = [s.second for s in self.timeline if s.counts.get(header, {}).get(value)]
        return found[-1] if found else None

    def failed_seconds(self) -> list[int]:
        return [s.second for s in self.timeline if s.failed]

    def to_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "method": self.method,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "final": self.final,
            "elapsed_s": self.elapsed_s,
            "offered": self.offered,
            "offered_rate": self.offered_rate,
            "started": self.started,
            "requests": self.requests,
            "achieved_rate": self.achieved_rate,
            "ok": self.ok,
            "failed": self.failed,
            "raw_resets": self.raw_resets,
            "retries": self.retries,
            "in_flight": self.in_flight,
            "not_sent": self.not_sent,
            "connections": self.connections,
            "failed_by_kind": dict(self.failed_by_kind),
            "failures": {k: dict(v) for k, v in self.failures.items()},
            "status_codes": {str(k): v for k, v in self.status_codes.items()},
            "latency_ms": self.latency_ms,
            "slow": self.slow,
            "schedule_lag_ms": self.schedule_lag_ms,
            "counts": {h: dict(v) for h, v in self.counts.items()},
            "by_address": dict(self.by_address),
            "first_failure_s": self.first_failure_s,
            "last_failure_s": self.last_failure_s,
            "timeline": [s.to_dict() for s in self.timeline],
        }

    def format(self, timeline: bool = False) -> str:
        """A few lines for humans; with timeline=True one more line per second."""
        lines = [
            f"{self.method} {self.url}  {self.elapsed_s:.1f} s, {self.concurrency} connections"
            f"{'' if self.final else '  (running)'}",
            f"  rate       offered {self.offered_rate:.1f}/s, achieved {self.achieved_rate:.1f}/s"
            f"  ({self.offered} due, {self.started} sent, {self.not_sent} not sent,"
            f" {self.in_flight} in flight)",
            f"  requests   {self.requests}  ok {self.ok}  failed {self.failed}"
            f"  raw_resets {self.raw_resets} ({self.retries} retried)"
            f"  connections {self.connections}",
            f"  latency ms {_format_summary(self.latency_ms)}"
            + (
                f"  (over 1 s: {self.slow['over_1s']}, over 5 s: {self.slow['over_5s']})"
                if self.slow
                else ""
            ),
            f"  lag ms     {_format_summary(self.schedule_lag_ms)}",
        ]
        for kind, count in self.failed_by_kind.items():
            details = ", ".join(f"{d}: {n}" for d, n in self.failures.get(kind, {}).items())
            lines.append(f"  failed     {kind} {count} ({details})")
        if self.first_failure_s is not None:
            lines.append(
                f"  failures   first at {self.first_failure_s:.2f} s,"
                f" last at {self.last_failure_s:.2f} s"
            )
        if len(self.by_address) > 1:
            shown = ", ".join(f"{a} {n}" for a, n in self.by_address.items())
            lines.append(f"  addresses  {shown}")
        for header, values in self.counts.items():
            shown = ", ".join(f"{v} {n}" for v, n in values.items()) or "-"
            lines.append(f"  {header}: {shown}")
        if timeline:
            lines.extend("  " + s.format() for s in self.timeline)
        return "\n".join(lines)


def _format_summary(summary: dict[str, float] | None) -> str:
    if summary is None:
        return "-"
    return "  ".join(f"{k} {v:.1f}" for k, v in summary.items())


# --------------------------------------------------------------------------- generator


class LoadGenerator:
    """Paced load in background threads: start(), snapshot() any time, stop() -> final Report."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self._target = _target(config)
        self._stats = _Stats(config.count_headers)
        self._stop = threading.Event()
        self._lock = threading.Lock()  # schedule, start and end
        self._next_slot = 0
        self._start: float | None = None
        self._end: float | None = None  # relative end of the schedule window
        self._threads: list[threading.Thread] = []
        self._final: Report | None = None
        self._stop_lock = threading.Lock()  # serialises stop()
        self._body = config.data
        self._turns = itertools.count()  # next(count) is atomic: connections share the turns

    # ---- lifecycle

    def start(self) -> LoadGenerator:
        with self._lock:
            if self._start is not None:
                raise RuntimeError("already started")
            self._start = time.perf_counter()
            self._end = self.config.duration
        for n in range(self.config.concurrency):
            thread = threading.Thread(target=self._work, name=f"loadgen-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the duration's schedule is complete (every request due in it was sent
        and has completed) or timeout seconds passed; True if complete. Without a duration
        this only returns after stop() or the timeout."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            thread.join(left)
        return not any(t.is_alive() for t in self._threads)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> Report:
        """End the schedule now (if the duration has not ended it), let requests in flight
        complete (each within its timeout) and return the final report. Idempotent."""
        with self._stop_lock:
            if self._final is not None:
                return self._final
            with self._lock:
                if self._start is None:
                    raise RuntimeError("not started")
                now = self._now()
                # Once every worker has left, the duration's schedule is complete.
                if self._end is None or (now < self._end and self.running):
                    self._end = now
                self._stop.set()
            self.wait(self.config.timeout + 5)
            self._final = self._report(self._window(), final=not self.running)
            return self._final

    def run(self) -> Report:
        """start(), wait for the duration, stop(): the blocking form (needs a duration)."""
        if self.config.duration is None:
            raise RuntimeError("run() needs a duration")
        self.start()
        self.wait()
        return self.stop()

    def snapshot(self, latency: bool = True) -> Report:
        """The numbers so far; latency=False skips the percentiles (cheaper on long runs)."""
        final = self._final
        if final is not None:
            return final
        if self._start is None:
            raise RuntimeError("not started")
        return self._report(self._window(), final=False, latency=latency)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- workers

    def _now(self) -> float:
        if self._start is None:
            raise RuntimeError("not started")
        return time.perf_counter() - self._start

    def _window(self) -> float:
        """Seconds of schedule so far: until now, or until the end of the duration or stop()."""
        with self._lock:
            now = self._now()
            if self._end is None:
                return now
            # Workers leave once the next slot is due after the end: the schedule is complete.
            return self._end if not self.running else min(now, self._end)

    def _claim(self) -> tuple[int, float] | None:
        """The next slot and its due time (relative), or None once the window is over."""
        with self._lock:
            due = self._next_slot / self.config.rate
            if self._stop.is_set() or (self._end is not None and due >= self._end):
                return None
            slot = self._next_slot
            self._next_slot += 1
            return slot, due

    def _work(self) -> None:
        conn = _Connection(self._target, self._turns)
        try:
            while (claim := self._claim()) is not None:
                slot, due = claim
                if self._stop.wait(max(0.0, due - self._now())):
                    break
                self._stats.request_started(self._now() - due)
                outcome = self._request(conn, slot)
                self._stats.record(outcome, self._now())
        finally:
            conn.close()

    def _request(self, conn: _Connection, slot: int) -> _Outcome:
        config = self.config
        path, headers = self._target.requests[slot % len(self._target.requests)]
        start = time.perf_counter()
        deadline = start + config.timeout
        opened_before = conn.opened
        reused = conn.is_open
        raw_reset = retried = False
        try:
            try:
                reply = conn.exchange(config.method, path, self._body, dict(headers), deadline)
            except _AttemptError as err:
                if not (reused and err.before_response and err.kind == "reset"):
                    raise
                raw_reset = True
                if not config.idempotent:
                    raise
                retried = True
                reply = conn.exchange(config.method, path, self._body, dict(headers), deadline)
        except _AttemptError as err:
            return _Outcome(err.kind, err.detail, raw_reset=raw_reset, retried=retried)
        except Exception as exc:  # a bug here must not kill the worker silently
            return _Outcome("other", type(exc).__name__, raw_reset=raw_reset, retried=retried)
        finally:
            self._stats.connections_opened(conn.opened - opened_before)
        return self._judge(reply, time.perf_counter() - start, raw_reset, retried, conn.address)

    def _judge(
        self, reply: _Reply, latency: float, raw_reset: bool, retried: bool, address: str
    ) -> _Outcome:
        values = tuple(
            (name, reply.headers.get(name, NO_VALUE)) for name in self.config.count_headers
        )
        kind = _status_kind(reply.status, self.config.expect_status)
        return _Outcome(
            kind,
            str(reply.status),
            status=reply.status,
            latency=latency,
            raw_reset=raw_reset,
            retried=retried,
            values=values,
            address=address,
        )

    # ---- report

    def _report(self, window: float, final: bool, latency: bool = True) -> Report:
        offered = _slots_before(self.config.rate, window)
        view = self._stats.view(window, samples=latency)
        lags = (("p50", 50.0), ("p99", 99.0))
        return Report(
            url=self.config.url,
            method=self.config.method,
            concurrency=self.config.concurrency,
            rate=self.config.rate,
            final=final,
            elapsed_s=round(window, 3),
            offered=offered,
            started=view.started,
            requests=view.requests,
            ok=view.ok,
            failed=view.failed,
            raw_resets=view.raw_resets,
            retries=view.retries,
            in_flight=view.started - view.requests,
            not_sent=max(0, offered - view.started),
            connections=view.connections,
            offered_rate=round(offered / window, 2) if window > 0 else 0.0,
            achieved_rate=round(view.requests / window, 2) if window > 0 else 0.0,
            failed_by_kind=_ordered_kinds({k: sum(c.values()) for k, c in view.failures.items()}),
            failures={k: dict(view.failures[k].most_common()) for k in KINDS if k in view.failures},
            status_codes=dict(sorted(view.status_codes.items())),
            latency_ms=_summary(view.latencies_ms, PERCENTILES) if latency else None,
            slow=_slow(view.latencies_ms) if latency else None,
            schedule_lag_ms=_summary(view.lags_ms, lags) if latency else None,
            counts={h: dict(c.most_common()) for h, c in view.counts.items()},
            first_failure_s=_round(view.first_failure),
            last_failure_s=_round(view.last_failure),
            timeline=view.timeline,
            by_address=dict(sorted(view.by_address.items())),
        )


SLOW_MS = (("over_1s", 1000.0), ("over_5s", 5000.0))


def _slow(latencies_ms: array) -> dict[str, int]:
    """How many ok requests took longer than each of SLOW_MS: what a failure that a retry
    hid (a dead upstream's connect timeout, say) still cost the user."""
    return {name: sum(1 for value in latencies_ms if value > limit) for name, limit in SLOW_MS}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _status_kind(status: int, expect: frozenset[int] | None) -> str | None:
    if (status in expect) if expect is not None else 200 <= status < 400:
        return None
    if 500 <= status <= 599:
        return "http_5xx"
    if 400 <= status <= 499:
        return "http_4xx"
    return "http_other"
