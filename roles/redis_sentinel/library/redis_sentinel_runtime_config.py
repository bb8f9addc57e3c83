#!/usr/bin/python
"""Apply Sentinel failover settings at runtime: SENTINEL MASTER, then SENTINEL SET what differs."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.inkdeploy_resp import Connection, RedisError

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
  tls_ca_file:
    description: CA certificate to verify the server with over TLS; empty for a plain connection.
    type: str
    default: ""
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


def main():
    module = AnsibleModule(
        argument_spec={
            "host": {"type": "str", "default": "127.0.0.1"},
            "port": {"type": "int", "default": 26379},
            "password": {"type": "str", "default": "", "no_log": True},
            "tls_ca_file": {"type": "str", "default": ""},
            "master_name": {"type": "str", "required": True},
            "settings": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    params = module.params
    where = f"sentinel {params['host']}:{params['port']}"
    try:
        conn = Connection(params["host"], params["port"], ca_file=params["tls_ca_file"] or None)
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
