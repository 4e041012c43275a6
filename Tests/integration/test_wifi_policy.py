"""The WiFi policy through the real service, run as the board runs it (issue 13).

The runtime directory stands in for /run/meterext: kept across service restarts, emptied by a reboot. The simulated
radio keeps its state there, as NetworkManager keeps its connections across a service restart.
"""
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request

from conftest import board_argv, free_port, run, service_dir


def start(procs, bin_path, tmp_path, wifi="sim"):
    port = free_port()
    state, rundir = service_dir(tmp_path / "st"), service_dir(tmp_path / "run")
    argv = [bin_path, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
            "--runtime-dir", rundir, "--wifi", wifi, "--poll-interval", "0.5"]
    proc = procs.start(board_argv(argv, writable=[state, rundir], readable=[tmp_path]))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return proc, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("meterext run did not answer /healthz within 20 s")


def api(port, **body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # errors carry a JSON body too (wifi_failed is 502)
        return json.loads(e.read())


def stop(proc):
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(15)


def test_service_restart_keeps_a_connected_board_connected(bin_path, procs, tmp_path):
    proc, port = start(procs, bin_path, tmp_path)
    first = api(port, cmd="wifi_status")
    assert first["ap"] == "open" and first["ap-reason"] == "not-configured", first
    assert first["radio"] == "single"
    reply = api(port, cmd="wifi_config", ssid="HomeNet", password="homenet-pass")
    assert reply["result"] == "OK", reply
    status = api(port, cmd="wifi_status")
    assert (status["state"], status["ssid"], status["ap"]) == ("connected", "HomeNet", "closed"), status

    for _ in range(2):  # system_restart, an update, the watchdog: the same process restart
        stop(proc)
        proc, port = start(procs, bin_path, tmp_path)
        status = api(port, cmd="wifi_status")
        assert (status["state"], status["ssid"], status["ap"]) == ("connected", "HomeNet", "closed"), status

    # A power cycle empties /run: the access point opens for its time, as the description says.
    stop(proc)
    shutil.rmtree(tmp_path / "run")
    proc, port = start(procs, bin_path, tmp_path)
    status = api(port, cmd="wifi_status")
    assert (status["ap"], status["ap-reason"], status["ap-closes-in"]) == ("open", "new-boot", "600"), status


def test_concurrent_radio_runs_sta_ap_and_tells_the_new_address(bin_path, procs, tmp_path):
    _, port = start(procs, bin_path, tmp_path, wifi="sim-concurrent")
    reply = api(port, cmd="wifi_config", ssid="HomeNet", password="homenet-pass", mode="sta_ap")
    assert reply["result"] == "OK" and reply["mode"] == "sta_ap", reply
    assert reply["IP"] == "192.168.1.50" and "http://192.168.1.50/" in reply["message"], reply
    status = api(port, cmd="wifi_status")
    assert (status["state"], status["ap"], status["ap-closes-in"], status["radio"]) == \
        ("connected", "open", "", "concurrent"), status


def test_single_radio_refuses_sta_ap_and_keeps_the_configuration(bin_path, procs, tmp_path):
    _, port = start(procs, bin_path, tmp_path)
    assert api(port, cmd="wifi_config", ssid="HomeNet", password="homenet-pass")["result"] == "OK"
    reply = api(port, cmd="wifi_config", ssid="HomeNet", password="homenet-pass", mode="sta_ap")
    assert reply["result"] == "ERROR" and "cannot run the access point and a client" in reply["message"], reply
    bad = api(port, cmd="wifi_config", ssid="Nowhere", password="whatever1")
    assert bad["result"] == "ERROR" and "previous configuration stays" in bad["message"], bad
    status = api(port, cmd="wifi_status")
    assert status["ssid"] in ("HomeNet", "") and status["last-error"].startswith("cannot join Nowhere"), status


def test_per_device_access_point_password(bin_path, procs, tmp_path):
    proc, port = start(procs, bin_path, tmp_path)
    target = ["--api", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "st")]
    shown = run(bin_path, "wifi", "ap-password", *target)
    assert shown.returncode == 0 and shown.stdout.startswith("welinkwmlink"), shown
    assert run(bin_path, "wifi", "ap-password", "--set", "short", *target).returncode != 0
    s = run(bin_path, "wifi", "ap-password", "--set", "label-pass-42", *target)
    assert s.returncode == 0 and "password:     label-pass-42" in s.stdout, s
    assert run(bin_path, "wifi", "ap-password", *target).stdout.strip() == "label-pass-42"
    g = run(bin_path, "wifi", "ap-password", "--generate", *target)
    assert g.returncode == 0, g
    generated = g.stdout.split("password:")[1].strip()
    assert len(generated) == 14 and generated.count("-") == 2, generated
    # Kept across a restart (an update restarts the service the same way).
    stop(proc)
    proc, port = start(procs, bin_path, tmp_path)
    target[1] = f"127.0.0.1:{port}"
    assert run(bin_path, "wifi", "ap-password", *target).stdout.strip() == generated
    # A factory reset brings the documented default back.
    assert api(port, cmd="meter_factreset")["result"] == "OK"
    deadline = time.time() + 20
    while time.time() < deadline and not run(bin_path, "wifi", "ap-password", *target).stdout.startswith("welinkwmlink"):
        time.sleep(0.3)
    assert run(bin_path, "wifi", "ap-password", *target).stdout.startswith("welinkwmlink")


def test_system_restart_reboots_through_logind_under_systemd(bin_path, procs, tmp_path):
    """Under systemd (INVOCATION_ID set) system_restart asks logind to reboot; a fake busctl records the call."""
    fakebin = tmp_path / "fakebin"
    fakebin.mkdir()
    record = tmp_path / "st" / "busctl.log"
    (fakebin / "busctl").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    (fakebin / "busctl").chmod(0o755)
    port = free_port()
    state, rundir = service_dir(tmp_path / "st"), service_dir(tmp_path / "run")
    argv = [bin_path, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", state,
            "--runtime-dir", rundir, "--wifi", "sim"]
    env = dict(os.environ, INVOCATION_ID="0123456789abcdef0123456789abcdef", PATH=f"{fakebin}:{os.environ['PATH']}")
    procs.start(board_argv(argv, writable=[state, rundir], readable=[tmp_path]), env=env)
    deadline = time.time() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except OSError:
            assert time.time() < deadline
            time.sleep(0.2)
    assert api(port, cmd="system_restart")["result"] == "OK"
    deadline = time.time() + 10
    while not record.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert record.read_text().split() == ["call", "org.freedesktop.login1", "/org/freedesktop/login1",
                                          "org.freedesktop.login1.Manager", "Reboot", "b", "false"]
