"""Command-line entry point: parse, call, print. No logic of its own."""

from __future__ import annotations

import typer

from inkdeploy.build.cli import build_command
from inkdeploy.deploy_cli import register
from inkdeploy.lab.cli import lab_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Deploy and operate a Django/Celery stack on plain Debian VMs.",
)
app.add_typer(lab_app, name="lab")
app.command("build")(build_command)
register(app)


def main() -> None:
    app()
