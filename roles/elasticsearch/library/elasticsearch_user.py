#!/usr/bin/python
"""Keep an Elasticsearch user's password, roles and full name as given."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.inkdeploy_elasticsearch import (
    CONNECTION_OPTIONS,
    EsError,
    client_from,
    ensure_user,
)

DOCUMENTATION = r"""
module: elasticsearch_user
short_description: Create or update an Elasticsearch native user, or set a reserved user's password
description:
  - Authenticates as the user to find out whether its password is already right (passwords
    cannot be read), then creates the user or changes what differs, as the administrator given
    by I(username).
  - Reserved users (kibana_system, logstash_system, ...) only get their password set.
options:
  url: {description: Base URL of Elasticsearch., type: str, required: true}
  username: {description: Administrator for basic authentication., type: str, required: true}
  password: {description: The administrator's password., type: str, required: true, no_log: true}
  ca_path: {description: CA certificate file to trust., type: path}
  name: {description: The user., type: str, required: true}
  user_password: {description: The user's password., type: str, required: true, no_log: true}
  roles: {description: Its roles (native users)., type: list, elements: str, default: []}
  full_name: {description: Its full name (native users)., type: str, default: ""}
  reserved: {description: A reserved user (password only)., type: bool, default: false}
author: inkdeploy
"""


def main():
    module = AnsibleModule(
        argument_spec={
            **CONNECTION_OPTIONS,
            "name": {"type": "str", "required": True},
            "user_password": {"type": "str", "required": True, "no_log": True},
            "roles": {"type": "list", "elements": "str", "default": []},
            "full_name": {"type": "str", "default": ""},
            "reserved": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    client = client_from(p)
    try:
        changed, changes = ensure_user(
            client,
            p["name"],
            p["user_password"],
            roles=p["roles"],
            full_name=p["full_name"],
            reserved=p["reserved"],
            check_mode=module.check_mode,
        )
    except EsError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=changed, user=p["name"], changes=changes)


if __name__ == "__main__":
    main()
