"""Fleet uplink faults (issue 16): a wrong CA, refused credentials, a broker that accepts and never acks, a prefix with
wildcards. Each gets a clear log line and a status in `system_status`, never a crash, and `/api` keeps answering.
The service runs as the board runs it (`start_service`)."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from integration_conftest import run, start_service  # noqa: E402
from mqtt_broker import Broker, Subscriber, api, make_tls, wait_for  # noqa: E402


def mqtt_status(port):
    return api(port, {"cmd": "system_status"}).get("mqtt", {})


def api_answers(port, n=5):
    for _ in range(n):
        assert api(port, {"cmd": "meter_reading"}, timeout=2)["result"] == "OK"


def test_wrong_ca_is_a_tls_error_not_a_crash(procs, bin_path, tmp_path):
    good = make_tls(tmp_path / "pki", "good")
    other = make_tls(tmp_path / "pki", "other")
    b = Broker(tmp_path / "broker", tls=good).start()
    try:
        port = start_service(procs, bin_path, tmp_path, "--mqtt", b.url(), "--mqtt-ca", str(other["ca"]),
                             "--mqtt-client-id", "board-wrongca")
        status = wait_for(lambda: (s := mqtt_status(port)).get("state") == "tls_error" and s, 20, "tls_error")
        assert "TLS" in status["detail"], status
        api_answers(port)
        assert procs.procs[-1].poll() is None, "the service keeps running"
    finally:
        b.stop()


def test_refused_credentials_are_reported_and_the_password_never_shown(procs, bin_path, tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "fleet", "right-password"], check=True,
                   capture_output=True)
    os.chmod(pw, 0o600)
    b = Broker(tmp_path / "broker", password_file=pw).start()
    secret = "wrong-Pa55word"
    try:
        port = start_service(procs, bin_path, tmp_path, "--mqtt", f"mqtt://fleet:{secret}@127.0.0.1:{b.port}",
                             "--mqtt-client-id", "board-pw")
        status = wait_for(lambda: (s := mqtt_status(port)).get("state") == "refused_credentials" and s, 20,
                          "refused_credentials")
        reply = json.dumps(api(port, {"cmd": "system_status"}))
        assert secret not in reply
        assert status["broker"] == f"mqtt://fleet:***@127.0.0.1:{b.port}"
        api_answers(port)
        proc = procs.procs[-1]
        procs.stop_all()
        log = proc.stdout.read() + proc.stderr.read()
        assert "refused the credentials" in log, log[-2000:]
        assert secret not in log, "the password reached the log"
    finally:
        b.stop()


class SilentBroker:
    """Accepts CONNECT, answers CONNACK (MQTT 5 or 3.1.1), then reads and discards everything: never a PUBACK."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.publishes = 0
        self.connects = 0
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.client, args=(conn,), daemon=True).start()

    @staticmethod
    def read_packet(conn, buf):
        while True:
            if len(buf) >= 2:
                length, mult, i = 0, 1, 1
                while i < len(buf):
                    length += (buf[i] & 0x7F) * mult
                    mult *= 128
                    if not buf[i] & 0x80:
                        break
                    i += 1
                else:
                    i = None
                if i is not None and len(buf) >= i + 1 + length:
                    return buf[: i + 1 + length], buf[i + 1 + length:]
            data = conn.recv(65536)
            if not data:
                return None, buf
            buf += data

    def client(self, conn):
        buf = b""
        with conn:
            while True:
                packet, buf = self.read_packet(conn, buf)
                if packet is None:
                    return
                kind = packet[0] >> 4
                if kind == 1:  # CONNECT: protocol level sits after the "MQTT" name
                    self.connects += 1
                    level = packet[packet.index(b"MQTT") + 4]
                    conn.sendall(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                elif kind == 3:
                    self.publishes += 1
                elif kind == 12:  # PINGREQ: answered, so only the missing PUBACKs are wrong
                    conn.sendall(b"\xd0\x00")

    def close(self):
        self.stopped = True
        self.sock.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def service_pid(proc):
    """The meterext process itself (the test starts it through bwrap/setpriv)."""
    out = subprocess.run(["pgrep", "-s", str(proc.pid), "-x", "meterext"], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else proc.pid


def test_broker_that_never_acks_keeps_the_window_bounded(procs, bin_path, tmp_path):
    silent = SilentBroker()
    try:
        port = start_service(procs, bin_path, tmp_path, "--mqtt", f"mqtt://127.0.0.1:{silent.port}",
                             "--mqtt-client-id", "board-silent", "--profile-interval", "1", "--mqtt-live-interval", "1")
        pid = service_pid(procs.procs[-1])
        wait_for(lambda: mqtt_status(port).get("state") == "connected", 20, "connected to the silent broker")
        time.sleep(5)
        rss0 = rss_kib(pid)
        peak_in_flight = 0
        states = set()
        end = time.time() + 40
        while time.time() < end:
            s = mqtt_status(port)
            peak_in_flight = max(peak_in_flight, int(s["in_flight"]))
            states.add(s["state"])
            api_answers(port, 1)
            time.sleep(0.5)
        rss1 = rss_kib(pid)
        assert peak_in_flight <= 8, f"in flight grew to {peak_in_flight}"
        assert "no_acks" in states, f"never reported no_acks: {states}"
        assert int(mqtt_status(port)["backlog"]) >= 20, "intervals wait in the store, not in RAM"
        assert rss1 - rss0 < 4096, f"RSS grew {rss1 - rss0} KiB in 40 s against a broker that never acks"
        assert procs.procs[-1].poll() is None
    finally:
        silent.close()


@pytest.mark.parametrize("prefix", ["meters/+", "site/#", "", "/lead", "a//b"])
def test_prefix_with_wildcards_is_refused_at_start(bin_path, tmp_path, prefix):
    r = run(bin_path, "run", "--simulate", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "st"),
            "--wifi", "sim", "--mqtt", "mqtt://127.0.0.1:1", "--mqtt-prefix", prefix, timeout=20)
    assert r.returncode == 64 or r.returncode == 2, (r.returncode, r.stderr)
    assert "--mqtt-prefix" in r.stderr, r.stderr


def test_password_in_a_bad_url_is_never_echoed(bin_path, tmp_path):
    r = run(bin_path, "run", "--simulate", "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "st"),
            "--wifi", "sim", "--mqtt", "mqtt://user:VerySecret@host:notaport", timeout=20)
    assert r.returncode != 0
    assert "VerySecret" not in r.stderr + r.stdout
