"""A pytest session must not leave a meterext process behind.

A test that stops the wrong process (bwrap instead of meterext: setpriv's change of user clears the parent-death
signal that `--die-with-parent` sets) left a service running as nobody after CI, unnoticed. Both pytest suites load
these hooks (Tests/integration/conftest.py, Tests/hostile/conftest.py); the module's state makes the second load a
no-op when both run in one session. At the end, a process of the binary under test that was not there at the
start and is still there 5 s later fails the session; it is named with its command line and killed.
"""
import os
import signal
import sys
import time

# `binary`: the suites' own `meterext_bin` (Tests/integration/conftest.py), set by `hooks`.
_state = {"before": None, "checked": False, "binary": None}


def hooks(meterext_bin):
    """The two session hooks for a conftest, watching the binary `meterext_bin()` names."""
    _state["binary"] = meterext_bin
    return pytest_sessionstart, pytest_sessionfinish


def meterext_pids():
    """Processes running this session's binary (not another checkout's, such as a CI rehearsal beside it)."""
    binary = os.path.realpath(_state["binary"]())
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                exe = os.readlink(f"/proc/{entry}/exe").removesuffix(" (deleted)")
            except OSError:
                continue
            if exe == binary:
                pids.add(int(entry))
    return pids


def pytest_sessionstart(session):
    if _state["before"] is None:
        _state["before"] = meterext_pids()


def pytest_sessionfinish(session, exitstatus):
    if _state["checked"] or _state["before"] is None:
        return
    _state["checked"] = True
    deadline = time.monotonic() + 5
    left = meterext_pids() - _state["before"]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = meterext_pids() - _state["before"]
    leaked = []
    for pid in sorted(left):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                leaked.append(f"  {pid}: " + f.read().replace("\0", " ").strip())
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if leaked:
        sys.stderr.write("\nleakcheck: meterext processes started by this session outlived it (killed now):\n"
                         + "\n".join(leaked) + "\n")
        session.exitstatus = 1
