"""The load generator (inkdeploy.loadgen, bench/load.py) against real TLS servers on loopback."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inkdeploy.loadgen import (
    LoadConfig,
    LoadConfigError,
    LoadGenerator,
    Report,
    parse_header,
    parse_status_set,
    percentile,
)

REPO = Path(__file__).resolve().parents[2]
LOAD_PY = REPO / "bench" / "load.py"


# --------------------------------------------------------------------------- a throwaway PKI


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    """A CA (its certificate is what clients trust) and a server certificate for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        _certificate("test CA", ca_key, "test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        _certificate("127.0.0.1", key, "test CA", ca_key)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.crt").write_bytes(_pem(ca_cert))
    (directory / "server.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + _pem(cert)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "server.pem")
    return directory / "ca.crt", context


# --------------------------------------------------------------------------- the test server


class Handler(BaseHTTPRequestHandler):
    """GET/POST: 200 with X-App-Version; /status/N answers N; /chunked sends a chunked body;
    /drip sends its body slowly; /slow answers after 1.2 s; /hang never answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: AppServer

    def setup(self) -> None:
        super().setup()
        self.served_here = 0

    def handle_one_request(self) -> None:
        # Between requests a used connection is idle: a reload may close it.
        self.server.set_idle(self.connection, self.served_here > 0)
        try:
            super().handle_one_request()
        finally:
            self.server.set_idle(self.connection, False)

    def parse_request(self) -> bool:
        self.server.set_idle(self.connection, False)
        return super().parse_request()

    def do_GET(self) -> None:
        self._respond()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._respond()

    def _respond(self) -> None:
        self.served_here += 1
        if self.path.startswith("/hang"):
            self.server.release.wait(30)
            self.close_connection = True
            return
        if self.path == "/slow":  # like a retry after a dead upstream's connect timeout
            time.sleep(1.2)
        status = int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200
        body = b"hello\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-App-Version", self.server.version)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nhello\n\r\n0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/drip":  # the body, a byte every 50 ms
            for byte in body:
                self.wfile.write(bytes([byte]))
                time.sleep(0.05)
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class AppServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, context: ssl.SSLContext | None, address: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        super().__init__(address, Handler)
        self.context = context
        self.version = "v1"
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._idle: set[socket.socket] = set()
        self.reloads = self.closed_idle = 0

    @property
    def url(self) -> str:
        scheme = "https" if self.context else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/"

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        conn = request
        if self.context is not None:
            conn = self.context.wrap_socket(request, server_side=True)
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            self.set_idle(conn, False)
            conn.close()

    def set_idle(self, conn: socket.socket, idle: bool) -> None:
        with self._lock:
            (self._idle.add if idle else self._idle.discard)(conn)

    def reload(self) -> None:
        """What an nginx reload does to clients: close every idle keep-alive connection."""
        with self._lock:
            self.reloads += 1
            for conn in self._idle:
                # Under TLS too: end the TCP connection without a TLS close_notify.
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
                self.closed_idle += 1
            self._idle.clear()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # resets and hung clients are the point of these tests


@contextlib.contextmanager
def _serve(
    context: ssl.SSLContext | None, address: tuple[str, int] = ("127.0.0.1", 0)
) -> Iterator[AppServer]:
    server = AppServer(context, address)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def tls_server(pki: tuple[Path, ssl.SSLContext]) -> Iterator[AppServer]:
    with _serve(pki[1]) as server:
        yield server


@pytest.fixture
def cacert(pki: tuple[Path, ssl.SSLContext]) -> str:
    return str(pki[0])


def _run(url: str, **options: object) -> Report:
    return LoadGenerator(LoadConfig(url, **options)).run()  # type: ignore[arg-type]


def _assert_timeline_adds_up(report: Report) -> None:
    for name in ("requests", "ok", "failed", "raw_resets"):
        assert sum(getattr(s, name) for s in report.timeline) == getattr(report, name), name
    for header, values in report.counts.items():
        for value, count in values.items():
            assert sum(s.counts.get(header, {}).get(value, 0) for s in report.timeline) == count
    assert [s.second for s in report.timeline] == list(range(len(report.timeline)))


# --------------------------------------------------------------------------- 1. steady load


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_steady_load_at_the_set_rate(tls: bool, pki: tuple[Path, ssl.SSLContext]) -> None:
    with _serve(pki[1] if tls else None) as server:
        report = _run(
            server.url, rate=50, duration=1.0, concurrency=4, cacert=str(pki[0]) if tls else None,
            paths=("/", "/chunked"),
        )  # fmt: skip
    assert report.final
    assert report.offered == 50 and report.elapsed_s == 1.0
    assert report.not_sent <= 2 and report.in_flight == 0
    assert report.requests == report.started >= 48
    assert report.ok == report.requests and report.failed == 0 and report.raw_resets == 0
    assert report.failed_by_kind == {} and report.first_failure_s is None
    assert 45 <= report.achieved_rate <= 50.0 == report.offered_rate
    assert report.versions == {"v1": report.requests}
    assert report.status_codes == {200: report.requests}
    assert 1 <= report.connections <= 4  # keep-alive: one connection per worker at most
    latency = report.latency_ms
    assert latency is not None
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert latency["p99.9"] <= latency["max"] < 1000
    assert report.slow == {"over_1s": 0, "over_5s": 0}
    _assert_timeline_adds_up(report)
    assert report.first_second_with("v1") == 0


# --------------------------------------------------------------------------- 2. reloads


def _run_with_reloads(server: AppServer, cacert: str, method: str) -> Report:
    gen = LoadGenerator(
        LoadConfig(server.url, rate=40, duration=1.6, concurrency=4, cacert=cacert, method=method)
    ).start()
    while gen.running:
        time.sleep(0.25)
        server.reload()
    return gen.stop()


def test_reload_closing_idle_connections_is_a_raw_reset_and_get_is_retried(
    tls_server: AppServer, cacert: str
) -> None:
    report = _run_with_reloads(tls_server, cacert, "GET")
    assert tls_server.closed_idle > 0
    assert report.raw_resets > 0, report.format()
    assert report.failed == 0, report.format()
    assert report.retries == report.raw_resets
    assert report.ok == report.requests >= 60
    assert report.connections > 4  # reconnected after the resets
    _assert_timeline_adds_up(report)


def test_reload_closing_idle_connections_fails_a_post(tls_server: AppServer, cacert: str) -> None:
    report = _run_with_reloads(tls_server, cacert, "POST")
    assert report.raw_resets > 0, report.format()
    assert report.failed == report.raw_resets and report.retries == 0
    assert report.failed_by_kind == {"reset": report.failed}
    assert set(report.failures["reset"]) <= {
        "RemoteDisconnected",
        "ConnectionResetError",
        "BrokenPipeError",
        "SSLEOFError",
        "SSLZeroReturnError",
    }
    assert report.first_failure_s is not None and report.last_failure_s is not None
    assert 0 < report.first_failure_s <= report.last_failure_s
    assert report.failed_seconds()
    _assert_timeline_adds_up(report)


# --------------------------------------------------------------------------- 3. HTTP errors


def test_http_errors_are_counted_per_status(tls_server: AppServer, cacert: str) -> None:
    paths = ("/ok", "/status/500", "/ok", "/status/429")
    report = _run(tls_server.url, rate=40, duration=1.0, cacert=cacert, paths=paths)
    n500 = report.failures["http_5xx"]["500"]
    n429 = report.failures["http_4xx"]["429"]
    assert report.failed_by_kind == {"http_5xx": n500, "http_4xx": n429}
    assert report.failed == n500 + n429 and report.ok == report.requests - report.failed
    assert abs(n500 - report.requests / 4) <= 1 and abs(n429 - report.requests / 4) <= 1
    assert report.status_codes == {200: report.ok, 429: n429, 500: n500}
    assert report.raw_resets == 0
    assert report.versions == {"v1": report.requests}  # error responses carry it too
    _assert_timeline_adds_up(report)


def test_expect_status_decides_what_is_ok(tls_server: AppServer, cacert: str) -> None:
    expect = parse_status_set(["500"])
    report = _run(
        tls_server.url, rate=20, duration=0.5, cacert=cacert, paths=("/", "/status/500"),
        expect_status=expect,
    )  # fmt: skip
    assert report.failures == {"http_other": {"200": report.failed}}
    assert report.ok == report.status_codes[500]


# --------------------------------------------------------------------------- 4. network failures


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connection_refused_is_connect(cacert: str) -> None:
    report = _run(f"https://127.0.0.1:{_free_port()}/", rate=10, duration=0.3, cacert=cacert)
    assert report.requests == 3 and report.ok == 0
    assert report.failures == {"connect": {"ConnectionRefusedError": 3}}
    assert report.raw_resets == 0 and report.latency_ms is None


def test_server_that_never_answers_is_timeout(tls_server: AppServer, cacert: str) -> None:
    started = time.monotonic()
    report = _run(
        tls_server.url + "hang", rate=10, duration=0.3, timeout=0.3, cacert=cacert, concurrency=4
    )
    assert report.requests == 3
    assert report.failures == {"timeout": {"response": 3}}
    assert time.monotonic() - started < 2


def test_body_slower_than_the_timeout_is_timeout(tls_server: AppServer, cacert: str) -> None:
    report = _run(tls_server.url + "drip", rate=10, duration=0.2, timeout=0.2, cacert=cacert)
    assert report.failures == {"timeout": {"body": 2}}


def test_untrusted_certificate_is_tls(tls_server: AppServer) -> None:
    report = _run(tls_server.url, rate=10, duration=0.2)  # system CAs only
    assert report.failures == {"tls": {"SSLCertVerificationError": 2}}


def test_wrong_server_name_is_tls(tls_server: AppServer, cacert: str) -> None:
    report = _run(tls_server.url, rate=10, duration=0.2, cacert=cacert, server_name="wrong.lab")
    assert report.failed_by_kind == {"tls": 2}


# --------------------------------------------------------------------------- 5. background API


def test_background_api_snapshot_and_stop(tls_server: AppServer, cacert: str) -> None:
    gen = LoadGenerator(LoadConfig(tls_server.url, rate=50, concurrency=4, cacert=cacert))
    with pytest.raises(RuntimeError):
        gen.snapshot()
    gen.start()
    time.sleep(0.6)
    snap = gen.snapshot()
    assert not snap.final and gen.running
    # the rate holds for the time that really passed (a busy machine oversleeps)
    assert abs(snap.requests - 50 * snap.elapsed_s) <= 3 and snap.failed == 0
    tls_server.version = "v2"
    time.sleep(0.9)
    report = gen.stop()
    assert report.final and not gen.running and report.in_flight == 0
    assert gen.stop() is report and gen.snapshot() is report
    assert report.requests > snap.requests and report.failed == 0
    assert 1.4 <= report.elapsed_s <= 2.0
    assert abs(report.requests - 50 * report.elapsed_s) <= 3
    assert set(report.versions) == {"v1", "v2"}
    first_v2 = report.first_second_with("v2")
    assert first_v2 is not None and report.first_second_with("v1") == 0 <= first_v2
    assert report.last_second_with("v1") in (0, 1) and report.failed_seconds() == []
    _assert_timeline_adds_up(report)
    assert json.loads(json.dumps(report.to_dict()))["requests"] == report.requests
    assert "X-App-Version: " in report.format() and "raw_resets 0" in report.format()


def test_context_manager_and_count_headers(tls_server: AppServer, cacert: str) -> None:
    config = LoadConfig(
        tls_server.url, rate=20, cacert=cacert, count_headers=("Content-Type", "X-Missing")
    )
    with LoadGenerator(config) as gen:
        time.sleep(0.3)
    report = gen.snapshot()
    assert report.final
    assert report.counts == {
        "Content-Type": {"text/plain": report.requests},
        "X-Missing": {"(none)": report.requests},
    }


def test_round_robin_addresses_spread_connections_over_both_servers(
    tls_server: AppServer, pki: tuple[Path, ssl.SSLContext], cacert: str
) -> None:
    """One name, two load balancers (DNS round robin): connections alternate between the
    addresses; the TLS name stays the URL's host, and the report counts responses per address."""
    port = tls_server.server_address[1]
    with _serve(pki[1], ("127.0.0.2", port)) as second:
        second.version = "v2"
        config = LoadConfig(
            tls_server.url, rate=60, duration=0.5, concurrency=4, cacert=cacert,
            addresses=("127.0.0.1", "127.0.0.2"),
        )  # fmt: skip
        report = LoadGenerator(config).run()
    assert report.failed == 0 and report.requests >= 25
    assert set(report.by_address) == {"127.0.0.1", "127.0.0.2"}
    assert sum(report.by_address.values()) == report.requests
    assert report.by_address["127.0.0.1"] == report.versions["v1"]
    assert report.by_address["127.0.0.2"] == report.versions["v2"]
    assert json.loads(json.dumps(report.to_dict()))["by_address"] == report.by_address
    with pytest.raises(LoadConfigError, match="neither loopback nor private"):
        LoadGenerator(LoadConfig(tls_server.url, addresses=("127.0.0.1", "8.8.8.8")))


# --------------------------------------------------------------------------- configuration


def test_only_loopback_and_private_targets() -> None:
    with pytest.raises(LoadConfigError, match="neither loopback nor private"):
        LoadGenerator(LoadConfig("https://8.8.8.8/"))  # an address literal: nothing is sent
    LoadGenerator(LoadConfig("https://10.77.0.2/"))  # lab addresses are


def test_bad_options_are_refused() -> None:
    for options in (
        {"url": "ftp://127.0.0.1/"},
        {"url": "https://127.0.0.1/", "rate": 0},
        {"url": "https://127.0.0.1/", "concurrency": 0},
        {"url": "https://127.0.0.1/", "cacert": "x", "insecure": True},
        {"url": "https://127.0.0.1/", "paths": ("http://elsewhere/",)},
    ):
        with pytest.raises(LoadConfigError):
            LoadConfig(**options)  # type: ignore[arg-type]


def test_helpers() -> None:
    assert parse_header("X-Request-ID: abc:1") == ("X-Request-ID", "abc:1")
    with pytest.raises(LoadConfigError):
        parse_header("no colon")
    assert parse_status_set(["200,204", "3xx"]) == {200, 204, *range(300, 400)}
    assert parse_status_set(["200-202"]) == {200, 201, 202}
    with pytest.raises(LoadConfigError):
        parse_status_set(["2yy"])
    values = [float(v) for v in range(1, 1001)]
    assert percentile(values, 50) == 500 and percentile(values, 99.9) == 999
    assert percentile(values, 100) == 1000 and percentile([7.0], 99.9) == 7


# --------------------------------------------------------------------------- 6. the CLI


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(LOAD_PY), *args]


def test_cli_json_report(tls_server: AppServer, cacert: str) -> None:
    result = subprocess.run(
        _cli(tls_server.url, "--cacert", cacert, "--rate", "20", "--duration", "1", "--json",
             "--header", "X-Test: 1", "--path", "a", "--path", "b"),
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["requests"] == report["ok"] >= 19 and report["failed"] == 0
    assert report["counts"] == {"X-App-Version": {"v1": report["requests"]}}
    assert sum(s["requests"] for s in report["timeline"]) == report["requests"]
    assert set(report["latency_ms"]) >= {"p50", "p90", "p99", "p99.9", "max"}


def test_cli_max_failed_is_a_gate(tls_server: AppServer, cacert: str) -> None:
    base = [tls_server.url, "--cacert", cacert, "--rate", "20", "--duration", "0.5", "--quiet"]
    failing = subprocess.run(
        _cli(*base, "--path", "/status/503", "--max-failed", "0"),
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert failing.returncode == 1
    assert "http_5xx 10 (503: 10)" in failing.stdout
    assert "10 failed > --max-failed 0" in failing.stderr
    passing = subprocess.run(
        _cli(*base, "--max-failed", "0", "--data", "{}"),
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert passing.returncode == 0, passing.stderr
    assert passing.stdout.startswith("POST https://")  # --data without --method: POST
    assert "failed 0" in passing.stdout
    bad = subprocess.run(_cli(*base, "--header", "nocolon"), capture_output=True, check=False)
    assert bad.returncode == 2


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_stops_cleanly_on_signal(tls_server: AppServer, cacert: str, signum: int) -> None:
    proc = subprocess.Popen(
        _cli(tls_server.url, "--cacert", cacert, "--rate", "20", "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the first progress line: second 0 is complete
        assert first.split()[:2] == ["0s", "req"], first
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["final"] and report["failed"] == 0 and report["requests"] >= 20


def test_slow_but_successful_requests_are_counted_apart(tls_server: AppServer, cacert: str) -> None:
    """A request a retry or a slow upstream delayed still counts as ok, and shows in `slow`."""
    report = _run(tls_server.url + "slow", rate=10, duration=0.1, timeout=10, cacert=cacert)
    assert report.ok == 1 and report.failed == 0
    assert report.slow == {"over_1s": 1, "over_5s": 0}
    assert "over 1 s: 1" in report.format()
