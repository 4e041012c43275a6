"""issue 12 item 2 end to end: a KPM33B (the pymodbus peer) sends extreme and non-finite values in every register
group — float32 far outside any physical range (±3e38, ±1e20), NaN, ±inf, subnormals, and word registers at
0x0000/0xFFFF. The service keeps running (same PID), `meter_reading` leaves the implausible entries out (the first
twelve all or nothing, with a reason naming the quantity), `link_errors` counts them as `implausible`, and the log
says so once per quantity.

The service runs as the board's unit runs it (`service_cmd`: user nobody, only CAP_NET_BIND_SERVICE, read-only root)."""
import json
import os
import struct
import time
import urllib.request

import pytest

from integration_conftest import HERE, KNOWN_SERIAL, KNOWN_WORDS, PYTHON, free_port, peer_spec, service_cmd


def bits(value):
    return "0x%08X" % struct.unpack(">I", struct.pack(">f", value))[0]


NAN, QNAN_NEG, INF, NEG_INF, MAX = "0x7FC00000", "0xFFC00001", "0x7F800000", "0xFF800000", "0x7F7FFFFF"
SIGNALLING_NAN, SUBNORMAL = "0x7F800001", "0x00000001"

# Slow groups (parameters, history) are read at start and then hourly: their extremes are served from the start.
START_RAW = {
    0x009C + 2: bits(3.0e38),        # combined active energy, previous 1 → 1-0:15.8.0.101
    0x009C + 4: NAN,                 # previous 2 → 1-0:15.8.0.102
    0x00D0 + 2: NEG_INF,             # sharp (T1), previous 1 → 1-0:15.8.1.101
    0x016C + 24: bits(-1.0e20),      # valley (T4), previous 12 → 1-0:15.8.4.112
    0x000E: NAN,                     # prepaid energy
    0x0020: bits(1.0e20),            # overdraft
}
START_WORDS = dict(KNOWN_WORDS)
START_WORDS.update({0x0001: 0xFFFF, 0x0002: 0xFFFF, 0x001A: 0xFFFF, 0x001B: 0xFFFF, 0x001C: 0x0000,
                    0x001D: 0xFFFF, 0x001E: 0x0000, 0x0023: 0xFFFF, 0x0024: 0xFFFF, 0x0025: 0xFFFF,
                    0x0026: 0xFFFF})

# (name, raw patterns for the peer, OBIS codes that must be gone, compatibility quantity the reason names or None)
CASES = [
    ("phase voltage 3e38", {0x0030: bits(3.0e38)}, [], "voltage L1"),
    ("phase current -3e38", {0x0036: bits(-3.0e38)}, [], "current L1"),
    ("total active power 1e20", {0x0048: bits(1.0e20)}, [], "active power import A+"),
    ("frequency +inf", {0x0062: INF}, ["1-0:14.7.0.255"], None),
    ("power factor NaN", {0x005A: NAN, 0x0060: SIGNALLING_NAN}, ["1-0:33.7.0.255", "1-0:13.7.0.255"], None),
    ("phase power -1e20", {0x0042: bits(-1.0e20)}, ["1-0:21.7.0.255", "1-0:22.7.0.255"], None),
    ("reactive and apparent power max float", {0x004A: MAX, 0x0058: MAX}, ["1-0:23.7.0.255", "1-0:9.7.0.255"], None),
    ("line voltage NaN with payload", {0x003C: QNAN_NEG}, [], None),
    ("phase energy 3e38", {0x0068: bits(3.0e38)}, ["1-0:21.8.0.255"], None),
    ("import energy -inf", {0x0082: NEG_INF}, [], "active energy import A+"),
    ("tariff energy 1e20", {0x008C: bits(1.0e20)}, ["1-0:15.8.1.255"], None),
    ("demand NaN", {0x0200: QNAN_NEG}, ["1-0:29.4.0.255"], None),
    ("every basic float at the largest finite value", {a: MAX for a in range(0x0030, 0x0064, 2)}, [], "voltage L1"),
    ("every basic float -inf", {a: NEG_INF for a in range(0x0030, 0x0064, 2)}, [], "voltage L1"),
]


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def write_spec(path, raw, words=START_WORDS):
    spec = peer_spec(words=words)
    spec["raw"] = {hex(a): v for a, v in {**START_RAW, **raw}.items()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)  # the watching peer never sees half a file


@pytest.fixture
def service(bin_path, procs, tmp_path, pty):
    spec = tmp_path / "peer.json"
    write_spec(spec, {})
    procs.start([PYTHON, str(HERE / "kpm33b_peer.py"), "--port", pty[1], "--spec", str(spec), "--watch"],
                ready="READY")
    port = free_port()
    log = open(tmp_path / "service.log", "w")
    state = tmp_path / "state"
    proc = procs.start(service_cmd(tmp_path, [bin_path, "run", "--serial", pty[0], "--parity", "none", "--listen",
                                              f"127.0.0.1:{port}", "--state-dir", str(state), "--wifi", "sim",
                                              "--poll-interval", "0.3"], state),
                       stdout=log, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if post(port, '{"cmd":"meter_reading"}')["meter"][0]["data"]:
                return port, proc, spec, tmp_path / "service.log"
        except OSError:
            pass
        assert proc.poll() is None, "the service died while starting: " + (tmp_path / "service.log").read_text()
        time.sleep(0.2)
    pytest.fail("meterext run never served a reading")


def service_pid(proc):
    """The meterext process under the sandbox wrapper (bwrap's child, which setpriv turned into meterext)."""
    pids = [proc.pid]
    while pids:
        pid = pids.pop(0)
        try:
            if open(f"/proc/{pid}/comm").read().strip() == "meterext":
                return pid
            pids += [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
        except OSError:
            continue
    return None


def codes(reply):
    return {e["OBIS"] for e in reply["meter"][0]["data"]}


def wait_for(port, proc, condition, what, timeout=12):
    """Polls meter_reading until `condition(reply)`; the service must stay alive throughout."""
    deadline = time.time() + timeout
    reply = None
    while time.time() < deadline:
        assert proc.poll() is None, f"the service died ({what})"
        reply = post(port, '{"cmd":"meter_reading"}')
        if condition(reply):
            return reply
        time.sleep(0.2)
    pytest.fail(f"{what}: never seen; last reply {json.dumps(reply)[:600]}")


def implausible(port):
    return int(post(port, '{"cmd":"system_status"}')["link_errors"]["implausible"])


def test_extreme_values_in_every_register_group(service):
    port, proc, spec, log = service
    pid = service_pid(proc)
    assert pid is not None

    # Start-up: history, prepaid/overdraft and word registers already extreme; the rest is served.
    reply = post(port, '{"cmd":"meter_reading"}')
    meter = reply["meter"][0]
    assert meter["meterid"] == KNOWN_SERIAL and meter["status"] == "online"
    served = codes(reply)
    for gone in ["1-0:15.8.0.101", "1-0:15.8.0.102", "1-0:15.8.1.101", "1-0:15.8.4.112"]:
        assert gone not in served, gone
    for kept in ["1-0:15.8.0.103", "1-0:15.8.1.102", "1-0:15.8.4.111", "1-0:32.7.0.255", "1-0:1.8.0.255"]:
        assert kept in served, kept
    info = post(port, '{"cmd":"meter_info"}')
    assert info["result"] == "OK" and info["load_threshold_kw"] == "65535", info
    assert post(port, '{"cmd":"meter_status"}')["result"] == "OK"
    counted = implausible(port)
    assert counted >= len(START_RAW), counted

    for name, raw, gone, compat in CASES:
        write_spec(spec, raw)
        deadline = time.time() + 12
        while implausible(port) == counted:  # the peer serves the new values, the service counts them
            assert proc.poll() is None and time.time() < deadline, f"{name}: never counted"
            time.sleep(0.2)
        if compat:
            reply = wait_for(port, proc, lambda r: not r["meter"][0]["data"], name)
            meter = reply["meter"][0]
            assert meter["status"] == "online", (name, meter)
            assert compat in meter["reason"] and "plausible range" in meter["reason"], (name, meter["reason"])
        else:
            reply = wait_for(port, proc, lambda r: r["meter"][0]["data"] and not set(gone) & codes(r), name)
            assert len(reply["meter"][0]["data"]) > 12, name
        for e in reply["meter"][0]["data"]:
            int(e["entry"][0]["val"])  # every served value is an integer string
        # Back to plausible values: everything is served again.
        write_spec(spec, {})
        wait_for(port, proc, lambda r: r["meter"][0]["data"] and "1-0:14.7.0.255" in codes(r)
                 and "1-0:21.8.0.255" in codes(r) and "1-0:29.4.0.255" in codes(r), f"recovery after {name}")
        counted = implausible(port)

    # A subnormal current is tiny, not implausible: served as 0.
    write_spec(spec, {0x0038: SUBNORMAL})
    reply = wait_for(port, proc, lambda r: r["meter"][0]["data"]
                     and r["meter"][0]["data"][4]["entry"][0]["val"] == "0", "subnormal current")

    assert proc.poll() is None and service_pid(proc) == pid
    assert post(port, '{"cmd":"system_status"}')["meter_link"] == "online"

    # Logged once per quantity: phase A voltage went implausible three times within a minute.
    text = log.read_text()
    lines = [l for l in text.splitlines() if "meter value:" in l]
    assert sum("(0x0030)" in l for l in lines) == 1, lines
    for address in ["0x0036", "0x0048", "0x0062", "0x005A", "0x0082", "0x0200", "0x009E", "0x000E"]:
        assert any(f"({address})" in l for l in lines), (address, lines)
    assert "Fatal error" not in text
