"""issue 14 end to end through the pymodbus KPM33B peer: `meterid` is the serial as stored (or its bytes in hex,
never empty), and a standard slave's one-coil answer (0x01, like the manual's worked example) does not make phases
B and C look open."""
import json
import time
import urllib.request

import pytest

from conftest import free_port, service_cmd, start_peer


def post(port, cmd):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps({"cmd": cmd}).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def start(bin_path, procs, tmp_path, pty, **spec):
    start_peer(procs, tmp_path, pty[1], **spec)
    port = free_port()
    state = tmp_path / "state"
    procs.start(service_cmd(tmp_path, [bin_path, "run", "--serial", pty[0], "--parity", "none", "--listen",
                                       f"127.0.0.1:{port}", "--state-dir", str(state), "--wifi", "sim",
                                       "--poll-interval", "0.5"], state))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if post(port, "meter_info").get("meterid"):
                return port
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"meterext run never read the meter: {procs.log_of(-1)}")


def test_serial_in_another_encoding_is_hex_never_empty(bin_path, procs, tmp_path, pty):
    from conftest import KNOWN_WORDS
    words = dict(KNOWN_WORDS)
    # 13 bytes 33 B0 08 76 54 32 10 00 00 00 00 00 01 (+ pad): a BCD-like serial, nothing printable but 0x33.
    for i, w in enumerate([0x33B0, 0x0876, 0x5432, 0x1000, 0x0000, 0x0000, 0x0100]):
        words[0x0012 + i] = w
    port = start(bin_path, procs, tmp_path, pty, words=words)
    assert post(port, "meter_info")["meterid"] == "33B00876543210000000000001"
    assert post(port, "meter_reading")["meter"][0]["meterid"] == "33B00876543210000000000001"


def test_one_coil_answer_reports_the_relay_but_no_phases(bin_path, procs, tmp_path, pty):
    port = start(bin_path, procs, tmp_path, pty, relay=1)
    reply = post(port, "relay_status")
    assert reply["result"] == "OK" and reply["state"] == "on", reply
    assert "phases" not in reply, reply
    assert reply["phases_note"] == "per-phase status is not reported by this meter", reply
