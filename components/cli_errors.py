"""Turn the errors a user can fix into one clear line and a non-zero exit, not a traceback.

Shared by every command line: the ``fraudops`` console script and the jobs that also run on
their own (``python -m monitoring.drift_job`` in a CronJob).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.text import Text

P = ParamSpec("P")
R = TypeVar("R")

# (module, class) of errors whose message tells the user what to fix; other parts mark their
# own error classes with a class attribute ``user_error = True``. Looked up lazily, so
# that `fraudops --help` does not import the heavy libraries behind them.
_USER_ERRORS = (
    ("components.loaders", "DataFormatError"),
    ("components.loaders", "MissingColumnError"),
    ("components.mapping", "MappingError"),
    ("components.validation", "RejectedShareError"),
    ("components.store.base", "StoreError"),
    ("components.bundle", "BundleError"),
    ("pipelines.local", "PipelineFailedError"),
)
err_console = Console(stderr=True)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is one the user can fix from its message."""
    if isinstance(error, FileNotFoundError) or getattr(error, "user_error", False):
        return True
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)  # not imported means it cannot have been raised
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return True
    return False


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate a command so that user errors print ``error: ...`` and exit with status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Exception as e:
            if not is_user_error(e):
                raise
            # The message is plain text: it may contain [brackets] that are not markup.
            err_console.print(
                Text.assemble(("error:", "bold red"), " ", str(e)), highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from e

    return wrapper
