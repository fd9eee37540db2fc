"""numba for the few hot kernels (window features, tree walks), with a cache that always works.

numba compiles a kernel on its first call (seconds) and, with ``cache=True``, keeps the machine
code on disk so the next process loads it in milliseconds. Its cache must be writable, and a
container usually cannot write into ``site-packages`` (non-root user, or a read-only root
filesystem); numba then raises "cannot cache function" instead of compiling. So the cache goes
to the first writable place of: ``NUMBA_CACHE_DIR`` if set, next to the sources (numba's
default), ``$TMPDIR/fraudops-numba``; with none writable the kernels compile in memory on every
start. This module must be imported before numba reads its configuration, hence every kernel
module imports ``kernel`` from here rather than numba directly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["CACHE_DIR", "kernel"]


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _cache_dir() -> Path | None:
    """Where compiled kernels go (None: nowhere writable); points ``NUMBA_CACHE_DIR`` there
    unless it is numba's default (next to the sources)."""
    in_tree = Path(__file__).parent / "__pycache__"
    configured = os.environ.pop("NUMBA_CACHE_DIR", "")
    candidates = [Path(configured)] if configured else []
    candidates += [in_tree, Path(tempfile.gettempdir()) / "fraudops-numba"]
    for folder in candidates:
        if _writable(folder):
            if folder != in_tree:
                os.environ["NUMBA_CACHE_DIR"] = str(folder)
            return folder
    return None


CACHE_DIR = _cache_dir()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is settled)


def kernel(function: Callable) -> Callable:
    """``numba.njit`` for a hot kernel: nopython, releases the GIL, cached when possible.

    Kernels run on one core: the server has one request in hand at a time, and OpenMP's
    threads (numba's ``parallel=True``) spin between parallel regions, taking the second core
    from the inference-log writer for about 3% more batch throughput (measured, see
    ``docs/serving.md``).
    """
    return numba.njit(cache=CACHE_DIR is not None, nogil=True)(function)
