"""An environment's inventory as the orchestrator needs it: groups, addresses, and the rollout
policy from group_vars (`inkdeploy_rollout`), read with `ansible-inventory` (read-only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inkdeploy.config import Policy
from inkdeploy.errors import InkdeployError
from inkdeploy.fleet import SLOT_PORTS
from inkdeploy.runner import PROJECT

# `ansible-inventory --list` with its JSON on one line (faster on 1,000 hosts), same data
LIST_SCRIPT = Path(__file__).with_name("inventory_list.py")


class ConfigError(InkdeployError):
    exit_code = 2


@dataclass(frozen=True)
class Environment:
    inventory: Path
    name: str
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]]
    policy: Policy

    @property
    def app_hosts(self) -> list[str]:
        return self.groups.get("app", [])

    @property
    def worker_hosts(self) -> list[str]:
        return sorted(set(self.groups.get("worker", [])) | set(self.groups.get("celery_beat", [])))

    def address(self, host: str) -> str:
        return str(self.hostvars.get(host, {}).get("ansible_host", host))

    def slot_ports(self, host: str) -> dict[str, int]:
        """The app role's app_slot_ports for HOST when the inventory sets it, else its default."""
        ports = self.hostvars.get(host, {}).get("app_slot_ports") or SLOT_PORTS
        return {slot: int(port) for slot, port in ports.items()}

    @property
    def prometheus_url(self) -> str | None:
        if self.policy.prometheus_url:
            return str(self.policy.prometheus_url).rstrip("/")
        monitoring = self.groups.get("monitoring", [])
        if not monitoring:
            return None
        port = self.hostvars[monitoring[0]].get("prometheus_port", 9090)
        return f"http://{self.address(monitoring[0])}:{port}"


def _format_validation(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"inkdeploy_rollout.{where}: {first['msg']}"


def parse_policy(raw: Any, overrides: dict[str, Any] | None = None) -> Policy:
    data = dict(raw or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"The rollout settings are invalid ({_format_validation(exc)}); "
            "fix inkdeploy_rollout in the inventory's group_vars."
        ) from None


def use_vault_password_file(path: Path) -> None:
    """Give every later ansible run and inventory read (this process's children) the vault
    password in PATH, through Ansible's own ANSIBLE_VAULT_PASSWORD_FILE."""
    if not path.is_file():
        raise ConfigError(
            f"Vault password file {path} does not exist; pass the file that holds the inventory's "
            "vault password (--vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE)."
        )
    os.environ["ANSIBLE_VAULT_PASSWORD_FILE"] = str(path.resolve())


def _inventory_error(inventory: Path, stderr: str) -> ConfigError:
    text = " ".join(stderr.split())
    if "Decryption failed" in text:
        return ConfigError(
            f"The vault password given does not decrypt inventory {inventory}'s vault file; "
            "check --vault-password-file (or ANSIBLE_VAULT_PASSWORD_FILE)."
        )
    if "no vault secrets" in text:
        return ConfigError(
            f"Inventory {inventory} has vault-encrypted variables and no vault password was "
            "given; pass --vault-password-file FILE (or set ANSIBLE_VAULT_PASSWORD_FILE)."
        )
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return ConfigError(f"Could not read inventory {inventory}: {last}")


def load_environment(
    inventory: Path, overrides: dict[str, Any] | None = None, *, require_app: bool = True
) -> Environment:
    """The inventory as `ansible-inventory --list` reads it (inventory_list.py). REQUIRE_APP:
    refuse one without app hosts (deploy commands); the data-tier commands (db, redis) work on
    any inventory."""
    if not inventory.exists():
        raise ConfigError(
            f"Inventory {inventory} does not exist; pass --inventory inventories/ENV."
        )
    proc = subprocess.run(
        [sys.executable, "-P", str(LIST_SCRIPT), "-i", str(inventory), "--list"],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        env={**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg")},
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise _inventory_error(inventory, proc.stderr)
    data = json.loads(proc.stdout)
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    groups: dict[str, list[str]] = {}
    for name, group in data.items():
        if name != "_meta" and isinstance(group, dict):
            groups[name] = list(group.get("hosts", []))
    # nested children (all -> app ...) are listed separately by ansible-inventory already
    if require_app and not groups.get("app"):
        raise ConfigError(f"Inventory {inventory} has no hosts in group app; nothing to deploy to.")
    hosts = groups.get("app") or [h for h in hostvars]
    first = hostvars.get(hosts[0], {}) if hosts else {}
    policy = parse_policy(first.get("inkdeploy_rollout"), overrides)
    env_dir = inventory if inventory.is_dir() else inventory.parent
    return Environment(inventory, env_dir.name, groups, hostvars, policy)
