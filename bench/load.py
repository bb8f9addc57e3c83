#!/usr/bin/env python3
"""Paced HTTPS load through the load balancer, counting failures the way a browser sees them.

    .venv/bin/python bench/load.py https://10.77.0.2/ \\
        --cacert inventories/lab/pki/nginx_lb/ca.crt --rate 200 --duration 60

Keep-alive HTTP/1.1 connections (--concurrency), open-loop pacing at --rate requests/s. A request
that fails on a reused connection before any response byte (nginx closes idle keep-alive
connections on every reload) is a `raw_reset`; GET/HEAD/PUT/DELETE/OPTIONS are then resent once
on a new connection, as browsers and urllib3 do, and only count as `failed` if that fails too.
`failed` must stay 0 during rollouts; `raw_resets` is what wrk-like clients would have counted.

Runs for --duration seconds, or until SIGINT/SIGTERM; then prints the report (--json: as JSON)
and exits 0, or 1 if --max-failed N was given and more than N requests failed (a shell gate).
Progress goes to stderr once a second unless --quiet. Exit status 2: bad options.
Standard library only (the logic is in orchestrator/inkdeploy/loadgen.py). Only loopback and
private addresses are targeted unless --allow-public-target.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

# Runs with any Python 3.11 from a checkout, the venv's or the system's.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "orchestrator"))

from inkdeploy.loadgen import (
    DEFAULT_COUNT_HEADERS,
    LoadConfig,
    LoadConfigError,
    LoadGenerator,
    Report,
    parse_header,
    parse_status_set,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Paced keep-alive HTTP(S) load with browser-like retry semantics.",
    )
    p.add_argument("url", help="base URL, e.g. https://10.77.0.2/")
    p.add_argument("--rate", type=float, default=100.0, help="offered requests/s (100)")
    p.add_argument("--duration", type=float, help="seconds (default: until SIGINT/SIGTERM)")
    p.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (8)")
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per request, retry included (10)"
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--cacert", metavar="PATH", help="CA certificate(s) to verify the server")
    tls.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("--server-name", metavar="NAME", help="TLS name (SNI) and Host header")
    p.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="IP",
        help="repeatable: connect to these in turn (DNS round robin over several LBs); "
        "the URL's host stays the TLS name and Host header",
    )
    p.add_argument("--header", action="append", default=[], metavar="K:V", help="repeatable")
    p.add_argument("--method", help="GET, or POST when --data is given")
    p.add_argument("--data", help="request body; @FILE reads it from FILE")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        help="repeatable; round-robin, relative to the URL's path (default: the URL itself)",
    )
    p.add_argument(
        "--count-header",
        action="append",
        metavar="NAME",
        help=f"count responses per value of this header; repeatable "
        f"(default: {', '.join(DEFAULT_COUNT_HEADERS)}; giving any replaces the default)",
    )
    p.add_argument(
        "--expect-status",
        action="append",
        metavar="CODES",
        help="statuses that count as ok, e.g. 200,204 or 200-299 or 2xx (default: 200-399)",
    )
    p.add_argument("--max-failed", type=int, metavar="N", help="exit 1 if more than N failed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--timeline", action="store_true", help="add one line per second")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--allow-public-target",
        action="store_true",
        help="also send load to addresses that are neither loopback nor private",
    )
    return p


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    data: bytes | None = None
    if args.data is not None:
        data = Path(args.data[1:]).read_bytes() if args.data.startswith("@") else args.data.encode()
    return LoadConfig(
        url=args.url,
        rate=args.rate,
        duration=args.duration,
        concurrency=args.concurrency,
        timeout=args.timeout,
        cacert=args.cacert,
        insecure=args.insecure,
        server_name=args.server_name,
        headers=tuple(parse_header(h) for h in args.header),
        method=args.method or ("POST" if data is not None else "GET"),
        data=data,
        paths=tuple(args.path),
        count_headers=tuple(args.count_header or DEFAULT_COUNT_HEADERS),
        expect_status=parse_status_set(args.expect_status) if args.expect_status else None,
        allow_public_target=args.allow_public_target,
        addresses=tuple(args.address),
    )


def run(gen: LoadGenerator, stop: threading.Event, quiet: bool) -> Report:
    """Wait for the duration or a signal, printing each completed second unless quiet."""
    gen.start()
    shown = 0
    while not stop.wait(0.2):
        if not gen.running:
            break
        if quiet:
            continue
        timeline = gen.snapshot(latency=False).timeline
        for second in timeline[shown:-1]:  # the last second is still filling
            print(second.format(), file=sys.stderr, flush=True)
        shown = max(shown, len(timeline) - 1)
    return gen.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        gen = LoadGenerator(config_from_args(args))
    except (LoadConfigError, OSError) as exc:
        print(f"load.py: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends the process at once

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    report = run(gen, stop, args.quiet)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.format(timeline=args.timeline))
    if args.max_failed is not None and report.failed > args.max_failed:
        print(f"load.py: {report.failed} failed > --max-failed {args.max_failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
