"""Hostile HTTP clients against the real service, run as the board runs it (issue 12, items 1, 7, 8).

Figures (peak memory under the flood, the other client's worst latency, connections held by the slowloris) are
printed and written to .build/artifacts/hostile_http.json; docs/reliability.md quotes them. There are no latency
assertions: the other client only has to be answered, within a generous timeout."""
import json
import os
import pathlib
import socket
import threading
import time
import urllib.request
import pytest

from integration_conftest import ROOT, start_service

ARTIFACTS = ROOT / ".build" / "artifacts"
FLOOD_SECONDS = float(os.environ.get("HOSTILE_FLOOD_SECONDS", "15"))
MEMORY_BOUND_KB = 100 * 1024  # the service's peak resident set under the flood
ANSWER_TIMEOUT = 10.0  # the other client must be answered within this (generous) time


def record(name, figures):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "hostile_http.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def request(method, path, body=b"", headers=None):
    head = [f"{method} {path} HTTP/1.1", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def connect(port, source="127.0.0.1", timeout=ANSWER_TIMEOUT):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_reply(s):
    """One Content-Length framed reply: (status, headers dict, body bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a reply ({data[:80]!r})")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length]


def ask(port, method, path, body=b"", headers=None, source="127.0.0.1"):
    with connect(port, source) as s:
        s.sendall(request(method, path, body, {"Host": f"127.0.0.1:{port}", **(headers or {})}))
        return read_reply(s)


READING = b'{"cmd":"meter_reading"}'


def test_pipelining_flood_without_reading_keeps_memory_bounded_and_others_answered(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    pid = procs.procs[-1].service_pid()
    baseline_kb = status_kb(pid, "VmRSS")
    one = request("POST", "/api", READING, {"Host": "meter"})
    burst = one * 200
    stop = threading.Event()
    flood = {"bytes": 0, "connections": 0}
    lock = threading.Lock()

    def flooder():
        while not stop.is_set():
            try:
                s = connect(port, timeout=0.5)
            except OSError:
                time.sleep(0.05)
                continue
            with lock:
                flood["connections"] += 1
            try:
                while not stop.is_set():
                    try:
                        sent = s.send(burst)  # never reads a reply
                        with lock:
                            flood["bytes"] += sent
                    except socket.timeout:
                        continue  # the service stopped reading this connection: back-pressure
            except OSError:
                pass  # closed by the service (write timeout, busy): come back, as an attacker would
            finally:
                s.close()

    threads = [threading.Thread(target=flooder, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    latencies, failures, peak_rss_kb = [], [], 0
    deadline = time.monotonic() + FLOOD_SECONDS
    i = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            status, _, body = ask(port, "POST", "/api", b'{"cmd":"meter_reading","id":%d}' % i, source="127.0.0.2")
            assert status == 200 and body.endswith(b',"id":%d}' % i), body[:200]
            latencies.append(time.monotonic() - started)
        except (OSError, ConnectionError) as e:
            failures.append(repr(e))
        peak_rss_kb = max(peak_rss_kb, status_kb(pid, "VmRSS"))
        i += 1
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(5)
    hwm_kb = status_kb(pid, "VmHWM")
    figures = {
        "seconds": FLOOD_SECONDS, "flood_connections": 4, "flood_reconnects": flood["connections"] - 4,
        "flood_mib_sent": round(flood["bytes"] / 2**20, 1), "rss_before_mib": round(baseline_kb / 1024, 1),
        "rss_peak_sampled_mib": round(peak_rss_kb / 1024, 1), "vm_hwm_mib": round(hwm_kb / 1024, 1),
        "other_client_requests": len(latencies), "other_client_failures": len(failures),
        "other_client_worst_ms": round(max(latencies) * 1000, 1) if latencies else None,
    }
    record("pipelining_flood", figures)
    assert not failures, f"the other client was not answered: {failures[:3]}"
    assert latencies, "the other client never got through"
    assert hwm_kb < MEMORY_BOUND_KB, f"peak resident set {hwm_kb} kB over the {MEMORY_BOUND_KB} kB bound: {figures}"
    assert procs.procs[-1].poll() is None, "the service died under the flood"


def test_slowloris_from_one_address_does_not_lock_out_another(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    attempts = 300
    sockets = []
    for _ in range(attempts):
        s = connect(port, timeout=5)
        s.sendall(b"POST /api HTTP/1.1\r\nHost: meter\r\n")  # a head that never ends
        sockets.append(s)
    # Over the per-address cap the service answers 503 at once; the rest it holds.
    time.sleep(1.0)
    held, refused = [], 0
    for s in sockets:
        s.setblocking(False)
        try:
            data = s.recv(4096)
            assert data.startswith(b"HTTP/1.1 503") and b"too_many_connections" in data, data[:200]
            refused += 1
            s.close()
        except BlockingIOError:
            held.append(s)
    # While they trickle a byte a second, another loopback address is served every time.
    started = time.monotonic()
    latencies = []
    answered_408, trickle_started = {}, time.monotonic()
    while time.monotonic() - started < 14:
        for s in held:
            if s.fileno() in answered_408:
                continue
            try:
                data = s.recv(4096)
                if data.startswith(b"HTTP/1.1 408") or not data:
                    answered_408[s.fileno()] = time.monotonic() - trickle_started
                    continue
            except BlockingIOError:
                pass
            except OSError:
                answered_408[s.fileno()] = time.monotonic() - trickle_started
                continue
            try:
                s.send(b"X")
            except OSError:
                pass
        t0 = time.monotonic()
        status, _, _ = ask(port, "POST", "/api", READING, source="127.0.0.2")
        assert status == 200
        latencies.append(time.monotonic() - t0)
        time.sleep(1.0)
    figures = {
        "attempted": attempts, "held": len(held), "refused_503": refused,
        "held_closed_by_head_deadline": len(answered_408),
        "latest_408_s": round(max(answered_408.values()), 1) if answered_408 else None,
        "other_address_requests": len(latencies), "other_address_worst_ms": round(max(latencies) * 1000, 1),
    }
    record("slowloris", figures)
    for s in held:
        s.close()
    assert 0 < len(held) <= 32, figures
    assert refused == attempts - len(held), figures
    assert len(answered_408) == len(held), f"a trickling head outlived its deadline: {figures}"


def relay_state(port):
    """The relay as the meter reports it, once it has been read."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = json.loads(ask(port, "POST", "/api", b'{"cmd":"relay_status"}')[2])
        if "state" in reply:
            return reply["state"]
        time.sleep(0.2)
    raise AssertionError(f"relay never read: {reply}")


def test_cross_origin_post_of_a_protected_command_is_refused(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    assert relay_state(port) == "on"
    status, _, body = ask(port, "POST", "/api", b'{"cmd":"relay_set","state":"off","id":7}',
                          {"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert status == 403, body
    reply = json.loads(body)
    assert reply["error"] == "cross_origin" and reply["id"] == 7 and "evil.example" in reply["message"]
    # Nothing ran: the relay is still on.
    assert relay_state(port) == "on"
    # The firmware upload is refused the same way, before any of the image is read.
    status, headers, text = ask(port, "POST", "/ota", b"\x00" * 64, {"Origin": "http://evil.example"})
    assert status == 403 and headers["content-type"].startswith("text/plain") and b"cross-site" in text
    # The board's own page (same origin) and apps without Origin may.
    status, _, body = ask(port, "POST", "/api", b'{"cmd":"relay_set","state":"off"}',
                          {"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200, body
    assert relay_state(port) == "off"
    # Reading commands stay open to any page.
    status, _, _ = ask(port, "POST", "/api", READING, {"Origin": "http://dashboard.example"})
    assert status == 200


def test_dns_rebinding_host_is_refused_for_protected_commands_only(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path, "--host-name", "meter.example.net")
    rebound = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
    status, _, body = ask(port, "POST", "/api", b'{"cmd":"system_restart"}', rebound)
    assert status == 403, body
    assert json.loads(body)["error"] == "unknown_host"
    status, _, body = ask(port, "POST", "/api", READING, rebound)
    assert status == 200 and b'"meter"' in body
    # The board's own names pass (hostname.local as a browser on the LAN would use it).
    name = socket.gethostname().split(".")[0]
    status, _, body = ask(port, "POST", "/api", b'{"cmd":"relay_set","state":"on"}', {"Host": f"{name}.local:{port}"})
    assert status == 200, body
    # So does a name the installer added (--host-name, host_names in the configuration).
    status, _, body = ask(port, "POST", "/api", b'{"cmd":"relay_set","state":"on"}', {"Host": "Meter.Example.Net"})
    assert status == 200, body


def test_get_api_answers_like_meter_reading_and_typographic_quotes_are_named(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=ANSWER_TIMEOUT) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/json"
        reading = json.loads(r.read())
    assert reading["result"] == "OK" and "meterid" in reading["meter"][0]  # "" until the meter was read
    status, _, body = ask(port, "POST", "/api", "{“cmd”:“meter_reading”}".encode())
    reply = json.loads(body)
    assert status == 400 and reply["error"] == "invalid_json"
    assert "“" in reply["message"] and "”" in reply["message"], reply


def test_slow_wifi_during_a_factory_reset_stalls_neither_the_api_nor_the_watchdog(procs, bin_path, tmp_path):
    """meter_factreset forgets the WiFi through nmcli, queued behind whatever the WiFi is doing (a wifi_config can
    take 30 s). Here every nmcli call blocks while a `hold` file exists: the reset must not hold up the event loop,
    so other requests are answered and WATCHDOG=1 keeps going (the watchdog is fed only while the loop turns)."""
    import shutil
    import subprocess
    from integration_conftest import board_argv, service_dir, free_port

    nm = pathlib.Path(service_dir(tmp_path / "nm"))
    (nm / "scenario.json").write_text(json.dumps({"mac": "b8:27:eb:00:00:01", "networks": []}))
    os.chmod(nm / "scenario.json", 0o644)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = ROOT / "Tests" / "DeviceStateTests" / "Fixtures" / "nmcli"
    (bin_dir / "nmcli").write_text(
        "#!/bin/sh\n"
        'while [ -e "$FAKE_NMCLI_DIR/hold" ]; do : > "$FAKE_NMCLI_DIR/blocked"; sleep 0.1; done\n'
        f'exec {shutil.which("python3")} {fake} "$@"\n')
    os.chmod(bin_dir / "nmcli", 0o755)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"meterext-watchdog-{os.getpid()}"
    notify.bind("\0" + name)
    notify.settimeout(0.2)
    port = free_port()
    state = tmp_path / "st"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_NMCLI_DIR": str(nm),
           "NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    procs.start(board_argv([bin_path, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", str(state),
                            "--wifi", "networkmanager", "--poll-interval", "0.3"],
                           writable=[service_dir(state), str(nm)], readable=[tmp_path]),
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pings = []

    def collect(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                message = notify.recv(4096).decode()
            except socket.timeout:
                continue
            for line in message.split("\n"):
                pings.append((time.monotonic(), line))

    deadline = time.monotonic() + 30
    while not any(line == "READY=1" for _, line in pings):
        assert time.monotonic() < deadline, "no READY=1"
        collect(0.5)
    collect(3)
    assert any(line == "WATCHDOG=1" for _, line in pings), "the watchdog is not fed even before the reset"

    (nm / "hold").write_text("")
    try:
        status, _, body = ask(port, "POST", "/api", b'{"cmd":"meter_factreset"}')
        assert status == 200, body
        deadline = time.monotonic() + 30
        while not (nm / "blocked").exists():  # the reset (or the WiFi it waits behind) is now stuck in nmcli
            assert time.monotonic() < deadline, "nmcli was never called"
            collect(0.2)
        blocked_at = time.monotonic()
        answered = 0
        while time.monotonic() - blocked_at < 20:  # longer than the watchdog gate's 10 s + the loop's 5 s window
            status, _, _ = ask(port, "POST", "/api", READING, source="127.0.0.2")
            assert status == 200
            answered += 1
            collect(0.5)
        late = [t for t, line in pings if line == "WATCHDOG=1" and t - blocked_at > 16]
        record("slow_factory_reset", {"nmcli_blocked_s": round(time.monotonic() - blocked_at, 1),
                                      "requests_answered_meanwhile": answered, "watchdog_pings_after_16s": len(late)})
        assert late, "WATCHDOG=1 stopped while the factory reset waited for the WiFi"
    finally:
        (nm / "hold").unlink()  # lets the reset finish, so the service can stop


def test_repeated_keep_alive_requests_split_and_pipelined_bytes_are_answered_in_order(procs, bin_path, tmp_path):
    """Issue 18: identical keep-alive requests are answered by the fast path (the same bytes as the first answer);
    a request split across writes, requests pipelined in one write, a different request and a broken one still go
    through the decoder, in order, on the same connection."""
    port = start_service(procs, bin_path, tmp_path)
    host = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    same = request("POST", "/api", b'{"cmd":"meter_reading","id":1}', host)
    other = request("POST", "/api", b'{"cmd":"system_status","id":2}', host)
    with connect(port) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = bytearray()

        def read_reply(s):
            """One Content-Length framed reply, keeping what follows it (pipelined replies arrive together)."""
            while b"\r\n\r\n" not in pending:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed before a reply ({bytes(pending[:80])!r})")
                pending.extend(chunk)
            end = pending.index(b"\r\n\r\n")
            lines = pending[:end].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            length = int(headers.get("content-length", "0"))
            while len(pending) < end + 4 + length:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed in the body")
                pending.extend(chunk)
            body = bytes(pending[end + 4:end + 4 + length])
            del pending[:end + 4 + length]
            return int(lines[0].split()[1]), headers, body

        s.sendall(same)
        first = read_reply(s)
        assert first[0] == 200 and json.loads(first[2])["id"] == 1
        for _ in range(200):
            s.sendall(same)
            status, _, body = read_reply(s)
            reply = json.loads(body)
            assert status == 200 and reply["id"] == 1 and reply["result"] == "OK"
        half = len(same) // 2
        s.sendall(same[:half])
        time.sleep(0.05)
        s.sendall(same[half:])
        assert json.loads(read_reply(s)[2])["id"] == 1
        s.sendall(same + other + same)
        assert [json.loads(read_reply(s)[2]).get("id") for _ in range(3)] == [1, 2, 1]
        for _ in range(3):
            s.sendall(same)
            assert json.loads(read_reply(s)[2])["id"] == 1
    with connect(port) as s:  # a new connection, on which the fast path has learnt the request
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending.clear()
        for _ in range(3):
            s.sendall(same)
            assert json.loads(read_reply(s)[2])["id"] == 1
        s.sendall(same + same[:half])  # a request and the first half of the next in one write
        assert json.loads(read_reply(s)[2])["id"] == 1
        time.sleep(0.05)
        s.sendall(same[half:])
        assert json.loads(read_reply(s)[2])["id"] == 1
        time.sleep(0.05)
        s.sendall(same[half:])  # the same second half alone is not a request, however the fast path saw it before
        status, headers, _ = read_reply(s)
        assert status == 400 and headers.get("connection") == "close"


def event_loop_threads(pid):
    """Names of the SwiftNIO event loop threads of process `pid`."""
    return sorted(n for n in (pathlib.Path(f"/proc/{pid}/task/{t}/comm").read_text().strip()
                              for t in os.listdir(f"/proc/{pid}/task")) if n.startswith("NIO-ELT"))


def test_http_threads_sets_the_event_loops_and_out_of_range_is_refused(procs, bin_path, tmp_path):
    """Issue 18: `--http-threads N` runs the API on N event loops (default one per core); 0 is refused at start."""
    port = start_service(procs, bin_path, tmp_path / "one", "--http-threads", "1")
    assert len(event_loop_threads(procs.procs[-1].service_pid())) == 1
    body = json.dumps({"cmd": "meter_reading"}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body), timeout=10) as r:
        assert json.loads(r.read())["result"] == "OK"
    start_service(procs, bin_path, tmp_path / "default")
    assert len(event_loop_threads(procs.procs[-1].service_pid())) == len(os.sched_getaffinity(0))
    r = __import__("subprocess").run([bin_path, "run", "--simulate", "--http-threads", "0", "--listen", "127.0.0.1:0",
                                      "--state-dir", str(tmp_path / "bad")], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "--http-threads must be 1 to 64" in r.stderr, r.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two usable CPUs to narrow the mask to one")
def test_default_event_loops_follow_the_cpu_affinity(procs, bin_path, tmp_path):
    """Issue 18: "one loop per core" counts the cores the service may run on. Started under a one-CPU affinity
    (`taskset -c 0`, a unit's `CPUAffinity=0`), it runs one event loop, not one per online CPU that would share the
    core and wait for each other's time slices."""
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})  # inherited by the service started now
    try:
        port = start_service(procs, bin_path, tmp_path)
    finally:
        os.sched_setaffinity(0, mask)
    pid = procs.procs[-1].service_pid()
    assert os.sched_getaffinity(pid) == {min(mask)}
    assert len(event_loop_threads(pid)) == 1
    body = json.dumps({"cmd": "meter_reading"}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body), timeout=10) as r:
        assert json.loads(r.read())["result"] == "OK"
