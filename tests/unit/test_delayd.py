"""The netlink messages of the packet-delay helper, byte for byte where the kernel cares."""

import socket
import struct

import pytest

from inkdeploy.lab import delayd


def test_config_binds_the_queue_for_ipv4_metadata_only_and_fail_open():
    msgs = delayd.config_messages(7)
    assert len(msgs) == 4
    for seq, msg in enumerate(msgs, 1):
        length, kind, flags, got_seq, _ = struct.unpack_from("=IHHII", msg)
        assert length == len(msg)
        assert kind == (3 << 8) | 2  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG
        assert flags == 1 | 4 and got_seq == seq
        assert struct.unpack_from("!H", msg, 18)[0] == 7  # queue number, network order
    # BIND command for AF_INET
    assert msgs[0][20:28] == struct.pack("=HH", 8, 1) + struct.pack("!BBH", 1, 0, socket.AF_INET)
    # copy mode META: the packet payload never reaches user space
    assert msgs[1][24:29] == struct.pack("!IB", 0, 1)


def test_verdict_accepts_the_given_packet():
    msg = delayd.verdict_message(0, 4242, 11)
    assert struct.unpack_from("=HH", msg, 20) == (12, 2)  # NFQA_VERDICT_HDR
    assert struct.unpack_from("!II", msg, 24) == (1, 4242)  # NF_ACCEPT, id


def _packet(packet_id: int) -> bytes:
    hdr = struct.pack("!IHB", packet_id, 0x0800, 3) + b"\0"
    attrs = struct.pack("=HH", 4 + 7, 1) + hdr  # NFQA_PACKET_HDR (7 bytes + pad)
    body = struct.pack("=BBH", 2, 0, 0) + attrs
    return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body


def test_packet_ids_are_read_from_a_batch_of_messages():
    assert delayd.parse_packet_ids(_packet(1) + _packet(2) + _packet(99)) == [1, 2, 99]


def test_a_refusal_from_the_kernel_is_raised():
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(OSError, match="EPERM"):
        delayd.parse_packet_ids(err)
    ack = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", 0) + b"\0" * 16
    assert delayd.parse_packet_ids(ack) == []
