#!/usr/bin/python
"""Apply Redis settings at runtime: CONFIG GET, CONFIG SET what differs, CONFIG REWRITE."""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.inkdeploy_resp import Connection, RedisError

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
  tls_ca_file:
    description: CA certificate to verify the server with over TLS; empty for a plain connection.
    type: str
    default: ""
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
            "tls_ca_file": {"type": "str", "default": ""},
            "settings": {"type": "dict", "required": True},
            "rewrite": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        conn = Connection(params["host"], params["port"], ca_file=params["tls_ca_file"] or None)
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
