"""Issue 12, items 4 and 5: the CLI (root) and the service (user nobody) never fight over the state files, and a
slow factory reset never blocks the event loop or starves the systemd watchdog.

- `meterext token` as root while the service runs: printing writes nothing; `--require off` goes to the service
  (which writes its own file and restarts to apply it); the files keep owner nobody and mode 0600 and the service
  still reads them (same token after the restart);
- with the service stopped, the CLI writes the file itself, keeping owner and mode;
- `meterext wifi status` finds the service from the state directory (any port);
- meter_factreset with an nmcli that blocks: /healthz and meter_reading keep answering and WATCHDOG=1 keeps coming
  while it hangs; the reset completes once nmcli returns.
"""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from unprivileged import (NOBODY, api_json, as_nobody, free_port, wait_for,  # noqa: E402
                          wait_healthy)


def start(board, procs, *extra, env=None, writable=(), readable=()):
    port = free_port()
    log = open(board.path(f"service-{port}.log"), "w")
    p = procs.start(as_nobody(board, board.run_args(port, *extra), writable=writable, readable=readable),
                    stdout=log, stderr=log, env=env)
    wait_healthy(port, proc=p)
    return port, p


def stat_of(board, name):
    st = os.stat(os.path.join(board.state, name))
    return st.st_uid, st.st_gid, st.st_mode & 0o7777


def config(board):
    return json.load(open(os.path.join(board.state, "config.json")))


def cli(board, *args):
    return subprocess.run([board.bin, *args, "--state-dir", board.state], capture_output=True, text=True,
                          timeout=60)


SERVICE_OWNED = (NOBODY.pw_uid, NOBODY.pw_gid, 0o600)


def test_token_as_root_goes_through_the_running_service_and_files_stay_the_services(board, procs):
    port, proc = start(board, procs)
    token = config(board)["apiToken"]
    config_written = os.stat(os.path.join(board.state, "config.json")).st_mtime_ns
    assert [stat_of(board, n) for n in ("config.json", "state.json")] == [SERVICE_OWNED] * 2
    r = cli(board, "token")
    assert r.returncode == 0 and r.stdout.strip() == token, r.stderr
    # (state.json is the service's own running record: it may write it meanwhile, as itself.)
    assert os.stat(os.path.join(board.state, "config.json")).st_mtime_ns == config_written, "printing writes nothing"
    assert [stat_of(board, n) for n in ("config.json", "state.json")] == [SERVICE_OWNED] * 2

    r = cli(board, "token", "--require", "off")
    assert r.returncode == 0, r.stderr
    assert "sent to the running service" in r.stderr
    wait_for(lambda: config(board)["tokenRequired"] is False, what="the service storing the change")
    # The service restarts (re-exec) to apply it, and reads its files again.
    wait_for(lambda: open(board.path(f"service-{port}.log")).read().count("API listening") == 2,
             what="the restart")
    wait_healthy(port, proc=proc)
    assert proc.poll() is None
    for name in ("config.json", "state.json"):
        assert stat_of(board, name) == SERVICE_OWNED, name
    assert config(board)["apiToken"] == token, "the service kept its token (it could read its files)"
    assert "generated a new API token" not in open(board.path(f"service-{port}.log")).read().split("API listening")[1]


def test_token_as_root_with_the_service_stopped_keeps_owner_and_mode(board, procs):
    port, proc = start(board, procs)
    token = config(board)["apiToken"]
    proc.terminate()  # meterext itself (BoardProcess), so its lock is gone once wait returns
    proc.wait(10)
    r = cli(board, "token", "--require", "off")
    assert r.returncode == 0 and r.stdout.strip() == token, r.stderr
    assert config(board)["tokenRequired"] is False
    for name in ("config.json", "state.json"):
        assert stat_of(board, name) == SERVICE_OWNED, name
    port, proc = start(board, procs)
    assert config(board)["apiToken"] == token and config(board)["tokenRequired"] is False


def test_wifi_cli_finds_the_service_from_the_state_directory(board, procs):
    start(board, procs)
    r = cli(board, "wifi", "status")
    assert r.returncode == 0, r.stderr
    assert "ap: open" in r.stdout


FAKE_NMCLI = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *delete*meterext-client*)
    touch "{blocked}"
    while [ ! -e "{gate}" ]; do sleep 0.05; done ;;
esac
exit 0
"""


def test_a_slow_factory_reset_never_blocks_the_api_or_the_watchdog(board, procs):
    bindir, shared = board.path("bin"), board.path("shared")
    os.mkdir(bindir)
    os.mkdir(shared, 0o777)
    os.chmod(shared, 0o777)  # the fake nmcli (as nobody) writes its log and marker here
    paths = {k: os.path.join(shared, k) for k in ("nmcli.log", "blocked", "gate")}
    with open(os.path.join(bindir, "nmcli"), "w") as f:
        f.write(FAKE_NMCLI.format(log=paths["nmcli.log"], blocked=paths["blocked"], gate=paths["gate"]))
    os.chmod(os.path.join(bindir, "nmcli"), 0o755)
    # systemd's notify socket, as the service sees it under Type=notify with WatchdogSec.
    notify_path = os.path.join(shared, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    os.chmod(notify_path, 0o777)
    messages = []

    def receive():
        try:
            while True:
                messages.append(notify.recv(4096).decode())
        except OSError:
            pass
    threading.Thread(target=receive, daemon=True).start()
    env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"], NOTIFY_SOCKET=notify_path,
               WATCHDOG_USEC="2000000")
    port, proc = start(board, procs, "--wifi", "networkmanager", env=env, writable=[shared], readable=[bindir])
    token = config(board)["apiToken"]
    wait_for(lambda: any("WATCHDOG=1" in m for m in messages), what="a first watchdog ping")

    assert api_json(port, {"cmd": "meter_factreset"})["result"] == "OK"
    wait_for(lambda: os.path.exists(paths["blocked"]), what="the reset reaching nmcli")
    pings = sum("WATCHDOG=1" in m for m in messages)
    # nmcli hangs: the API answers and the watchdog is fed, over several watchdog periods.
    for _ in range(8):
        assert api_json(port, {"cmd": "meter_reading"}, timeout=3)["result"] == "OK"
        time.sleep(0.5)
    assert sum("WATCHDOG=1" in m for m in messages) >= pings + 2, messages[-5:]
    assert proc.poll() is None
    open(paths["gate"], "w").close()

    def reopened_access_point():
        calls = open(paths["nmcli.log"]).read().splitlines()
        after = calls[max(i for i, c in enumerate(calls) if "delete meterext-client" in c):]
        return any("meterext-ap" in c for c in after)
    wait_for(reopened_access_point, what="the reset completing (access point reopened after nmcli returned)")
    assert config(board)["apiToken"] != token
    assert stat_of(board, "config.json") == SERVICE_OWNED
    notify.close()
