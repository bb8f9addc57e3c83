"""Command-line options every changing on-call verb shares (typer annotations)."""

from __future__ import annotations

from typing import Annotated

import typer

DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would change; change nothing.")]
Message = Annotated[str, typer.Option("--message", "-m", help="Why (kept in the history).")]
NoLock = Annotated[
    bool,
    typer.Option(
        "--no-lock",
        help="Do not take the deploy lock (its hosts are down and no rollout can run).",
    ),
]
