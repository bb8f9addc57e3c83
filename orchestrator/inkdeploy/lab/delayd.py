"""Delay every packet a lab host sends, for kernels built without the netem qdisc.

Runs on the controller inside the host's network namespace (started with nsenter). An
iptables rule there hands each outgoing packet to netfilter queue N; this daemon takes the
packet's id from the kernel, waits the delay, then tells the kernel to let it go. Only packet
metadata crosses to user space. The rule uses --queue-bypass and the queue is fail-open, so if
this daemon is gone or overloaded, packets flow undelayed instead of being dropped.

    python -m inkdeploy.lab.delayd --queue 7 --delay-ms 200
"""

from __future__ import annotations

import argparse
import errno
import heapq
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
QUEUE_MAXLEN = 20000


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int, seq: int, family: int = 0) -> bytes:
    body = struct.pack("=BBH", family, 0, socket.htons(queue)) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def config_messages(queue: int) -> list[bytes]:
    """Bind the queue, ask for metadata only, make it long and fail-open."""
    attrs = [
        _attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET)),
        _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
        _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)),
        _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
        + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
    ]
    flags = NLM_F_REQUEST | NLM_F_ACK
    return [_message(NFQNL_MSG_CONFIG, queue, a, flags, seq) for seq, a in enumerate(attrs, 1)]


def verdict_message(queue: int, packet_id: int, seq: int) -> bytes:
    return _message(
        NFQNL_MSG_VERDICT,
        queue,
        _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id)),
        NLM_F_REQUEST,
        seq,
    )


def parse_packet_ids(data: bytes) -> list[int]:
    """Packet ids of the queued-packet messages in one netlink datagram."""
    ids = []
    offset = 0
    while offset + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR:
            code = struct.unpack_from("=i", data, offset + 16)[0]
            if code != 0:
                raise OSError(
                    -code, f"netfilter queue refused a request: {errno.errorcode.get(-code, code)}"
                )
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos, end = offset + 20, offset + length
            while pos + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, pos)
                if alen < 4:
                    break
                if atype & 0x3FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, pos + 4)[0])
                pos += alen + (-alen % 4)
        offset += length + (-length % 4)
    return ids


def serve(queue: int, delay: float) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sock.bind((0, 0))
    for msg in config_messages(queue):
        sock.send(msg)
        parse_packet_ids(sock.recv(65536))  # the ack; raises if the kernel said no
    print("ready", flush=True)
    pending: list[tuple[float, int]] = []
    seq = 10
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # burst larger than the socket buffer: go on
                    continue
                raise
            due = time.monotonic() + delay
            for packet_id in parse_packet_ids(data):
                heapq.heappush(pending, (due, packet_id))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, packet_id = heapq.heappop(pending)
            seq += 1
            sock.send(verdict_message(queue, packet_id, seq))


def main() -> None:
    parser = argparse.ArgumentParser(description="Delay packets of a netfilter queue.")
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, required=True)
    parser.add_argument("--label", default="", help="free text to find this process by")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(args.queue, args.delay_ms / 1000.0)


if __name__ == "__main__":
    main()
