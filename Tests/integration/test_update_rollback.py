"""Rollback and crash safety with real processes: the launcher (`meterext image launch`, the first step of
`meterext run`) execs installed stand-in versions (shell scripts) under a supervisor loop playing systemd's
Restart=always; installs are SIGKILLed at random moments."""
import hashlib
import json
import os
import random
import signal
import subprocess
import time

import pytest

from test_update_support import Keys, make_image, meterext_bin, run, slot_is_complete, write_script

CONFIG = '{"version": 5, "meter": {"address": 1}}'


@pytest.fixture
def board(tmp_path):
    root = str(tmp_path)
    binary = meterext_bin()
    keys = Keys(binary, root)
    state = os.path.join(root, "state")
    os.makedirs(state)
    with open(os.path.join(state, "config.json"), "w") as f:
        f.write(CONFIG)
    return dict(root=root, bin=binary, keys=keys, state=state)


def version_image(board, version, behaviour, padding=0):
    """behaviour: 'healthy' confirms itself (as `run` does once API and poll loop are up), 'crash' exits 1 at
    start, 'hang' runs without ever becoming healthy."""
    body = {
        "healthy": f'echo "{version} running"\n"{board["bin"]}" image mark-healthy --state-dir "{board["state"]}" >&2',
        "crash": f'echo "{version} crashing"\nexit 1',
        "hang": f'echo "{version} hanging"\nexec sleep 60',
    }[behaviour]
    script = write_script(os.path.join(board["root"], f"{version}.sh"), body, padding)
    return make_image(board["bin"], board["keys"].secret, script, version, os.path.join(board["root"], f"{version}.img"))


def install(board, image):
    r = run([board["bin"], "image", "install", "--state-dir", board["state"], "--keys", board["keys"].dir,
             "--max-attempts", "3", image])
    assert r.returncode == 0, r.stderr


def start_service(board, start_timeout=2.0):
    """One start under the supervisor: the launcher execs the current version; a start that hangs past
    `start_timeout` is killed as systemd's TimeoutStartSec/watchdog would. Returns (first output line, code)."""
    p = subprocess.Popen([board["bin"], "image", "launch", "--state-dir", board["state"]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=start_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
    return (out.strip().splitlines() or [""])[0], p.returncode


def supervise(board, until, limit=10):
    """Restart=always: start again until a start prints a line containing `until`."""
    seen = []
    for _ in range(limit):
        line, _ = start_service(board)
        seen.append(line)
        if until in line:
            return seen
    pytest.fail(f"never reached '{until}': {seen}")


def status(board):
    return run([board["bin"], "image", "status", "--state-dir", board["state"]]).stdout


@pytest.mark.parametrize("broken", ["crash", "hang"])
def test_broken_new_version_ends_with_the_old_version_running(board, broken):
    install(board, version_image(board, "1.0", "healthy"))
    assert supervise(board, "1.0 running") == ["1.0 running"]
    assert "trial" not in status(board)
    install(board, version_image(board, "2.0", broken))
    seen = supervise(board, "1.0 running")
    assert seen == [f"2.0 {'crashing' if broken == 'crash' else 'hanging'}"] * 3 + ["1.0 running"]
    s = status(board)
    assert "current: 1.0-" in s and "last result: rolled_back 2.0-" in s, s
    assert supervise(board, "1.0 running") == ["1.0 running"], "the old version stays"
    assert open(os.path.join(board["state"], "config.json")).read() == CONFIG


def test_good_new_version_is_committed_and_stays(board):
    install(board, version_image(board, "1.0", "healthy"))
    supervise(board, "1.0 running")
    install(board, version_image(board, "2.0", "healthy"))
    assert supervise(board, "2.0 running") == ["2.0 running"]
    for _ in range(4):  # more starts than max-attempts: a committed version is not rolled back
        assert start_service(board)[0] == "2.0 running"
    assert "previous: 1.0-" in status(board)


def check_invariants(board):
    fw = os.path.join(board["state"], "firmware")
    current = os.path.join(fw, "current")
    if os.path.lexists(current):
        assert os.readlink(current).startswith("slots/")
        assert slot_is_complete(os.path.realpath(current)), f"current -> incomplete slot {os.readlink(current)}"
    previous = os.path.join(fw, "previous")
    if os.path.lexists(previous):
        assert slot_is_complete(os.path.realpath(previous))
    assert open(os.path.join(board["state"], "config.json")).read() == CONFIG


def test_sigkill_at_random_moments_of_an_update_always_leaves_a_working_version(board):
    install(board, version_image(board, "1.0", "healthy"))
    supervise(board, "1.0 running")
    images = [version_image(board, f"2.{i}", "healthy", padding=3_000_000) for i in range(4)]
    t0 = time.monotonic()
    install(board, images[0])
    duration = time.monotonic() - t0
    supervise(board, "2.0 running")
    rng = random.Random(int(os.environ.get("KILL_SEED", "20251121")))
    killed_mid_way = 0
    for round_ in range(40):
        image = images[round_ % len(images)]
        # Round-robin over 2.0..2.3 goes back in version: allowed explicitly, as an installer would.
        p = subprocess.Popen([board["bin"], "image", "install", "--allow-downgrade", "--state-dir", board["state"],
                              "--keys", board["keys"].dir, image], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0, duration * 1.1))
        p.send_signal(signal.SIGKILL)
        killed_mid_way += p.wait() == -signal.SIGKILL
        check_invariants(board)
        # The next start always runs a complete version: whichever was current, confirmed or on trial.
        line, _ = start_service(board)
        assert line.endswith(" running"), (round_, line, status(board))
        check_invariants(board)
    assert killed_mid_way >= 20, "most installs must really be interrupted for this test to mean anything"
