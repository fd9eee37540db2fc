"""Supervised processes die with their supervisor, even when it is killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import pytest

from components.lifetime import PARENT_PID_ENV, child_env, die_with_parent

CHILD = (
    "from components.lifetime import die_with_parent\n"
    "import time\n"
    "assert die_with_parent()\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
PARENT = (
    "import subprocess, sys, time\n"
    "from components.lifetime import child_env\n"
    f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}], env=child_env(),\n"
    "                         stdout=subprocess.PIPE, text=True)\n"
    "assert child.stdout.readline().strip() == 'ready'\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(120)\n"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead too: its parent (the killed one) no longer reaps it, init does
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_a_supervised_child_gets_sigterm_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    assert _alive(child_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid), "the child outlived its SIGKILLed parent"


def test_only_processes_started_by_a_supervisor_ask_for_it(monkeypatch):
    monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    assert die_with_parent() is False
    assert child_env({"A": "1"}) == {"A": "1", PARENT_PID_ENV: str(os.getpid())}
