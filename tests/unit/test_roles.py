"""Every role keeps its knobs documented: defaults and argument_specs in step, role-prefixed,
templates marked as managed."""

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if p.is_dir())


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_defaults_and_argument_specs_match(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert set(defaults) == set(options), {
        "in defaults only": sorted(set(defaults) - set(options)),
        "in argument_specs only": sorted(set(options) - set(defaults)),
    }
    for name, spec in options.items():
        assert spec.get("description"), f"{name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_variables_carry_the_role_prefix(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text()) or {}
    bad = [k for k in defaults if not k.startswith(f"{role.name}_")]
    assert bad == []
    internal = role / "vars/main.yml"
    if internal.exists():
        names = yaml.safe_load(internal.read_text()) or {}
        assert [k for k in names if not k.startswith(f"__{role.name}_")] == []


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_templates_start_with_the_managed_header(role):
    for template in (role / "templates").rglob("*.j2"):
        first = template.read_text().splitlines()[0]
        assert "ansible_managed" in first, template
