#!/usr/bin/python
"""Keep an Elasticsearch object (ILM policy, index template, role) as given: GET, compare, PUT."""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.inkdeploy_elasticsearch import (
    CONNECTION_OPTIONS,
    EsError,
    client_from,
    ensure_object,
)

DOCUMENTATION = r"""
module: elasticsearch_object
short_description: Create or update an Elasticsearch object with PUT when it differs
description:
  - GETs the object at I(path), compares I(body) (or its I(compare_key) part) with what
    Elasticsearch returns at I(current_keys), and PUTs I(body) only when a key or value differs
    or the object is missing.
  - The comparison is a subset check, because Elasticsearch adds defaults and metadata; a
    setting removed from I(body) is therefore not removed from Elasticsearch.
options:
  url: {description: Base URL of Elasticsearch., type: str, required: true}
  username: {description: User for basic authentication., type: str, required: true}
  password: {description: Its password., type: str, required: true, no_log: true}
  ca_path: {description: CA certificate file to trust., type: path}
  path:
    description: API path of the object, for example _ilm/policy/logs.
    type: str
    required: true
  body: {description: The object as PUT expects it., type: dict, required: true}
  current_keys:
    description: Keys (or list indexes) leading to the object in the GET answer.
    type: list
    elements: raw
    default: []
  compare_key: {description: Compare only this key of I(body)., type: str}
author: inkdeploy
"""


def main():
    module = AnsibleModule(
        argument_spec={
            **CONNECTION_OPTIONS,
            "path": {"type": "str", "required": True},
            "body": {"type": "dict", "required": True},
            "current_keys": {"type": "list", "elements": "raw", "default": []},
            "compare_key": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    client = client_from(p)
    try:
        changed, current = ensure_object(
            client, p["path"], p["body"], p["current_keys"], p["compare_key"], module.check_mode
        )
    except EsError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(
        changed=changed, path=p["path"], diff={"before": current or {}, "after": p["body"]}
    )


if __name__ == "__main__":
    main()
