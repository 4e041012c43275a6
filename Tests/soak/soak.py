#!/usr/bin/env python3
"""Soak run: the real `meterext run` against `meterext simulate` over a socat pty pair, with bus faults, meter
outages, wrk load on /api and configuration writes, for --seconds. Prints the figures docs/reliability.md records
and checks the goals; exits 1 when a checked goal fails.

  METEREXT_BIN=.build/debug/meterext python3 Tests/soak/soak.py --seconds 600
  METEREXT_BIN=... python3 Tests/soak/soak.py --seconds 60 --ci     (what `make soak-ci` runs)

Outages alternate between killing the simulator (the meter loses power; a new process comes back) and freezing it
with SIGSTOP (the meter hangs; on SIGCONT it answers requests that queued up meanwhile, late). Every --poll-every
seconds meter_reading is read and checked:
  - no entry is dated after the meter vanished, nor in the future;
  - no data entry at all once the meter has been gone longer than --offline-grace (the service's offline limit,
    5 s, plus one failing poll cycle with its retries);
  - never "online" while the meter is gone beyond that grace;
  - while the meter is present and the link online: the age of the basic values (now - ts of 1-0:32.7.0.255).
Recovery time = from the simulator coming back to the first online reading dated after it came back.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FAULTS = "crc=0.05,silence=0.02,late=0.01,garbage=0.02,trailing=0.02,exception=0.01,split=0.1"
BASIC_OBIS = "1-0:32.7.0.255"
WRK_LUA = """wrk.method = "POST"
wrk.body = '{"cmd":"meter_reading","id":1}'
wrk.headers["Content-Type"] = "application/json"
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600)
    p.add_argument("--ci", action="store_true", help="short run: memory is reported, not asserted")
    p.add_argument("--faults", default=FAULTS)
    p.add_argument("--outages", type=int, help="meter outages (default 4, CI 2)")
    p.add_argument("--outage-seconds", type=float, help="length of each outage (default 20, CI 10)")
    p.add_argument("--offline-grace", type=float, default=12.0)
    p.add_argument("--poll-every", type=float, default=0.5)
    p.add_argument("--key-every", type=float, default=2.0, help="meter_setkey interval")
    p.add_argument("--wifi-every", type=float, default=15.0, help="wifi_config interval")
    p.add_argument("--wrk-connections", type=int, default=4)
    p.add_argument("--max-rss-growth-kb", type=int, default=1024)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args()
    outages = a.outages if a.outages is not None else (2 if a.ci else 4)
    outage_len = a.outage_seconds if a.outage_seconds is not None else (10.0 if a.ci else 20.0)
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    binary = common.binary()
    work = tempfile.mkdtemp(prefix="meterext-soak-")
    state_dir = os.path.join(work, "state")
    port = common.free_port()
    bus = common.PtyBus(work)
    sim_log = open(os.path.join(work, "simulate.log"), "ab")
    run_log = open(os.path.join(work, "run.log"), "ab")

    def start_sim():
        return subprocess.Popen([binary, "simulate", "--serial", bus.meter, "--address", "1", "--faults", a.faults],
                                stdout=sim_log, stderr=sim_log)

    def start_service():
        return common.start_service([binary, "run", "--serial", bus.gateway, "--parity", "none",
                                     "--listen", f"127.0.0.1:{port}", "--state-dir", state_dir, "--wifi", "sim",
                                     "--poll-interval", "1"], work, state_dir, run_log)

    sim = start_sim()
    service = start_service()
    violations = []
    crashes = []
    wrk = None
    figures = {}
    try:
        common.wait_for_api(port, service, 30)
        # The meter must be read once before the clock starts.
        t_first = time.monotonic()
        while True:
            _, doc, _ = common.api(port, {"cmd": "meter_reading"})
            if doc and doc["meter"][0]["data"]:
                break
            if time.monotonic() - t_first > 30:
                raise RuntimeError("no first reading within 30 s")
            time.sleep(0.2)
        rss0, fds0 = common.rss_kb(service.service_pid()), common.open_fds(service.service_pid())

        lua = os.path.join(work, "meter_reading.lua")
        with open(lua, "w") as f:
            f.write(WRK_LUA)
        wrk = subprocess.Popen(["wrk", "-t1", f"-c{a.wrk_connections}", f"-d{int(a.seconds)}s", "--latency",
                                "-s", lua, f"http://127.0.0.1:{port}/api"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        start = time.monotonic()
        schedule = []
        for i in range(outages):
            begin = a.seconds * (i + 1) / (outages + 1) - outage_len / 2
            schedule.append({"mode": "kill" if i % 2 == 0 else "freeze", "begin": begin,
                             "end": begin + outage_len})
        recoveries = []
        gone = None            # the current outage while the meter is away
        recovering = None      # (monotonic, unix) of the meter's return, until a fresh reading arrives
        max_age = 0
        polls = stale_marked = empty_while_gone = 0
        key_n = 0
        last_key_acked = None
        wifi_n = wifi_ok = 0
        next_poll = next_key = next_status = next_wifi = start
        baseline = None
        last_uptime = -1
        while (now := time.monotonic()) - start < a.seconds:
            t = now - start
            if service.poll() is not None:
                crashes.append(f"service exited with {service.returncode} at {t:.1f} s")
                service = start_service()
                common.wait_for_api(port, service, 30)
                continue
            for o in schedule:
                if "gone_at" not in o and t >= o["begin"]:
                    if o["mode"] == "kill":
                        sim.kill()
                        sim.wait()
                    else:
                        sim.send_signal(signal.SIGSTOP)
                    o["gone_at"], o["gone_unix"] = time.monotonic(), time.time()
                    gone, recovering = o, None
                elif "gone_at" in o and "back_at" not in o and t >= o["end"]:
                    if o["mode"] == "kill":
                        sim = start_sim()
                    else:
                        sim.send_signal(signal.SIGCONT)
                    o["back_at"], o["back_unix"] = time.monotonic(), time.time()
                    gone, recovering = None, o
            if baseline is None and t >= min(10.0, a.seconds / 6):
                baseline = (common.rss_kb(service.service_pid()), common.open_fds(service.service_pid()))

            if now >= next_poll:
                next_poll += a.poll_every
                try:
                    status, doc, raw = common.api(port, {"cmd": "meter_reading", "id": polls})
                except OSError as e:
                    violations.append(f"{t:.1f} s: meter_reading failed: {e}")
                    continue
                polls += 1
                wall = time.time()
                if doc is None or "meter" not in doc:
                    violations.append(f"{t:.1f} s: meter_reading is not the expected JSON: {raw[:200]!r}")
                    continue
                m = doc["meter"][0]
                data = m.get("data", [])
                link = m.get("status", "")
                stamps = [int(e["ts"]) for d in data for e in d["entry"]]
                basic = [int(e["ts"]) for d in data if d["OBIS"] == BASIC_OBIS for e in d["entry"]]
                if stamps and max(stamps) > wall + 1:
                    violations.append(f"{t:.1f} s: entry dated {max(stamps) - wall:.0f} s in the future")
                if link == "stale" and data:
                    stale_marked += 1
                if gone is not None:
                    away = time.monotonic() - gone["gone_at"]
                    if stamps and max(stamps) > gone["gone_unix"] + 1:
                        violations.append(f"{t:.1f} s: value dated after the meter vanished ({gone['mode']})")
                    if away > a.offline_grace:
                        if data:
                            violations.append(f"{t:.1f} s: {len(data)} data entries served {away:.1f} s into an "
                                              f"outage ({gone['mode']}), status {link!r}")
                        if link == "online":
                            violations.append(f"{t:.1f} s: link reported online {away:.1f} s into an outage")
                    if not data:
                        empty_while_gone += 1
                else:
                    if recovering is not None and link == "online" and basic and basic[0] >= int(recovering["back_unix"]):
                        recovering["recovery"] = time.monotonic() - recovering["back_at"]
                        recoveries.append(recovering)
                        recovering = None
                    if recovering is None and link == "online" and basic:
                        max_age = max(max_age, wall - basic[0])

            if now >= next_key:
                next_key += a.key_every
                key_n += 1
                key = f"{key_n:032x}"
                try:
                    status, doc, _ = common.api(port, {"cmd": "meter_setkey", "key": key})
                    if status == 200 and doc and doc.get("result") == "OK":
                        last_key_acked = key
                    else:
                        violations.append(f"{t:.1f} s: meter_setkey answered {status} {doc}")
                except OSError as e:
                    violations.append(f"{t:.1f} s: meter_setkey failed: {e}")

            if now >= next_wifi:
                next_wifi += a.wifi_every
                wifi_n += 1
                net = [("HomeNet", "homenet-pass"), ("Office-5G", "office-pass")][wifi_n % 2]
                try:
                    status, doc, _ = common.api(port, {"cmd": "wifi_config", "ssid": net[0], "password": net[1]},
                                                timeout=30)
                    wifi_ok += bool(doc and doc.get("result") == "OK")
                except OSError as e:
                    violations.append(f"{t:.1f} s: wifi_config failed: {e}")

            if now >= next_status:
                next_status += 5
                try:
                    _, doc, _ = common.api(port, {"cmd": "system_status"})
                    up = int(doc["uptime"])
                    if up < last_uptime:
                        crashes.append(f"uptime went back from {last_uptime} to {up} s at {t:.1f} s")
                    last_uptime = up
                except (OSError, KeyError, TypeError, ValueError) as e:
                    violations.append(f"{t:.1f} s: system_status failed: {e}")
            time.sleep(0.02)

        # Let the meter come back if the run ended inside an outage, then finish the load.
        for o in schedule:
            if "gone_at" in o and "back_at" not in o and o["mode"] == "freeze":
                sim.send_signal(signal.SIGCONT)
        wrk_out = wrk.communicate(timeout=60)[0]
        wrk = None
        time.sleep(1.0)
        _, status_doc, _ = common.api(port, {"cmd": "system_status"})
        rss1, fds1 = common.rss_kb(service.service_pid()), common.open_fds(service.service_pid())
        alive = service.poll() is None
        with open(os.path.join(state_dir, "config.json")) as f:
            stored_key = json.load(f).get("meterKey")
    finally:
        if wrk is not None:
            common.stop(wrk)
        common.stop(service)
        if sim.poll() is None:
            sim.send_signal(signal.SIGCONT)
        common.stop(sim)
        bus.close()

    counters = status_doc.get("link_errors", {}) if status_doc else {}
    req = re.search(r"(\d+) requests in ([\d.]+)(\w+)", wrk_out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk_out)
    sock = re.search(r"Socket errors: (.*)", wrk_out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk_out)
    p99 = re.search(r"99%\s+(\S+)", wrk_out)
    base_rss, base_fds = baseline or (rss0, fds0)
    expected_recoveries = sum(1 for o in schedule if "back_at" in o)

    print(f"soak: {a.seconds:.0f} s, faults {a.faults}, {len(schedule)} outages of {outage_len:.0f} s "
          f"({', '.join(o['mode'] for o in schedule)}), wrk -c{a.wrk_connections}, meter_setkey every "
          f"{a.key_every:g} s, wifi_config every {a.wifi_every:g} s")
    print("modbus transactions: " + ", ".join(f"{k} {counters.get(k, '?')}" for k in
          ["transactions", "succeeded", "timeouts", "crc", "exceptions", "wrong_slave", "wrong_function",
           "malformed", "io", "retries"]))
    print(f"api load (wrk): {req.group(1) if req else '?'} requests, {rps.group(1) if rps else '?'} req/s, "
          f"p99 {p99.group(1) if p99 else '?'}, non-2xx {non2xx.group(1) if non2xx else 0}, "
          f"socket errors {sock.group(1) if sock else 'none'}")
    print(f"meter_reading polls: {polls}; largest age of basic values while online: {max_age:.1f} s; "
          f"stale-marked replies: {stale_marked}; empty replies while the meter was gone: {empty_while_gone}")
    for o in schedule:
        rec = f"{o['recovery']:.1f} s" if "recovery" in o else "NOT RECOVERED"
        print(f"outage ({o['mode']}) at {o['begin']:.0f} s for {outage_len:.0f} s: recovery {rec}")
    print(f"config writes: meter_setkey {key_n} (last acknowledged key stored: {stored_key == last_key_acked}), "
          f"wifi_config {wifi_n} ({wifi_ok} OK)")
    print(f"memory: VmRSS {rss0} kB at start, {base_rss} kB after warm-up, {rss1} kB at end "
          f"(growth {rss1 - base_rss:+d} kB); open fds {fds0} at start, {base_fds} after warm-up, {fds1} at end")
    print(f"crashes/restarts: {len(crashes)}" + ("" if not crashes else ": " + "; ".join(crashes)))

    failures = list(violations[:20])
    if len(violations) > 20:
        failures.append(f"... {len(violations) - 20} more violations")
    if crashes or not alive:
        failures.append("the service crashed or restarted")
    if len(recoveries) != expected_recoveries or (outages > 0 and expected_recoveries == 0):
        failures.append(f"{len(recoveries)} of {expected_recoveries} outages recovered")
    if stored_key != last_key_acked:
        failures.append("the last acknowledged meter key is not in config.json")
    if int(counters.get("succeeded", 0)) == 0:
        failures.append("no Modbus transaction succeeded")
    if a.faults and int(counters.get("crc", 0)) + int(counters.get("timeouts", 0)) == 0:
        failures.append("faults were requested but none was counted: is the fault injection working?")
    if fds1 > base_fds + 2:
        failures.append(f"open file descriptors grew from {base_fds} to {fds1}")
    if not a.ci and rss1 - base_rss > a.max_rss_growth_kb:
        failures.append(f"resident memory grew {rss1 - base_rss} kB (limit {a.max_rss_growth_kb} kB)")
    if a.ci and rss1 - base_rss > 64 * 1024:
        failures.append(f"resident memory grew {rss1 - base_rss} kB in a CI run (runaway limit 64 MB)")
    if failures:
        print("SOAK FAILED:\n  " + "\n  ".join(failures))
        print(f"logs kept in {work}")
        return 1
    print("soak: all goals met")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
