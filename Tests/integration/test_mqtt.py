"""Fleet uplink end to end (issue 16): `meterext run --simulate` against a real Mosquitto started by the test on a free
loopback port, the service run as the board runs it (unprivileged, read-only root: `start_service`).

- store-and-forward: broker stopped for 30 s and started again, the gateway SIGKILLed and restarted while the broker
  is down: afterwards every interval the store holds arrives, in order, with its original `ts`, and a repeat only
  with the same `seq` and content;
- Home Assistant discovery: retained configs with the keys HA requires, re-announced on `homeassistant/status online`;
- TLS with a CA made in the test;
- `/metrics` parsed by Prometheus' own text parser (prometheus_client).
"""
import json
import os
import signal
import sys
import time
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import service_cmd, start_service  # noqa: E402
from mqtt_broker import Broker, Subscriber, api, make_client_cert, make_tls, publish, wait_for  # noqa: E402

PREFIX = "meterext"
SIM_METER = "33B0000126001"  # the built-in simulator's serial number

# Keys HA's MQTT discovery needs for a sensor in a device that the Energy dashboard takes (sensor platform schema:
# state_topic is required; unique_id and device make it a device entity; availability for offline boards).
HA_SENSOR_KEYS = {"name", "state_topic", "unique_id", "device", "availability", "value_template", "state_class"}
HA_ENERGY = {"device_class": "energy", "state_class": "total_increasing", "unit_of_measurement": "kWh"}


def mqtt_status(port):
    return api(port, {"cmd": "system_status"}).get("mqtt", {})


def history_ts(port, start, end):
    """Interval ends the board's store holds (meter_history, issue 15), for the energy import register."""
    reply = api(port, {"cmd": "meter_history", "from": str(start), "to": str(end), "resolution": "interval",
                       "obis": ["1-0:1.8.0.255"]}, timeout=10)
    entries = reply["meter"][0]["data"][0]["entry"] if reply.get("meter") and reply["meter"][0]["data"] else []
    return sorted(int(e["ts"]) for e in entries)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def test_store_and_forward_survives_broker_outage_and_sigkill(procs, bin_path, tmp_path, broker):
    sub = Subscriber(broker, f"{PREFIX}/#", tmp_path / "sub.txt", "test-sub").start()
    state = tmp_path / "st"
    args = ["--mqtt", broker.url(), "--mqtt-client-id", "board-1", "--profile-interval", "1",
            "--mqtt-live-interval", "1"]
    port = start_service(procs, bin_path, tmp_path, *args, state=state)
    t0 = int(time.time())
    wait_for(lambda: len(sub.intervals()) >= 3, 30, "three interval messages")
    assert mqtt_status(port)["state"] == "connected"
    assert "password" not in json.dumps(mqtt_status(port))

    # Broker away for 30 s; meanwhile the gateway is SIGKILLed and started again (a power cut).
    sub.stop()
    broker.stop()
    outage = time.time()
    wait_for(lambda: mqtt_status(port)["state"] in ("disconnected", "unreachable"), 15, "the uplink to notice")
    time.sleep(8)
    gateway = procs.procs[-1]
    os.killpg(gateway.pid, signal.SIGKILL)
    gateway.wait(5)
    port = start_service(procs, bin_path, tmp_path, *args, state=state)
    assert api(port, {"cmd": "meter_reading"})["result"] == "OK", "/api answers while the broker is away"
    time.sleep(max(0, 30 - (time.time() - outage)))
    backlog = int(mqtt_status(port)["backlog"])
    assert backlog >= 10, f"intervals recorded while the broker was away wait in the store (backlog {backlog})"
    broker.start()
    sub.start()
    wait_for(lambda: int(mqtt_status(port)["backlog"]) <= 2 and mqtt_status(port)["state"] == "connected", 60,
             "the backlog to drain")
    t1 = int(time.time()) - 3
    time.sleep(3)
    sub.stop()

    got = sub.intervals()
    # Order and repeats: first occurrences in strictly increasing seq; a repeat is the same seq with the same content.
    first = {}
    order = []
    for m in got:
        if m["seq"] in first:
            assert first[m["seq"]] == m, f"seq {m['seq']} repeated with different content"
        else:
            first[m["seq"]] = m
            order.append(m["seq"])
    assert order == sorted(order), "intervals out of order"
    ts_by_seq = {s: first[s]["ts"] for s in order}
    assert [ts_by_seq[s] for s in order] == sorted(ts_by_seq[s] for s in order), "ts not increasing with seq"
    # Nothing lost: every interval the store holds in [t0, t1] arrived, with its original ts.
    stored = [ts for ts in history_ts(port, t0, t1) if t0 + 2 <= ts <= t1]
    received = set(ts_by_seq.values())
    missing = [ts for ts in stored if ts not in received]
    assert stored and not missing, f"{len(missing)} of {len(stored)} stored intervals never arrived: {missing[:10]}"
    for m in first.values():
        assert m["meter"] == SIM_METER and m["ts"] - m["start"] == 1 and "1-0:1.8.0.255" in m["values"]


def test_discovery_has_ha_keys_and_is_reannounced(procs, bin_path, tmp_path, broker):
    sub = Subscriber(broker, "homeassistant/#", tmp_path / "ha.txt", "test-ha").start()
    avail = Subscriber(broker, f"{PREFIX}/#", tmp_path / "all.txt", "test-all").start()
    port = start_service(procs, bin_path, tmp_path, "--mqtt", broker.url(), "--mqtt-client-id", "board-ha",
                         "--mqtt-live-interval", "1")
    wait_for(lambda: len([m for m in sub.messages() if "/sensor/" in m[1]]) >= 13, 30, "discovery configs")
    configs = {t: json.loads(p) for _, t, p in sub.messages() if t.endswith("/config") and p}
    devices = set()
    energy = 0
    for topic, c in configs.items():
        assert topic.startswith("homeassistant/sensor/meterext_"), topic
        assert HA_SENSOR_KEYS <= set(c), f"{topic} lacks {HA_SENSOR_KEYS - set(c)}"
        assert c["state_topic"] == f"{PREFIX}/{SIM_METER}/reading"
        devices.add(tuple(c["device"]["identifiers"]))
        topics = [a["topic"] for a in c["availability"]]
        assert f"{PREFIX}/board-ha/availability" in topics and f"{PREFIX}/{SIM_METER}/availability" in topics
        if c["device_class"] == "energy":
            energy += 1
            assert {k: c[k] for k in HA_ENERGY} == HA_ENERGY
        else:
            assert c["state_class"] == "measurement", topic
    assert energy == 2 and len(devices) == 1, "import and export energy, one device per meter"
    # No relay switch without --mqtt-commands.
    assert not any("/switch/" in t for t in configs)
    # Availability retained online, and a reading whose values the templates can read.
    wait_for(lambda: any(t == f"{PREFIX}/{SIM_METER}/reading" for _, t, _ in avail.messages()), 10, "a live reading")
    reading = next(json.loads(p) for _, t, p in avail.messages() if t == f"{PREFIX}/{SIM_METER}/reading")
    for c in configs.values():
        key = c["value_template"].split("'")[1]
        assert key in reading["values"], f"template {c['value_template']} finds nothing in the reading"
    assert (False, f"{PREFIX}/board-ha/availability", "online") in avail.messages()

    # HA restarts: announced again.
    before = len(sub.messages())
    publish(broker, "homeassistant/status", "online")
    wait_for(lambda: len(sub.messages()) >= before + 13, 10, "re-announced discovery")

    # A clean stop leaves the retained availability offline.
    procs.stop_all()
    wait_for(lambda: (False, f"{PREFIX}/board-ha/availability", "offline") in avail.messages(), 10, "offline")
    sub.stop()
    avail.stop()


def test_tls_with_a_ca_made_here(procs, bin_path, tmp_path):
    tls = make_tls(tmp_path / "pki")
    b = Broker(tmp_path / "tls-broker", tls=tls).start()
    try:
        sub = Subscriber(b, f"{PREFIX}/#", tmp_path / "tls.txt", "test-tls").start()
        port = start_service(procs, bin_path, tmp_path, "--mqtt", b.url(), "--mqtt-ca", str(tls["ca"]),
                             "--mqtt-client-id", "board-tls", "--mqtt-live-interval", "1")
        wait_for(lambda: mqtt_status(port).get("state") == "connected", 20, "a TLS connection")
        assert mqtt_status(port)["broker"].startswith("mqtts://127.0.0.1:")
        wait_for(lambda: any(t.endswith("/reading") for _, t, _ in sub.messages()), 15, "a reading over TLS")
        sub.stop()
    finally:
        b.stop()


def test_metrics_parse_with_prometheus_parser(procs, bin_path, tmp_path, broker):
    from prometheus_client.parser import text_string_to_metric_families
    port = start_service(procs, bin_path, tmp_path, "--mqtt", broker.url(), "--mqtt-client-id", "board-m")
    wait_for(lambda: mqtt_status(port).get("state") == "connected", 20, "connected")
    wait_for(lambda: api(port, {"cmd": "meter_reading"})["meter"][0]["data"], 20, "a reading")
    urllib.request.urlopen(f"http://127.0.0.1:{port}/nope").close() if False else None
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    except urllib.error.HTTPError as e:
        assert e.code == 404
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert all(f.documentation for f in families.values()), [n for n, f in families.items() if not f.documentation]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("meterext_meter_up", meter="1") == 1
    assert 200 < value("meterext_meter_value", meter="1", quantity="phase_a_voltage", unit="V") < 260
    assert families["meterext_energy_kwh"].type == "counter"
    assert value("meterext_energy_kwh_total", meter="1", quantity="forward_import_active_energy") > 0
    assert value("meterext_link_transactions_total", meter="1") > 0
    assert value("meterext_poll_cycle_seconds", meter="1") > 0
    assert value("meterext_mqtt_connected") == 1
    assert value("meterext_mqtt_in_flight") >= 0 and "meterext_mqtt_backlog_intervals" in families
    assert value("meterext_http_requests_total", status="200") >= 1
    assert value("meterext_http_requests_total", status="404") >= 1


def test_relay_switch_only_with_mqtt_commands(procs, bin_path, tmp_path, broker):
    sub = Subscriber(broker, "homeassistant/switch/#", tmp_path / "sw.txt", "test-sw").start()
    port = start_service(procs, bin_path, tmp_path, "--mqtt", broker.url(), "--mqtt-client-id", "board-relay",
                         "--mqtt-commands", "--mqtt-live-interval", "1")
    wait_for(lambda: any(p for _, t, p in sub.messages() if "/switch/" in t), 20, "the relay switch config")
    config = next(json.loads(p) for _, t, p in sub.messages() if "/switch/" in t and p)
    assert config["command_topic"] == f"{PREFIX}/{SIM_METER}/relay/set"
    wait_for(lambda: api(port, {"cmd": "relay_status"}).get("state") == "on", 20, "the relay read")
    publish(broker, f"{PREFIX}/{SIM_METER}/relay/set", "OFF")
    wait_for(lambda: api(port, {"cmd": "relay_status"}).get("state") == "off", 20, "the relay opened through MQTT")
    publish(broker, f"{PREFIX}/{SIM_METER}/relay/set", "ON")
    wait_for(lambda: api(port, {"cmd": "relay_status"}).get("state") == "on", 20, "the relay closed through MQTT")
    sub.stop()


def test_no_relay_commands_without_the_flag(procs, bin_path, tmp_path, broker):
    port = start_service(procs, bin_path, tmp_path, "--mqtt", broker.url(), "--mqtt-client-id", "board-norelay")
    wait_for(lambda: mqtt_status(port).get("state") == "connected", 20, "connected")
    wait_for(lambda: api(port, {"cmd": "relay_status"}).get("state") == "on", 20, "the relay read")
    publish(broker, f"{PREFIX}/{SIM_METER}/relay/set", "OFF")
    time.sleep(3)
    assert api(port, {"cmd": "relay_status"})["state"] == "on"


def test_client_certificate_and_config_file_keys(procs, bin_path, tmp_path):
    """mqtts with a client certificate the broker requires, configured through meterext.json's mqtt keys."""
    tls = make_tls(tmp_path / "pki")
    cert, key = make_client_cert(tls, tmp_path / "pki")
    b = Broker(tmp_path / "cert-broker", tls=tls, require_certificate=True).start()
    try:
        config = tmp_path / "meterext.json"
        config.write_text(json.dumps({"mqtt": b.url(), "mqtt_prefix": "site-9/meters", "mqtt_ca": str(tls["ca"]),
                                      "mqtt_cert": str(cert), "mqtt_key": str(key), "mqtt_client_id": "board-cert",
                                      "mqtt_live_interval": 1}))
        os.chmod(config, 0o644)
        port = start_service(procs, bin_path, tmp_path, "--config", str(config))
        wait_for(lambda: mqtt_status(port).get("state") == "connected", 20, "a connection with a client certificate")
        # The test's own subscriber needs a certificate too.
        sub_cert, sub_key = make_client_cert(tls, tmp_path / "pki", "test-sub")
        sub = Subscriber(b, "site-9/meters/#", tmp_path / "cert.txt", "test-cert",
                         extra=["--cert", str(sub_cert), "--key", str(sub_key)]).start()
        wait_for(lambda: any(t == f"site-9/meters/{SIM_METER}/reading" for _, t, _ in sub.messages()), 15,
                 "a reading under the configured prefix")
        sub.stop()
    finally:
        b.stop()


def test_several_meters_on_one_bus_are_several_devices(procs, bin_path, tmp_path, broker):
    """Contract C (issue 17): every meter on the bus gets its own topics, HA device and status."""
    sub = Subscriber(broker, "#", tmp_path / "multi.txt", "test-multi").start()
    start_service(procs, bin_path, tmp_path, "--address", "1,2", "--mqtt", broker.url(), "--mqtt-client-id",
                  "board-multi", "--mqtt-live-interval", "1")
    meters = ["33B0000126001", "33B0000126002"]
    wait_for(lambda: all(any(t == f"{PREFIX}/{m}/reading" for _, t, _ in sub.messages()) for m in meters), 30,
             "readings of both meters")
    devices = {tuple(json.loads(p)["device"]["identifiers"]) for _, t, p in sub.messages()
               if t.startswith("homeassistant/sensor/") and p}
    assert devices == {("meterext_33B0000126001",), ("meterext_33B0000126002",)}
    for m in meters:
        status = [json.loads(p) for _, t, p in sub.messages() if t == f"{PREFIX}/{m}/status"]
        assert status and status[-1]["meter"] == m and status[-1]["link"] == "online"
        assert (True, f"{PREFIX}/{m}/availability", "online") in sub.messages() or \
            (False, f"{PREFIX}/{m}/availability", "online") in sub.messages()
    sub.stop()
