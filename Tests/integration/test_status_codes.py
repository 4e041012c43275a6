"""issue 14 end to end: `meterext run` (unprivileged, as the board runs it) polls a pymodbus KPM33B over a socat pty
pair, and `meter_status` judges current reverse (1013) the way field staff need it: a site exporting on every phase
gets no alert, a swapped phase (one phase importing while another exports as much) gets 1013 after 10 s, and a
phase the installer marked import-only (`import_only_phases` in meterext.json) gets it for any export."""
import json
import subprocess
import time
import urllib.request

import pytest

from conftest import KNOWN_FLOATS, free_port, service_cmd, start_peer, start_service


def post(port, cmd):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps({"cmd": cmd}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def floats_with_powers(a, b, c):
    floats = dict(KNOWN_FLOATS)
    floats[0x0042], floats[0x0044], floats[0x0046] = a, b, c
    floats[0x0036], floats[0x0038], floats[0x003A] = abs(a) / 230, abs(b) / 230, abs(c) / 230
    floats[0x0048] = a + b + c
    # A healthy supply otherwise: no voltage, imbalance or PF alert to get in the way.
    floats[0x0030] = floats[0x0032] = floats[0x0034] = 230.0
    floats[0x005A] = floats[0x005C] = floats[0x005E] = floats[0x0060] = 0.98
    return floats


def start(bin_path, procs, tmp_path, pty, powers, config=None, relay=1, ready=("ok",)):
    start_peer(procs, tmp_path, pty[1], floats=floats_with_powers(*powers), relay=relay)
    port = free_port()
    state = tmp_path / "state"
    extra = []
    if config is not None:
        path = tmp_path / "meterext.json"
        path.write_text(json.dumps(config))
        extra = ["--config", str(path)]
    procs.start(service_cmd(tmp_path, [bin_path, "run", "--serial", pty[0], "--parity", "none", "--listen",
                                       f"127.0.0.1:{port}", "--state-dir", str(state), "--wifi", "sim",
                                       "--poll-interval", "0.5", *extra], state))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if post(port, "meter_status")["status"] in ready:
                return port, time.monotonic()
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"meterext run never derived a status: {procs.log_of(-1)}")


def watch(port, seconds):
    """meter_status replies over `seconds`, one every 0.5 s."""
    replies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        replies.append(post(port, "meter_status"))
        time.sleep(0.5)
    return replies


def test_export_on_every_phase_is_no_alert(bin_path, procs, tmp_path, pty):
    port, _ = start(bin_path, procs, tmp_path, pty, (-1500.0, -1420.0, -1610.0))
    for reply in watch(port, 14):
        assert reply["status"] == "ok" and reply["ami_code"] == "1000" and reply["sub_code"] == "00", reply
        assert reply["alerts"] == [], reply
        assert reply["because"] == "relay closed: the meter supplies the load", reply


def test_swapped_phase_is_1013_after_10_s(bin_path, procs, tmp_path, pty):
    port, online = start(bin_path, procs, tmp_path, pty, (1200.0, -1150.0, 1050.0))
    early = post(port, "meter_status")
    assert not any(a["ami_code"] == "1013" for a in early["alerts"]), early
    raised = None
    deadline = online + 20
    while time.monotonic() < deadline and raised is None:
        raised = next((a for a in post(port, "meter_status")["alerts"] if a["ami_code"] == "1013"), None)
        time.sleep(0.25)
    assert raised is not None, procs.log_of(-1)
    assert raised["sub_code"] == "13" and raised["phases"] == "B", raised
    assert "disagree in sign" in raised["detail"], raised
    assert raised["cause"] == "Current Reverse (possible tamper/wiring issue)"


def test_import_only_phase_from_the_config_file(bin_path, procs, tmp_path, pty):
    # Phase A exports a little while B and C export a lot: not comparable, but A is wired for import only.
    port, _ = start(bin_path, procs, tmp_path, pty, (-300.0, -2500.0, -2400.0),
                    config={"import_only_phases": ["A"]})
    deadline = time.monotonic() + 20
    raised = None
    while time.monotonic() < deadline and raised is None:
        raised = next((a for a in post(port, "meter_status")["alerts"] if a["ami_code"] == "1013"), None)
        time.sleep(0.5)
    assert raised is not None and raised["phases"] == "A", raised
    assert "import only" in raised["detail"], raised


@pytest.mark.parametrize("typed", ["87.3", "87-03", "87.03", "1003"])
def test_status_code_lookup_as_field_staff_type_it(bin_path, typed):
    result = subprocess.run([bin_path, "status-code", typed], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sub-code 3" in result.stdout and "1003" in result.stdout and "Over Power" in result.stdout
    assert "sub-code 03" not in result.stdout  # as the guide writes it


def test_status_command_says_why(bin_path, procs, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    deadline = time.time() + 20
    out = ""
    while time.time() < deadline:
        result = subprocess.run([bin_path, "status", "--api", f"127.0.0.1:{port}"], capture_output=True, text=True,
                                timeout=30)
        out = result.stdout
        if result.returncode == 0 and "because:" in out:
            break
        time.sleep(0.5)
    assert "AMI 1000  (code 87.00)" in out, out
    assert "because: relay closed: the meter supplies the load" in out, out


@pytest.mark.parametrize("prepaid", [True, False])
def test_prepaid_setting_enables_1001(bin_path, procs, tmp_path, pty, prepaid):
    # Relay open, prepaid energy register 0x000E at 0 kWh.
    port, _ = start(bin_path, procs, tmp_path, pty, (0.0, 0.0, 0.0), config={"prepaid": prepaid}, relay=0,
                    ready=("ok", "unknown"))
    reply = post(port, "meter_status")
    if prepaid:
        assert reply["status"] == "ok" and reply["ami_code"] == "1001" and reply["sub_code"] == "1", reply
        assert "prepaid" in reply["because"], reply
    else:
        assert reply["status"] == "unknown" and "ami_code" not in reply, reply
        assert reply["cause"] == "Relay open, reason unknown", reply
        assert "display" in reply["action"], reply
