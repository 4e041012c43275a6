"""Fleet figures for issue 16 (called by Tests/bench/run.py, or alone): figures, not tests.

- `backlog_figures`: a backlog of 10 000 intervals drained into a local Mosquitto by the real uplink
  (`meterext bench-mqtt`): intervals per second and the process's resident memory before and at its peak.
- `fleet_figures`: N `meterext run --simulate` boards (each its own state directory and port) against one Mosquitto:
  messages per second at the broker, the broker's CPU, MQTT bytes per message from the broker's own `$SYS` counters,
  and from them the bytes per board per day at the default intervals.

Run alone: `python3 Tests/bench/fleet.py --bin .build/release/meterext --boards 20 --seconds 60`.
"""
import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(tmp):
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nsys_interval 1\n"
                    "max_queued_messages 100000\n")
    p = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def stop(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sys_counters(port):
    """The broker's own totals ($SYS, refreshed every second)."""
    out = subprocess.run(["mosquitto_sub", "-p", str(port), "-v", "-C", "4", "-W", "5",
                          "-t", "$SYS/broker/messages/received", "-t", "$SYS/broker/bytes/received",
                          "-t", "$SYS/broker/messages/sent", "-t", "$SYS/broker/bytes/sent"],
                         capture_output=True, text=True).stdout
    values = {}
    for line in out.splitlines():
        topic, value = line.split(" ", 1)
        values[topic.rsplit("/", 2)[-2] + "_" + topic.rsplit("/", 1)[-1]] = int(value)
    return values


def backlog_figures(binary, tmp, backlog=10_000):
    tmp = pathlib.Path(tmp)
    broker, port = start_broker(tmp)
    try:
        out = subprocess.run([binary, "bench-mqtt", "--mqtt", f"mqtt://127.0.0.1:{port}", "--backlog", str(backlog),
                              "--state-dir", str(tmp / "bench-mqtt-state")], capture_output=True, text=True,
                             timeout=600, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        stop(broker)


def fleet_figures(binary, tmp, boards=20, seconds=60, live_interval=1.0, profile_interval=None):
    tmp = pathlib.Path(tmp)
    broker, port = start_broker(tmp)
    procs = []
    try:
        api_ports = []
        for i in range(boards):
            api_port = free_port()
            state = tmp / f"board-{i}"
            state.mkdir(parents=True, exist_ok=True)
            args = [binary, "run", "--simulate", "--listen", f"127.0.0.1:{api_port}", "--state-dir", str(state),
                    "--runtime-dir", str(state / "run"), "--wifi", "sim", "--log-level", "warning",
                    "--mqtt", f"mqtt://127.0.0.1:{port}", "--mqtt-client-id", f"board-{i}",
                    "--mqtt-prefix", f"fleet/site{i % 10}", "--mqtt-live-interval", str(live_interval)]
            if profile_interval:
                args += ["--profile-interval", str(profile_interval)]
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(state / "stderr.log", "w"),
                                          start_new_session=True))
            api_ports.append(api_port)
        # An ingestion client (as Telegraf would be) subscribed to everything: the broker also fans out.
        procs.append(subprocess.Popen(["mosquitto_sub", "-p", str(port), "-q", "1", "-t", "fleet/#"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        # Every board up and connected.
        deadline = time.time() + 60 + boards
        for api_port in api_ports:
            while time.time() < deadline:
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api",
                                                 data=b'{"cmd":"system_status"}', method="POST")
                    s = json.loads(urllib.request.urlopen(req, timeout=2).read())
                    if s.get("mqtt", {}).get("state") == "connected":
                        break
                except OSError:
                    pass
                time.sleep(0.2)
        time.sleep(3)
        c0, cpu0, t0 = sys_counters(port), cpu_seconds(broker.pid), time.time()
        boards_only = procs[:boards]
        board_cpu0 = sum(cpu_seconds(p.pid) for p in boards_only)
        time.sleep(seconds)
        c1, cpu1, t1 = sys_counters(port), cpu_seconds(broker.pid), time.time()
        board_cpu1 = sum(cpu_seconds(p.pid) for p in boards_only)
        rss = [rss_kib(p.pid) for p in boards_only]
        alive = sum(p.poll() is None for p in boards_only)
        dt = t1 - t0
        msgs = c1["received_messages"] - c0["received_messages"] if "received_messages" in c1 else \
            c1["messages_received"] - c0["messages_received"]
        received_bytes = c1["bytes_received"] - c0["bytes_received"] if "bytes_received" in c1 else \
            c1["received_bytes"] - c0["received_bytes"]
        sent = c1.get("messages_sent", c1.get("sent_messages", 0)) - c0.get("messages_sent", c0.get("sent_messages", 0))
        return {
            "boards": boards, "alive": alive, "seconds": dt, "live_interval": live_interval,
            "messages_per_s": msgs / dt, "messages_sent_per_s": sent / dt, "broker_bytes_per_s": received_bytes / dt,
            "bytes_per_message": received_bytes / max(msgs, 1),
            "broker_cpu_percent": (cpu1 - cpu0) / dt * 100, "broker_rss_kib": rss_kib(broker.pid),
            "board_cpu_percent_each": (board_cpu1 - board_cpu0) / dt * 100 / boards,
            "board_rss_kib_median": sorted(rss)[len(rss) // 2],
        }
    finally:
        for p in procs:
            stop(p)
        stop(broker)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--boards", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--live-interval", type=float, default=1.0)
    ap.add_argument("--profile-interval", type=int, default=None)
    ap.add_argument("--backlog-only", action="store_true")
    args = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="meterext-fleet-"))
    print(json.dumps({"backlog": backlog_figures(args.bin, tmp / "backlog")}, indent=1))
    if not args.backlog_only:
        print(json.dumps({"fleet": fleet_figures(args.bin, tmp / "fleet", args.boards, args.seconds,
                                                 args.live_interval, args.profile_interval)}, indent=1))


if __name__ == "__main__":
    main()
