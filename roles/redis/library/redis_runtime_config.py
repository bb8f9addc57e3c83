#!/usr/bin/python
"""Apply Redis settings at runtime: CONFIG GET, CONFIG SET what differs, CONFIG REWRITE."""

import re
import socket

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: redis_runtime_config
short_description: Apply Redis settings with CONFIG SET and persist them with CONFIG REWRITE
description:
  - Reads each setting with CONFIG GET, sets only those whose value differs, then runs
    CONFIG REWRITE once so redis.conf keeps them. Reports changed only when it set something.
  - Memory sizes are compared in bytes (256mb and 268435456 are the same value).
  - Talks RESP over TCP itself; needs nothing on the host but Python.
options:
  host:
    description: Address of the server.
    type: str
    default: 127.0.0.1
  port:
    description: Port of the server.
    type: int
    default: 6379
  password:
    description: Password (AUTH); empty for none.
    type: str
    default: ""
    no_log: true
  settings:
    description: Setting name to wanted value.
    type: dict
    required: true
  rewrite:
    description: Run CONFIG REWRITE after a change.
    type: bool
    default: true
author: inkdeploy
"""


UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}
MEMORY_RE = re.compile(r"^(\d+)\s*(b|k|kb|m|mb|g|gb)$", re.IGNORECASE)


class RedisError(Exception):
    """An error reply or a broken connection."""


class Connection:
    """The smallest RESP2 client that does the job."""

    def __init__(self, host, port, timeout=5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = self.sock.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.buf.readline()
        if not line:
            raise RedisError("connection closed by the server")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.buf.read(size + 2)[:-2]
            return data.decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RedisError(f"unexpected reply {line!r}")

    def close(self):
        self.sock.close()


def normalize(name, value):
    """The form CONFIG GET returns, so wanted and current values compare equal."""
    text = str(value).strip()
    if isinstance(value, bool):
        text = "yes" if value else "no"
    match = MEMORY_RE.match(text)
    if match and name in {"maxmemory", "client-query-buffer-limit", "proto-max-bulk-len"}:
        return str(int(match.group(1)) * UNITS[match.group(2).lower()])
    return " ".join(text.split()).lower() if name == "save" else text


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "default": 6379},
            "password": {"type": "str", "default": "", "no_log": True},
            "settings": {"type": "dict", "required": True},
            "rewrite": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        conn = Connection(params["host"], params["port"])
    except OSError as exc:
        module.fail_json(msg=f"cannot connect to Redis at {params['host']}:{params['port']}: {exc}")
    changes = {}
    try:
        if params["password"]:
            conn.call("AUTH", params["password"])
        for name, wanted in sorted(params["settings"].items()):
            reply = conn.call("CONFIG", "GET", name)
            if not reply:
                module.fail_json(msg=f"Redis has no setting {name!r} (CONFIG GET returned nothing)")
            current = reply[1]
            target = normalize(name, wanted)
            if normalize(name, current) != target:
                changes[name] = {"before": current, "after": target}
                if not module.check_mode:
                    conn.call("CONFIG", "SET", name, target)
        if changes and params["rewrite"] and not module.check_mode:
            conn.call("CONFIG", "REWRITE")
    except RedisError as exc:
        where = f"{params['host']}:{params['port']}"
        module.fail_json(msg=f"Redis at {where} refused: {exc}", changes=changes)
    finally:
        conn.close()
    diff = {
        "before": "".join(f"{k} {v['before']}\n" for k, v in changes.items()),
        "after": "".join(f"{k} {v['after']}\n" for k, v in changes.items()),
    }
    module.exit_json(changed=bool(changes), changes=changes, diff=diff)


if __name__ == "__main__":
    main()
