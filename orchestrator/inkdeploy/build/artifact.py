"""What an artifact is: its manifest, its name, its fault settings. Pure."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel, Field

from inkdeploy.errors import InkdeployError

VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}$")
MODULE_RE = re.compile(r"^[A-Za-z_][\w.]*$")
WSGI_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
MANIFEST_FORMAT = 1


class BuildError(InkdeployError):
    """The project cannot be built into an artifact."""


class Fault(BaseModel):
    """A deliberately bad release, for testing canary analysis and automatic rollback."""

    error_rate: float = Field(0.0, ge=0.0, le=1.0)  # share of requests answered with 500
    latency_ms: int = Field(0, ge=0, le=60_000)  # added to every request

    @property
    def active(self) -> bool:
        return self.error_rate > 0 or self.latency_ms > 0


class ProjectConfig(BaseModel):
    name: str
    settings: str
    wsgi: str
    celery_app: str | None = None


class Manifest(BaseModel):
    format: int = MANIFEST_FORMAT
    name: str
    version: str
    built_at: str
    python: str  # full version of the interpreter the wheels were resolved for, e.g. "3.11.2"
    # DJANGO_SETTINGS_MODULE to run with: the project's settings plus inkdeploy's middlewares
    # (X-App-Version header, the fault of a deliberately bad build).
    settings: str = "inkdeploy_release.settings"
    project_settings: str
    wsgi: str  # the project's WSGI callable, what gunicorn runs
    celery_app: str | None = None
    requirement: str  # what pip installs from the wheels: the project's distribution name
    fault: Fault = Fault()
    wheels: dict[str, str]  # file name -> sha256


def check_version(version: str) -> str:
    if not VERSION_RE.match(version):
        raise BuildError(
            f"Version '{version}' is not usable as a release name; use letters, digits and "
            ". + _ - (for example 2.3.1 or 2026.11.21-1)."
        )
    return version


def read_project(project: Path) -> ProjectConfig:
    """The project's name and the [tool.inkdeploy] table of its pyproject.toml."""
    pyproject = project / "pyproject.toml"
    if not pyproject.is_file():
        raise BuildError(
            f"{project} has no pyproject.toml; inkdeploy builds installable Python projects "
            "(see examples/inkapp/pyproject.toml)."
        )
    try:
        data = tomllib.loads(pyproject.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{pyproject} is not valid TOML: {exc}.") from None
    name = data.get("project", {}).get("name")
    tool = data.get("tool", {}).get("inkdeploy")
    if not name:
        raise BuildError(f"{pyproject} has no [project] name.")
    if not isinstance(tool, dict):
        raise BuildError(
            f'{pyproject} has no [tool.inkdeploy] table; add settings = "<pkg>.settings" and '
            'wsgi = "<pkg>.wsgi:application" (celery_app is optional).'
        )
    cfg = ProjectConfig(name=name, **{k: tool.get(k) for k in ("settings", "wsgi", "celery_app")})
    if not MODULE_RE.match(cfg.settings):
        raise BuildError(f"[tool.inkdeploy] settings = '{cfg.settings}' is not a module path.")
    if not WSGI_RE.match(cfg.wsgi):
        raise BuildError(
            f"[tool.inkdeploy] wsgi = '{cfg.wsgi}' must look like 'pkg.wsgi:application'."
        )
    if cfg.celery_app is not None and not WSGI_RE.match(cfg.celery_app):
        raise BuildError(
            f"[tool.inkdeploy] celery_app = '{cfg.celery_app}' must look like 'pkg.celery:app'."
        )
    return cfg


def artifact_name(name: str, version: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{version}.tar.gz"


def parse_error_rate(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", text)
    if not m:
        raise BuildError(f"Error rate '{text}' is not understood; write 10% or 0.1.")
    value = float(m.group(1)) / (100 if m.group(2) else 1)
    if not 0 <= value <= 1:
        raise BuildError(f"Error rate '{text}' must be between 0% and 100%.")
    return value
