"""Random secrets for a lab: one value per variable named in inventories/lab/secrets.yml."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import yaml

from inkdeploy.errors import LabError


def secret_names(project_root: Path | None) -> list[str]:
    if project_root is None:
        return []
    path = project_root / "inventories" / "lab" / "secrets.yml"
    if not path.exists():
        return []
    names = yaml.safe_load(path.read_text()) or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise LabError(f"{path} must be a YAML list of variable names.")
    return names


def lab_secrets(store: Path, names: list[str]) -> dict[str, str]:
    """The lab's secrets, generating the missing ones; existing values never change."""
    values: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
    missing = [n for n in names if n not in values]
    if missing:
        for name in missing:
            values[name] = secrets.token_urlsafe(24)
        store.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(store.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(values, fh, indent=2)
        store.with_suffix(".tmp").replace(store)
    return {n: values[n] for n in names}
