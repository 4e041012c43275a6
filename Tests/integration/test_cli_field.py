"""Field-staff commands against a running service (`meterext run --simulate --wifi sim`)."""
import time

import pytest

from conftest import run, start_service


@pytest.fixture
def service(bin_path, procs, tmp_path):
    api = f"127.0.0.1:{start_service(procs, bin_path, tmp_path)}"
    deadline = time.time() + 20
    # Wait until the status engine has seen the simulated meter.
    while time.time() < deadline:
        r = run(bin_path, "status", "--api", api)
        if r.returncode == 0:
            break
        time.sleep(0.3)
    return api


def test_status_prints_code_and_action(bin_path, service):
    r = run(bin_path, "status", "--api", service)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AMI 1000" in r.stdout and "code 87.00" in r.stdout and "action:" in r.stdout


def test_status_without_service_says_so(bin_path):
    r = run(bin_path, "status", "--api", "127.0.0.1:1")
    assert r.returncode == 3
    assert "cannot reach the meterext service" in r.stderr


@pytest.mark.parametrize("code,words", [
    ("1008", "Commission meter (default code: 12345)"), ("87.7", "Remote Disconnect"), ("87-13", "Current Reverse"),
])
def test_status_code_lookup(bin_path, code, words):
    r = run(bin_path, "status-code", code)
    assert r.returncode == 0 and words in r.stdout, r.stdout


def test_status_code_ambiguous_and_unknown(bin_path):
    both = run(bin_path, "status-code", "14")
    assert "Load threshold" in both.stdout and "Open Enclosure Cover" in both.stdout
    unknown = run(bin_path, "status-code", "1019")
    assert unknown.returncode == 1 and "Unknown status code" in unknown.stdout


def test_wifi_config_tries_before_keeping(bin_path, service):
    scan = run(bin_path, "wifi", "scan", "--api", service)
    assert "ssid=HomeNet" in scan.stdout
    bad = run(bin_path, "wifi", "config", "--ssid", "HomeNet", "--password", "wrongpass", "--api", service)
    assert bad.returncode == 1 and "wrong password" in bad.stderr
    status = run(bin_path, "wifi", "status", "--api", service)
    # The failed attempt left the board off-network with the set-up access point still open.
    assert "ap: open" in status.stdout and "state: disconnected" in status.stdout, status.stdout
    good = run(bin_path, "wifi", "config", "--ssid", "HomeNet", "--password", "homenet-pass", "--api", service)
    assert good.returncode == 0, good.stderr
    status = run(bin_path, "wifi", "status", "--api", service)
    assert "ssid: HomeNet" in status.stdout and "state: connected" in status.stdout
    # The password is never shown.
    assert "homenet-pass" not in status.stdout + good.stdout


def test_wifi_ap_on_off(bin_path, service):
    off = run(bin_path, "wifi", "ap", "off", "--api", service)
    assert off.returncode == 0 and "ap: closed" in off.stdout
    on = run(bin_path, "wifi", "ap", "on", "--api", service)
    assert on.returncode == 0 and "ap: open" in on.stdout
