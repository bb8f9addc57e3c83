"""Secrets in Ansible Vault: the orchestrator reads a vault-encrypted inventory with the
password it is given (real ansible-vault and ansible-inventory, no fleet), says in one sentence
what is wrong without it, and masks the inventory's secrets in its events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inkdeploy import deploy
from inkdeploy.cli import app
from inkdeploy.inventory import ConfigError, load_environment
from inkdeploy.plan import Plan
from inkdeploy.runner import PROJECT, Runner
from inkdeploy.state.journal import Journal
from inkdeploy.state.lock import FleetLock

SECRET = "vaulted-s3cret-pw"  # noqa: S105 - a fake, to prove where it goes and where not
BIN = Path(sys.executable).parent


@pytest.fixture
def vaulted(tmp_path: Path) -> Path:
    """An inventory whose group_vars/all/vault.yml is encrypted with the password in ./pw."""
    inventory = tmp_path / "inv"
    (inventory / "group_vars/all").mkdir(parents=True)
    hosts = {"all": {"children": {"app": {"hosts": {"app1": {"ansible_host": "192.0.2.21"}}}}}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars/all/main.yml").write_text("inkdeploy_rollout: {strategy: rolling}\n")
    vault = inventory / "group_vars/all/vault.yml"
    vault.write_text(f"postgresql_app_password: {SECRET}\n")
    (tmp_path / "pw").write_text("right horse battery\n")
    (tmp_path / "wrong").write_text("wrong\n")
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_VAULT_PASSWORD_FILE"}
    subprocess.run(
        [BIN / "ansible-vault", "encrypt", "--vault-password-file", tmp_path / "pw", vault],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    assert vault.read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    return inventory / "hosts.yml"


def test_a_vaulted_inventory_is_read_with_its_password_and_refused_without(
    vaulted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    with pytest.raises(ConfigError, match=r"no vault password was given; pass --vault-password"):
        load_environment(vaulted)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(vaulted.parents[1] / "wrong"))
    with pytest.raises(ConfigError, match=r"does not decrypt .* check --vault-password-file"):
        load_environment(vaulted)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(vaulted.parents[1] / "pw"))
    env = load_environment(vaulted)
    assert env.hostvars["app1"]["postgresql_app_password"] == SECRET
    assert env.policy.strategy == "rolling"


def test_the_cli_option_gives_the_password_and_a_missing_file_is_one_sentence(
    vaulted: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the option sets the variable for the process's children: undone after the test
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", "unset")
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")
    runner = CliRunner()
    missing = runner.invoke(app, ["--vault-password-file", "/nonexistent/pw", "history", "-i",
                                  str(vaulted)])  # fmt: skip
    assert missing.exit_code == 2
    assert "Vault password file /nonexistent/pw does not exist" in missing.output
    assert "Traceback" not in missing.output
    without = runner.invoke(app, ["history", "-i", str(vaulted)])
    assert without.exit_code != 0 and "no vault password was given" in without.output
    # with the password the inventory is read; what fails next is reaching the (fake) fleet
    given = runner.invoke(app, ["--vault-password-file", str(vaulted.parents[1] / "pw"),
                                "history", "-i", str(vaulted)])  # fmt: skip
    assert "vault" not in given.output.lower(), given.output
    assert "no host to hold the deploy lock" in given.output


def test_the_inventory_secrets_are_masked_in_the_event_stream(
    vaulted: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(vaulted.parents[1] / "pw"))
    env = load_environment(vaulted)
    runner = Runner(vaulted)
    session = deploy.Session(env, runner, Journal(tmp_path / "journal"), FleetLock(runner, "x"))
    events = deploy._events(session, "r-vault", json_out=False)
    events.emit("step_failed", message=f"psql: password {SECRET} rejected for inkapp")
    events.close()
    written = (tmp_path / "journal").rglob("*r-vault*")
    text = "".join(path.read_text() for path in written)
    assert json.loads(text.splitlines()[-1])["data"]["message"] == (
        "psql: password *** rejected for inkapp"
    )
    assert SECRET not in text
    # and in the release history kept on the fleet
    plan = Plan("r-vault", "rollout", "canary", "2.0.0", "1.0.0", [])
    reason = f"hook failed: PGPASSWORD={SECRET} psql"
    record = deploy._record(plan, "rolled_back", reason, 0.0, 1.0, session.secrets())
    assert record["reason"] == "hook failed: PGPASSWORD=*** psql"


def test_the_production_vault_example_names_every_secret_the_lab_generates() -> None:
    names = yaml.safe_load((PROJECT / "inventories/lab/secrets.yml").read_text())
    example = PROJECT / "inventories/production/group_vars/all/vault.yml.example"
    assert list(yaml.safe_load(example.read_text())) == names
