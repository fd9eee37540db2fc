"""Child processes that do not outlive the process that started them (no orphaned servers).

A supervisor (the demo, the local gateway) sets ``FRAUDOPS_PARENT_PID`` to its own pid in the
child's environment; the child calls :func:`die_with_parent` first thing. On Linux the kernel
then sends the child SIGTERM when the parent dies, even by SIGKILL, and the child shuts down as
on any SIGTERM (servers flush their inference logs). Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["PARENT_PID_ENV", "child_env", "die_with_parent"]

PARENT_PID_ENV = "FRAUDOPS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process' environment) plus this process as the child's parent."""
    return {**(os.environ if env is None else env), PARENT_PID_ENV: str(os.getpid())}


def die_with_parent() -> bool:
    """Ask for SIGTERM when the parent named in ``FRAUDOPS_PARENT_PID`` dies.

    Returns:
        True when the request is in place (Linux, started by a supervisor).
    """
    expected = os.environ.get(PARENT_PID_ENV)
    if not expected or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if str(os.getppid()) != expected:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
    return True
