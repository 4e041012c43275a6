"""Issue 12, item 3: restarts and updates in sequence, with the service run as the board runs it (user nobody).

- system_restart without systemd comes back on the same port, in the same process (re-exec), on its own;
- three firmware updates in a row under a plain supervisor loop (`while true; do meterext run …; done`): each one
  runs the new version (the slot the process really executes, /proc/<pid>/exe, and what system_status reports);
- anti-rollback: an image older than the committed version is refused with `downgrade`; the board's CLI can
  allow it explicitly (`image install --allow-downgrade`), and the files it writes stay the service's.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_update_support import Keys, host_arch  # noqa: E402
from unprivileged import (NOBODY, api, api_json, as_nobody, child_pid, free_port, wait_for,  # noqa: E402
                          wait_healthy)


@pytest.fixture
def running(board, procs):
    """Returns start(supervised, *extra) -> (port, process)."""
    def start(supervised=False, *extra, readable=()):
        port = free_port()
        args = as_nobody(board, board.run_args(port, *extra), readable=readable)
        log = open(board.path(f"service-{port}.log"), "w")
        if supervised:
            loop = " ".join(f"'{a}'" for a in args)
            p = procs.start(["sh", "-c", f"while true; do {loop}; echo SUPERVISOR-RESTART >&2; sleep 0.2; done"],
                            stdout=log, stderr=log)
        else:
            p = procs.start(args, stdout=log, stderr=log)
        wait_healthy(port, proc=p)
        return port, p
    return start


def log_text(board, port):
    return open(board.path(f"service-{port}.log")).read()


def test_system_restart_without_systemd_comes_back_on_the_same_port_in_the_same_process(board, running):
    port, proc = running()
    pid = proc.service_pid()
    before = api_json(port, {"cmd": "system_status"})["uptime"]
    for round_ in range(2):
        assert api_json(port, {"cmd": "system_restart"})["result"] == "OK"
        # The old process image answers until it execs; wait for the fresh start to log that it listens again.
        wait_for(lambda: log_text(board, port).count("API listening") == round_ + 2, what="the restart")
        assert proc.poll() is None, f"the service exited on restart:\n{log_text(board, port)[-3000:]}"
        assert proc.service_pid() == pid, "restarted in place (exec), not by anyone else"
        wait_healthy(port, proc=proc)
        assert api_json(port, {"cmd": "meter_reading"})["result"] == "OK"
    assert "Address already in use" not in log_text(board, port)
    assert int(api_json(port, {"cmd": "system_status"})["uptime"]) <= int(before) + 30


def build_image(board, keys, version):
    """The real service binary (stripped, to keep uploads small) as a signed image of `version`."""
    payload = board.path("meterext-payload")
    if not os.path.exists(payload):
        subprocess.run(["strip", "-o", payload, board.bin], check=True)
    out = board.path(f"{version}.img")
    r = subprocess.run([board.bin, "image", "sign", "--key", keys.secret, "--version", version, "--arch",
                        host_arch(), "--binary", payload, "--out", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


def running_slot(pid):
    """The slot whose binary process `pid` executes (None for the packaged binary)."""
    exe = os.readlink(f"/proc/{pid}/exe")
    parts = exe.split("/")
    return parts[-2] if len(parts) >= 3 and parts[-3] == "slots" else None


def test_three_updates_in_a_row_under_a_supervisor_loop_each_run_the_new_version(board, running):
    keys = Keys(board.bin, board.root)
    os.chmod(keys.dir, 0o755)
    port, loop = running(True, "--keys-dir", keys.dir, readable=[keys.dir])
    first_pid = wait_for(lambda: child_pid(loop.pid), what="the service under the loop")
    for version in ["1.0.0", "2.0.0", "3.0.0"]:
        image = open(build_image(board, keys, version), "rb").read()
        status, text = api(port, image, timeout=120, path="/ota")
        assert status == 200, text
        # Restarted into the new version and confirmed it healthy.
        result_file = os.path.join(board.state, "firmware", "last_result.json")

        def on_new_version():
            fields = api_json(port, {"cmd": "system_status"}, timeout=3)["update"]
            committed = os.path.exists(result_file) and json.load(open(result_file))["slot"] == fields["running"]
            return fields if fields["running"].startswith(version + "-") and committed else None
        fields = wait_for(on_new_version, timeout=60, what=f"version {version} running and committed")
        assert json.load(open(result_file))["result"] == "committed"
        pid = child_pid(loop.pid)
        assert running_slot(pid) == fields["running"], "the process executes the slot it reports"
    log = log_text(board, port)
    # Every restart was the service's own re-exec: the supervisor never had to start it again.
    assert "SUPERVISOR-RESTART" not in log, log[-3000:]
    assert child_pid(loop.pid) == first_pid
    assert "Address already in use" not in log


def test_an_older_image_is_refused_and_only_the_boards_cli_can_install_it(board, running):
    keys = Keys(board.bin, board.root)
    os.chmod(keys.dir, 0o755)
    port, _ = running(False, "--keys-dir", keys.dir, readable=[keys.dir])
    # The packaged binary is 0.1.0: 0.0.9 is older.
    old = build_image(board, keys, "0.0.9")
    status, text = api(port, open(old, "rb").read(), timeout=120, path="/ota")
    assert status == 409 and b"downgrade" in text, (status, text)
    assert not os.path.exists(os.path.join(board.state, "firmware", "current"))
    r = subprocess.run([board.bin, "image", "install", "--state-dir", board.state, "--keys", keys.dir, old],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "downgrade" in r.stderr, r.stderr
    # Explicitly allowed on the board's CLI (root): installed, and every file it made still belongs to the service.
    r = subprocess.run([board.bin, "image", "install", "--allow-downgrade", "--state-dir", board.state,
                        "--keys", keys.dir, old], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.readlink(os.path.join(board.state, "firmware", "current")).startswith("slots/0.0.9-")
    for top, dirs, files in os.walk(os.path.join(board.state, "firmware")):
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            assert (st.st_uid, st.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid), os.path.join(top, name)
