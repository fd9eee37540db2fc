"""The numba kernels' cache: it must never stop a server from starting (components.jit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import os
from components import jit
from components.compiled_trees import compile_kernels
compile_kernels()
print(jit.CACHE_DIR, os.environ.get("NUMBA_CACHE_DIR", "-"))
"""


def _run(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return out.stdout.strip()


def test_an_unwritable_configured_cache_falls_back_and_the_kernels_run(tmp_path):
    # /proc cannot hold files: numba alone would raise "cannot cache function"
    cache_dir, env_dir = _run({"NUMBA_CACHE_DIR": "/proc/fraudops-cache"}).split()
    assert cache_dir != "/proc/fraudops-cache" and "/proc" not in env_dir


def test_a_writable_configured_cache_is_used(tmp_path):
    cache_dir, env_dir = _run({"NUMBA_CACHE_DIR": str(tmp_path)}).split()
    assert cache_dir == env_dir == str(tmp_path)
    assert any(tmp_path.rglob("*.nbi")), "compiled kernels were not cached there"
