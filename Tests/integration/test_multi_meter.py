"""Issue 17 end to end: three KPM33Bs (pymodbus slave ids 1, 2, 3 on one pty) polled by `meterext run` as the board
runs it, one going silent mid-test; pymodbus's TCP client and `mbpoll -m tcp` as other masters reading through the
board's Modbus TCP server while the poller runs."""
import json
import struct
import subprocess
import time
import urllib.request

import pytest
from pymodbus.client import ModbusTcpClient

from conftest import (HERE, KNOWN_FLOATS, KNOWN_WORDS, PYTHON, free_port, peer_spec, pty_pair,
                      service_cmd)

ADDRESSES = [1, 2, 3]


def api(port, **body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def meter_floats(address):
    """Each meter its own values: voltages shifted by the address, everything else as the known set."""
    floats = dict(KNOWN_FLOATS)
    for reg in (0x0030, 0x0032, 0x0034):
        floats[reg] = KNOWN_FLOATS[reg] + address
    return floats


def serial_of(address):
    return f"33B00001267{address:02d}"


@pytest.fixture
def bus(procs, tmp_path, bin_path):
    a, b = pty_pair(procs, tmp_path, "bus")
    spec_path = tmp_path / "meters.json"

    def write_spec(silent=()):
        meters = []
        for address in ADDRESSES:
            s = peer_spec(address=address, floats=meter_floats(address))
            s["serial"] = serial_of(address)
            meters.append(s)
        tmp = spec_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meters": meters, "silent": list(silent)}))
        tmp.rename(spec_path)

    write_spec()
    procs.start([PYTHON, str(HERE / "multi_meter_peer.py"), "--port", b, "--spec", str(spec_path)], ready="READY")
    port, tcp = free_port(), free_port()
    state = tmp_path / "state"
    procs.start(service_cmd(tmp_path, [bin_path, "run", "--serial", a, "--parity", "none", "--address", "1,2,3",
                                       "--listen", f"127.0.0.1:{port}", "--state-dir", str(state), "--wifi", "sim",
                                       "--poll-interval", "0.5", "--modbus-tcp", f"127.0.0.1:{tcp}",
                                       "--modbus-tcp-allow", "127.0.0.1"], state))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            r = api(port, cmd="meter_reading")
            if [m["status"] for m in r["meter"]] == ["online"] * 3 and all(m["data"] for m in r["meter"]):
                break
        except OSError:
            pass
        time.sleep(0.3)
    else:
        pytest.fail(f"three meters never online: {procs.log_of(-1)}")
    yield port, tcp, write_spec
    service = procs.procs[-1]
    assert service.poll() is None, f"the service died: {procs.log_of(-1)}"


def voltage_l1(meter):
    entry = next(d for d in meter["data"] if d["OBIS"] == "1-0:32.7.0.255")
    return int(entry["entry"][0]["val"]) * 10 ** int(entry["scale"])


def registers_of(value):
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def test_three_meters_one_bus_then_one_falls_silent(bus):
    port, tcp, write_spec = bus
    r = api(port, cmd="meter_reading")
    assert [m["meterid"] for m in r["meter"]] == [serial_of(a) for a in ADDRESSES], "address order, own ids"
    for address, meter in zip(ADDRESSES, r["meter"]):
        assert voltage_l1(meter) == pytest.approx(KNOWN_FLOATS[0x0030] + address, abs=0.1)
    # "meter" by address (number or string) and by meter id; the default is the first meter.
    assert api(port, cmd="system_status")["meterid"] == serial_of(1)
    assert api(port, cmd="system_status", meter=2)["meterid"] == serial_of(2)
    assert api(port, cmd="system_status", meter="3")["line"].endswith("address 3")
    assert api(port, cmd="system_status", meter=serial_of(3))["meterid"] == serial_of(3)
    deadline = time.time() + 10  # the status engines run once a second
    while api(port, cmd="meter_status", meter=2)["status"] == "starting":
        assert time.time() < deadline
        time.sleep(0.3)
    assert api(port, cmd="meter_status", meter=2)["status"] in ("ok", "unknown")
    assert api(port, cmd="relay_status", meter=3)["state"] == "on"
    for bad in (9, "33B0000000000", "x"):
        for cmd in ("system_status", "meter_status", "relay_status"):
            reply = api(port, cmd=cmd, meter=bad)
            assert reply["result"] == "ERROR" and reply["error"] == "invalid_param", (cmd, bad, reply)

    # Meter 2 loses power: it goes offline, the others stay online with fresh values.
    write_spec(silent=[2])
    deadline = time.time() + 20
    while time.time() < deadline:
        r = api(port, cmd="meter_reading")
        if r["meter"][1]["status"] == "offline":
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"meter 2 never went offline: {r['meter'][1]}")
    assert r["meter"][1]["data"] == [] and r["meter"][1]["meterid"] == serial_of(2)
    # Each meter's link counters are its own: the timeouts are meter 2's.
    assert int(api(port, cmd="system_status", meter=2)["link_errors"]["timeouts"]) > 0
    assert int(api(port, cmd="system_status", meter=1)["link_errors"]["timeouts"]) == 0
    # For several seconds of backing off, meters 1 and 3 keep being read at least every two poll intervals.
    ages = []
    for _ in range(10):
        r = api(port, cmd="meter_reading")
        now = int(api(port, cmd="system_status")["sys-ts"])
        for i in (0, 2):
            assert r["meter"][i]["status"] == "online", r["meter"][i]
            ts = int(r["meter"][i]["data"][0]["entry"][0]["ts"])
            ages.append(now - ts)
        time.sleep(0.5)
    assert max(ages) <= 2, ages
    # The silent meter over Modbus TCP: 0x0B, never its old values.
    with ModbusTcpClient("127.0.0.1", port=tcp, timeout=5) as c:
        rr = c.read_holding_registers(0x0030, count=2, slave=2)
        assert rr.isError() and rr.exception_code == 0x0B
        rr = c.read_holding_registers(0x0030, count=2, slave=1)
        assert not rr.isError() and rr.registers == registers_of(KNOWN_FLOATS[0x0030] + 1)
    # It comes back.
    write_spec()
    deadline = time.time() + 30
    while time.time() < deadline:
        if api(port, cmd="meter_reading")["meter"][1]["status"] == "online":
            break
        time.sleep(0.3)
    else:
        pytest.fail("meter 2 never came back")


def test_other_masters_over_modbus_tcp(bus):
    port, tcp, _ = bus
    with ModbusTcpClient("127.0.0.1", port=tcp, timeout=5) as c:
        # Measurement and energy blocks from the snapshot, exactly the meter's register words.
        for address in ADDRESSES:
            rr = c.read_holding_registers(0x0030, count=52, slave=address)
            assert not rr.isError(), rr
            assert rr.registers[0:2] == registers_of(KNOWN_FLOATS[0x0030] + address)
            assert rr.registers[2 * 9:2 * 9 + 2] == registers_of(KNOWN_FLOATS[0x0042])
        rr = c.read_holding_registers(0x0068, count=52, slave=3)
        assert rr.registers[0:2] == registers_of(KNOWN_FLOATS[0x0068])
        assert rr.registers[50:52] == registers_of(KNOWN_FLOATS[0x009A])
        # Forwarded to the bus: parameters (serial number), history, demand, the relay coil.
        rr = c.read_holding_registers(0x0012, count=7, slave=2)
        assert bytes(b for w in rr.registers for b in w.to_bytes(2, "big"))[:13] == serial_of(2).encode()
        rr = c.read_holding_registers(0x001E, count=1, slave=1)
        assert rr.registers == [KNOWN_WORDS[0x001E]]
        rr = c.read_holding_registers(0x0200, count=2, slave=3)
        assert rr.registers == registers_of(KNOWN_FLOATS[0x0200])
        rr = c.read_coils(1, count=1, slave=1)
        assert rr.bits[0] is True
        # The meter's own exception comes through (unmapped address).
        rr = c.read_holding_registers(0x0003, count=2, slave=1)
        assert rr.isError() and rr.exception_code == 0x02
        # No such meter on the bus: gateway path unavailable.
        rr = c.read_holding_registers(0x0030, count=2, slave=7)
        assert rr.isError() and rr.exception_code == 0x0A
        # 127.0.0.1 is on the allow-list: it may switch meter 3's relay, and the poller sees it.
        assert not c.write_coil(1, False, slave=3).isError()
    deadline = time.time() + 10
    while api(port, cmd="relay_status", meter=3)["state"] != "off":
        assert time.time() < deadline, "relay write through Modbus TCP not seen by the poller"
        time.sleep(0.3)
    assert api(port, cmd="relay_status", meter=1)["state"] == "on"
    # libmodbus's mbpoll as a third master (1-based register numbers: 49 = 0x0030).
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(tcp), "-a", "1", "-r", "49", "-c", "2", "-t", "4:float",
                          "-B", "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert f"{KNOWN_FLOATS[0x0030] + 1:g}" in out.stdout, out.stdout
    out = subprocess.run(["mbpoll", "-m", "tcp", "-p", str(tcp), "-a", "2", "-r", "19", "-c", "2", "-t", "4:hex",
                          "-1", "127.0.0.1"], capture_output=True, text=True, timeout=20)
    # Forwarded: the serial number's first words ("33B0…"), 1-based register 19 = 0x0012.
    assert out.returncode == 0 and "[19]: \t0x3333" in out.stdout and "[20]: \t0x4230" in out.stdout, out.stdout
