"""Turn the errors a user can fix into one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from components.loaders import DataFormatError, MissingColumnError
from components.mapping import MappingError
from components.store import StoreError
from components.validation import RejectedShareError

P = ParamSpec("P")
R = TypeVar("R")

USER_ERRORS: tuple[type[Exception], ...] = (
    DataFormatError,
    MissingColumnError,
    MappingError,
    RejectedShareError,
    StoreError,
    FileNotFoundError,
)
err_console = Console(stderr=True)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that user errors print ``error: ...`` and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from e

    return wrapper
