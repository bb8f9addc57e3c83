"""Command-line entry point: parse, call, print. No logic of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inkdeploy.build.cli import build_command
from inkdeploy.console import friendly
from inkdeploy.deploy_cli import register
from inkdeploy.inventory import use_vault_password_file
from inkdeploy.lab.cli import lab_app
from inkdeploy.ops import db_cli  # noqa: F401  (registers the db commands on db_app)
from inkdeploy.ops.backup_cli import backup_app, restore_command
from inkdeploy.ops.cli import (
    db_app,
    drain_command,
    maintenance_app,
    redis_app,
    undrain_command,
)
from inkdeploy.ops.workers_cli import workers_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Deploy and operate a Django/Celery stack on plain Debian VMs.",
)


@app.callback()
@friendly
def main_options(
    vault_password_file: Annotated[
        Path | None,
        typer.Option(
            "--vault-password-file",
            envvar="ANSIBLE_VAULT_PASSWORD_FILE",
            help="File (or script) with the Ansible Vault password of the inventory's secrets; "
            "every ansible run and inventory read gets it.",
        ),
    ] = None,
) -> None:
    if vault_password_file is not None:
        use_vault_password_file(vault_password_file)


app.add_typer(lab_app, name="lab")
app.add_typer(db_app, name="db")
app.add_typer(redis_app, name="redis")
app.add_typer(workers_app, name="workers")
app.add_typer(maintenance_app, name="maintenance")
app.add_typer(backup_app, name="backup")
app.command("build")(build_command)
app.command("drain")(drain_command)
app.command("undrain")(undrain_command)
app.command("restore")(friendly(restore_command))
register(app)


def main() -> None:
    app()
