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


def json_error(message: str, exit_code: int, detail: str | None = None) -> dict[str, Any]:
    """The `--json` line of a refused or failed command: {"type": "error", "data": {...}}, the
    shape of the rollout's event lines. A detail that is JSON (a partial result) stays JSON."""
    data: dict[str, Any] = {"message": message, "exit_code": exit_code}
    if detail:
        try:
            data["detail"] = json.loads(detail)
        except ValueError:
            data["detail"] = detail
    return {"type": "error", "data": data}


def friendly(fn: F) -> F:
    """Turn an InkdeployError into one printed sentence and a non-zero exit, no traceback.
    With --json, the error is also one JSON line on stdout, so automation that reads stdout
    learns why (and what was done before) instead of reading nothing."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InkdeployError as exc:
            print_error(exc.message, exc.detail)
            if kwargs.get("json") is True:
                print_json(json_error(exc.message, exc.exit_code, exc.detail))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            print_error("Interrupted.")
            if kwargs.get("json") is True:
                print_json(json_error("Interrupted.", 130))
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
