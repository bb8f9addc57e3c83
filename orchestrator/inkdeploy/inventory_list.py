"""`ansible-inventory --list`, its JSON written on one line instead of indented.

ansible-inventory indents its JSON (indent=4), which leaves Python's C encoder out: on a
1,000-host inventory that pure-Python encoding is a fifth of its run. This is Ansible's own
InventoryCLI (the same parse, plugins, variables and errors); only `dump` differs, with the
encoder ansible-inventory uses, not indented. load_environment runs it with the interpreter that
has Ansible: `python -P inventory_list.py -i INVENTORY --list` (-P: this directory is not put on
sys.path). It imports nothing of inkdeploy.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ansible import context
from ansible.cli import inventory as inventory_cli


class CompactInventoryCLI(inventory_cli.InventoryCLI):
    @staticmethod
    def dump(stuff: Any) -> str:
        profile = getattr(inventory_cli, "_inventory_legacy", None)
        if profile is None or context.CLIARGS["yaml"] or context.CLIARGS["toml"]:
            # another Ansible than the one this was written for: its own output, indented
            return str(inventory_cli.InventoryCLI.dump(stuff))
        return json.dumps(stuff, cls=profile.Encoder, sort_keys=True)


def main() -> None:
    CompactInventoryCLI.cli_executor(["ansible-inventory", *sys.argv[1:]])


if __name__ == "__main__":
    main()
