"""A jsonfile fact cache per inventory: inventories sharing host names never share facts."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import PurePath

from ansible import context
from ansible.plugins.cache.jsonfile import CacheModule as JsonFileCacheModule

DOCUMENTATION = """
    name: inventory_jsonfile
    short_description: JSON files per host, in a directory per inventory.
    description:
        - Like P(ansible.builtin.jsonfile#cache) (one JSON file per host), but the files of each
          inventory live in their own subdirectory of O(_uri), so inventories that use the same
          host names (the lab, the lab drills, production) never read each other's facts.
        - The subdirectory is named after the resolved paths of the inventory sources the
          command was started with (C(-i), or the configured default inventory), as the last two
          path components of the first source and a short sha256 of all of them, for example
          C(lab_hosts.yml-3f2a9c41d07e). Without an inventory (API use) it is C(default).
    author: inkdeploy
    options:
      _uri:
        required: True
        description:
          - Path in which the cache plugin will save the per-inventory directories of JSON files.
        env:
          - name: ANSIBLE_CACHE_PLUGIN_CONNECTION
        ini:
          - key: fact_caching_connection
            section: defaults
        type: path
      _prefix:
        description: User defined prefix to use when creating the JSON files
        env:
          - name: ANSIBLE_CACHE_PLUGIN_PREFIX
        ini:
          - key: fact_caching_prefix
            section: defaults
      _timeout:
        default: 86400
        description: Expiration timeout for the cache plugin data
        env:
          - name: ANSIBLE_CACHE_PLUGIN_TIMEOUT
        ini:
          - key: fact_caching_timeout
            section: defaults
        type: integer
"""

DEFAULT_DIRNAME = "default"


def inventory_dirname(sources: Sequence[str] | None) -> str:
    """Subdirectory name for these inventory sources (paths, or a comma-separated host list)."""
    if not sources:
        return DEFAULT_DIRNAME
    resolved = [source if "," in source else os.path.realpath(source) for source in sources]
    digest = hashlib.sha256("\0".join(resolved).encode()).hexdigest()[:12]
    label = re.sub(r"[^\w.-]+", "_", "_".join(PurePath(resolved[0]).parts[-2:]), flags=re.ASCII)
    return f"{label[:40]}-{digest}"


class CacheModule(JsonFileCacheModule):
    """jsonfile, with each inventory's files in their own subdirectory of _uri."""

    def _get_cache_connection(self, source: object) -> str | None:
        base = super()._get_cache_connection(source)
        if not base:
            return base  # jsonfile reports the missing fact_caching_connection
        return os.path.join(base, inventory_dirname(context.CLIARGS.get("inventory")))

    # The subdirectory appears with the first fact stored: commands that only read (such as
    # `ansible-inventory --list` on a throw-away test inventory) leave nothing behind.
    def validate_cache_connection(self) -> None:
        if self._cache_dir and not os.path.isdir(self._cache_dir):
            parent = os.path.dirname(self._cache_dir)
            os.makedirs(parent, exist_ok=True)
            if not os.access(parent, os.R_OK | os.W_OK | os.X_OK):
                super().validate_cache_connection()  # reports the permission problem
            return
        super().validate_cache_connection()

    def set(self, key: str, value: dict[str, object]) -> None:
        os.makedirs(self._cache_dir, exist_ok=True)
        super().set(key, value)

    def keys(self) -> list[str]:
        if not os.path.isdir(self._cache_dir):
            return []
        return list(super().keys())
