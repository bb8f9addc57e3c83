#!/usr/bin/python
"""Apply Sentinel failover settings at runtime: SENTINEL MASTER, then SENTINEL SET what differs."""

import socket

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: redis_sentinel_runtime_config
short_description: Change a monitored master's settings with SENTINEL SET
description:
  - Reads the settings of one monitored master with SENTINEL MASTER and sends SENTINEL SET only for
    those that differ. Sentinel writes them to its own configuration file. Reports changed only
    when it set something.
  - Talks RESP over TCP itself; needs nothing on the host but Python.
options:
  host:
    description: Address of the sentinel.
    type: str
    default: 127.0.0.1
  port:
    description: Port of the sentinel.
    type: int
    default: 26379
  password:
    description: The sentinel's own password; empty for none.
    type: str
    default: ""
    no_log: true
  master_name:
    description: Name of the monitored master.
    type: str
    required: true
  settings:
    description: Setting name (as SENTINEL MASTER reports it) to wanted value.
    type: dict
    required: true
author: inkdeploy
"""


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


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "default": 26379},
            "password": {"type": "str", "default": "", "no_log": True},
            "master_name": {"type": "str", "required": True},
            "settings": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    where = f"sentinel {params['host']}:{params['port']}"
    try:
        conn = Connection(params["host"], params["port"])
    except OSError as exc:
        module.fail_json(msg=f"cannot connect to {where}: {exc}")
    changes = {}
    try:
        if params["password"]:
            conn.call("AUTH", params["password"])
        reply = conn.call("SENTINEL", "MASTER", params["master_name"])
        current = dict(zip(reply[::2], reply[1::2], strict=True))
        for name, wanted in sorted(params["settings"].items()):
            if name not in current:
                module.fail_json(msg=f"{where}: SENTINEL MASTER does not report {name!r}")
            target = str(wanted).strip()
            if str(current[name]) != target:
                changes[name] = {"before": current[name], "after": target}
                if not module.check_mode:
                    conn.call("SENTINEL", "SET", params["master_name"], name, target)
    except RedisError as exc:
        module.fail_json(msg=f"{where} refused: {exc}", changes=changes)
    finally:
        conn.close()
    diff = {
        "before": "".join(f"{k} {v['before']}\n" for k, v in changes.items()),
        "after": "".join(f"{k} {v['after']}\n" for k, v in changes.items()),
    }
    module.exit_json(changed=bool(changes), changes=changes, diff=diff, master=current.get("ip"))


if __name__ == "__main__":
    main()
