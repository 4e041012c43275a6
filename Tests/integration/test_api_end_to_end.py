"""issue 3 end to end: `meterext run` polls an independent KPM33B (pymodbus) over a socat pty pair, and
`POST /api` returns every OBIS value such that val × 10^scale equals the register value the peer was given."""
import json
import time
import urllib.request

import pytest

from conftest import KNOWN_FLOATS, KNOWN_SERIAL, start_meter_service


def post(port, body, content_type="application/x-www-form-urlencoded"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body.encode(), method="POST",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def f(addr):
    return KNOWN_FLOATS[addr]


def pos(v):
    return max(v, 0.0)


def neg(v):
    return max(-v, 0.0)


# The expected table, written from the compatibility reference and the register map (not from the code):
# (OBIS, scale, unit, physical value in the unit).
COMPAT = [
    ("1-0:32.7.0.255", -1, 35, f(0x30)), ("1-0:52.7.0.255", -1, 35, f(0x32)), ("1-0:72.7.0.255", -1, 35, f(0x34)),
    ("1-0:31.7.0.255", -2, 33, f(0x36)), ("1-0:51.7.0.255", -2, 33, f(0x38)), ("1-0:71.7.0.255", -2, 33, f(0x3A)),
    ("1-0:1.7.0.255", 0, 27, pos(f(0x48))), ("1-0:2.7.0.255", 0, 27, neg(f(0x48))),
    ("1-0:1.8.0.255", 0, 30, f(0x82) * 1000), ("1-0:2.8.0.255", 0, 30, f(0x84) * 1000),
    ("1-0:3.8.0.255", 0, 32, f(0x88) * 1000), ("1-0:4.8.0.255", 0, 32, f(0x8A) * 1000),
]
FURTHER = [
    ("1-0:21.7.0.255", 0, 27, pos(f(0x42))), ("1-0:41.7.0.255", 0, 27, pos(f(0x44))),
    ("1-0:61.7.0.255", 0, 27, pos(f(0x46))), ("1-0:22.7.0.255", 0, 27, neg(f(0x42))),
    ("1-0:42.7.0.255", 0, 27, neg(f(0x44))), ("1-0:62.7.0.255", 0, 27, neg(f(0x46))),
    ("1-0:3.7.0.255", 0, 29, pos(f(0x50))), ("1-0:4.7.0.255", 0, 29, neg(f(0x50))),
    ("1-0:23.7.0.255", 0, 29, pos(f(0x4A))), ("1-0:43.7.0.255", 0, 29, pos(f(0x4C))),
    ("1-0:63.7.0.255", 0, 29, pos(f(0x4E))), ("1-0:24.7.0.255", 0, 29, neg(f(0x4A))),
    ("1-0:44.7.0.255", 0, 29, neg(f(0x4C))), ("1-0:64.7.0.255", 0, 29, neg(f(0x4E))),
    ("1-0:9.7.0.255", 0, 28, f(0x58)), ("1-0:29.7.0.255", 0, 28, f(0x52)),
    ("1-0:49.7.0.255", 0, 28, f(0x54)), ("1-0:69.7.0.255", 0, 28, f(0x56)),
    ("1-0:13.7.0.255", -3, 255, f(0x60)), ("1-0:33.7.0.255", -3, 255, f(0x5A)),
    ("1-0:53.7.0.255", -3, 255, f(0x5C)), ("1-0:73.7.0.255", -3, 255, f(0x5E)),
    ("1-0:14.7.0.255", -2, 44, f(0x62)),
    ("1-0:21.8.0.255", 0, 30, f(0x68) * 1000), ("1-0:41.8.0.255", 0, 30, f(0x6A) * 1000),
    ("1-0:61.8.0.255", 0, 30, f(0x6C) * 1000), ("1-0:22.8.0.255", 0, 30, f(0x6E) * 1000),
    ("1-0:42.8.0.255", 0, 30, f(0x70) * 1000), ("1-0:62.8.0.255", 0, 30, f(0x72) * 1000),
    ("1-0:23.8.0.255", 0, 32, f(0x74) * 1000), ("1-0:43.8.0.255", 0, 32, f(0x76) * 1000),
    ("1-0:63.8.0.255", 0, 32, f(0x78) * 1000), ("1-0:24.8.0.255", 0, 32, f(0x7A) * 1000),
    ("1-0:44.8.0.255", 0, 32, f(0x7C) * 1000), ("1-0:64.8.0.255", 0, 32, f(0x7E) * 1000),
    ("1-0:15.8.0.255", 0, 30, f(0x80) * 1000),
    ("1-0:15.8.1.255", 0, 30, f(0x8C) * 1000), ("1-0:15.8.2.255", 0, 30, f(0x8E) * 1000),
    ("1-0:15.8.3.255", 0, 30, f(0x90) * 1000), ("1-0:15.8.4.255", 0, 30, f(0x92) * 1000),
    ("1-0:29.4.0.255", 0, 28, f(0x200)), ("1-0:49.4.0.255", 0, 28, f(0x202)), ("1-0:69.4.0.255", 0, 28, f(0x204)),
    ("0-0:96.3.10.255", 0, 255, 1),
]
# Billing periods: previous MM settlement days of the combined (T0), sharp (T1) and valley (T4) runs given to the peer.
HISTORY = {}
for mm in range(1, 13):
    HISTORY[f"1-0:15.8.0.{100 + mm}"] = (3000.0 - 100 * mm) * 1000
    HISTORY[f"1-0:15.8.1.{100 + mm}"] = (400.0 - 10 * mm) * 1000
    HISTORY[f"1-0:15.8.4.{100 + mm}"] = (430.0 - 12.5 * mm) * 1000


def physical(entry):
    return int(entry["entry"][0]["val"]) * 10 ** int(entry["scale"])


def tolerance(scale):
    # val is rounded to an integer at the entry's scale: half a step, plus float32 precision.
    return 0.5 * 10 ** scale + 1e-3


@pytest.fixture
def service(bin_path, procs, tmp_path, pty):
    return start_meter_service(procs, bin_path, tmp_path, pty, lambda port: post(port, '{"cmd":"meter_reading"}')[1]
                               ["meter"][0]["data"], "served a reading")


def test_every_obis_value_matches_the_registers_in_order(service):
    status, reply = post(service, '{"cmd": "meter_reading","id": 0}', "application/json")
    assert status == 200 and reply["result"] == "OK" and reply["id"] == 0
    meter = reply["meter"][0]
    assert meter["meterid"] == KNOWN_SERIAL
    data = meter["data"]
    for i, (obis, scale, unit, value) in enumerate(COMPAT):
        e = data[i]
        assert (e["OBIS"], e["scale"], e["unit"]) == (obis, str(scale), str(unit)), f"entry {i}"
        assert physical(e) == pytest.approx(value, abs=tolerance(scale)), obis
        assert all(isinstance(v, str) for v in (e["scale"], e["unit"], e["entry"][0]["ts"], e["entry"][0]["val"]))
        assert abs(int(e["entry"][0]["ts"]) - time.time()) < 30
    rest = data[12:]
    # The operating status sits right after the compatibility block when the engine knows it.
    if rest and rest[0]["OBIS"] == "0-0:96.5.0.255":
        assert rest[0]["entry"][0]["val"] == "1000"
        rest = rest[1:]
    by_code = {e["OBIS"]: e for e in rest}
    order = [e["OBIS"] for e in rest]
    for obis, scale, unit, value in FURTHER:
        assert obis in by_code, f"{obis} missing"
        e = by_code[obis]
        assert (e["scale"], e["unit"]) == (str(scale), str(unit)), obis
        assert physical(e) == pytest.approx(value, abs=tolerance(scale)), obis
    assert [o for o in order if o in dict((x[0], 1) for x in FURTHER)] == [x[0] for x in FURTHER]
    for obis, value in HISTORY.items():
        assert obis in by_code, f"{obis} missing"
        assert physical(by_code[obis]) == pytest.approx(value, abs=0.6), obis
        # Settlement day: 00:00 local time on the 1st of a month in the past.
        ts = int(by_code[obis]["entry"][0]["ts"])
        assert time.localtime(ts).tm_mday == 1 and time.localtime(ts).tm_hour == 0 and ts < time.time()


def test_home_assistant_style_client(service):
    # What the public Home Assistant integration does: JSON content type, numeric id, positions 0…11, kWh = /1000.
    status, reply = post(service, '{"cmd": "meter_reading","id": 0}', "application/json")
    data = reply["meter"][0]["data"]
    assert float(data[8]["entry"][0]["val"]) / 1000 == pytest.approx(KNOWN_FLOATS[0x82], abs=1e-3)
    assert float(data[0]["entry"][0]["val"]) / 10 == pytest.approx(KNOWN_FLOATS[0x30], abs=0.05)


def test_installer_fields_and_status(service):
    _, status = post(service, '{"cmd":"system_status","id":"123"}')
    assert status["id"] == "123" and status["meter_link"] == "online" and status["meterid"] == KNOWN_SERIAL
    assert int(status["link_errors"]["succeeded"]) > 0
    _, info = post(service, '{"cmd":"meter_info"}')
    assert info["result"] == "OK"
    # The status engine runs once a second: wait for it to see the online meter.
    deadline = time.time() + 10
    while True:
        _, st = post(service, '{"cmd":"meter_status"}')
        if st["status"] != "starting" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert st["status"] == "ok", st
    assert st["ami_code"] == "1000" and st["sub_code"] == "00" and "No action" in st["action"], st


def test_relay_set_reaches_the_meter(service):
    status, reply = post(service, '{"cmd":"relay_set","state":"off"}')
    assert status == 200 and reply["state"] == "off", reply
    deadline = time.time() + 10
    while time.time() < deadline:
        _, r = post(service, '{"cmd":"meter_reading"}')
        relay = [e for e in r["meter"][0]["data"] if e["OBIS"] == "0-0:96.3.10.255"]
        if relay and relay[0]["entry"][0]["val"] == "0":
            break
        time.sleep(0.3)
    else:
        pytest.fail("the relay entry never showed the open relay")
