"""`inkdeploy build`: parse, build, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inkdeploy.build.artifact import Fault, parse_error_rate
from inkdeploy.build.builder import build, verify_offline_install
from inkdeploy.console import friendly, out, print_json
from inkdeploy.lab.cli import parse_delay


@friendly
def build_command(
    project: Annotated[
        Path, typer.Argument(help="Django project directory (with pyproject.toml).")
    ],
    version: Annotated[str, typer.Option(help="Release version, e.g. 2.3.1.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the artifact goes.")] = Path("dist"),
    fault_errors: Annotated[
        str | None, typer.Option(help="Bad build: answer this share of requests with 500 (10%).")
    ] = None,
    fault_latency: Annotated[
        str | None, typer.Option(help="Bad build: add this latency to every request (300ms).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    python: Annotated[
        Path | None,
        typer.Option(help="Interpreter the hosts run (default /usr/bin/python3, Debian 12's)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Install it offline into a throwaway virtualenv first.")
    ] = True,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Build a versioned artifact: wheels for the project and all its dependencies."""
    fault = Fault(
        error_rate=parse_error_rate(fault_errors) if fault_errors else 0.0,
        latency_ms=parse_delay(fault_latency) if fault_latency else 0,
    )
    path, manifest = build(project, version, out_dir, fault, force, python)
    if verify:
        verify_offline_install(path, python)
    if json:
        print_json({"artifact": str(path), **manifest.model_dump()})
        return
    bad = (
        " (deliberately bad: "
        + ", ".join(
            ([f"{fault.error_rate:.0%} errors"] if fault.error_rate else [])
            + ([f"+{fault.latency_ms} ms"] if fault.latency_ms else [])
        )
        + ")"
        if fault.active
        else ""
    )
    checked = ", installs offline" if verify else ""
    out.print(
        f"Built {path}: {manifest.name} {version} for Python {manifest.python}, "
        f"{len(manifest.wheels)} wheels{checked}{bad}."
    )
