"""Output helpers shared by CLI commands: human tables on stdout, errors on stderr, JSON."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from inkdeploy.errors import InkdeployError

out = Console()
err = Console(stderr=True)


def print_json(data: Any) -> None:
    """DATA as one line of JSON (the `--json` output: JSON lines). Not indented: json's C
    encoder serves only that, and a 1,000-host rolling plan is tens of MB of it."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")


def print_error(message: str, detail: str | None = None) -> None:
    err.print(f"[bold red]Error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if detail:
        err.print(detail, style="dim", highlight=False, markup=False, soft_wrap=True)


F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn an InkdeployError into one printed sentence and a non-zero exit, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InkdeployError as exc:
            print_error(exc.message, exc.detail)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("Interrupted.")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
