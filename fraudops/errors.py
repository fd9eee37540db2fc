"""User errors as one clear line and exit status 2 (see :mod:`components.cli_errors`)."""

from components.cli_errors import err_console, friendly_errors, is_user_error

__all__ = ["err_console", "friendly_errors", "is_user_error"]
