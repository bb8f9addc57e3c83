"""Render a role's templates with its defaults (plus overrides) through Ansible's own templar,
so tests see exactly what the role would write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar, trust_as_template

ROLES = Path(__file__).resolve().parents[2] / "roles"
init_plugin_loader()


def role_defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES / role / "defaults/main.yml").read_text()) or {}


def render(role: str, template: str, **overrides: Any) -> str:
    """roles/ROLE/templates/TEMPLATE rendered with the role's defaults, vars and OVERRIDES."""
    variables: dict[str, Any] = {"ansible_managed": "Ansible managed", "groups": {"all": []}}
    variables.update(role_defaults(role))
    role_vars = ROLES / role / "vars/main.yml"
    if role_vars.exists():
        # the role's own vars are templates Ansible evaluates on use (like vars/main.yml in a play)
        raw = yaml.safe_load(role_vars.read_text()) or {}
        variables.update(
            {k: trust_as_template(v) if isinstance(v, str) else v for k, v in raw.items()}
        )
    variables.update(overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    source = (ROLES / role / "templates" / template).read_text()
    return str(templar.template(trust_as_template(source)))
