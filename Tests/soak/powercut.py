#!/usr/bin/env python3
"""Power-cut loop: SIGKILLs `meterext run` at random moments while configuration writes (meter_setkey, wifi_config)
hit the state store, restarts it, and checks after every restart that the configuration loads and the API answers.

  METEREXT_BIN=.build/debug/meterext python3 Tests/soak/powercut.py --kills 200

After each restart:
  - the API answers within --start-timeout (system_status, then a meter_setkey round trip);
  - the state store loaded cleanly: no "malformed"/"cannot read" warning in the log, no `.corrupt-` file set aside,
    no leftover temporary file, config.json and state.json parse as JSON;
  - durability: config.json holds the last meter key the API acknowledged before the kill, or the one whose request
    was in flight when the kill came (never an older one, never a mix).
Prints the number of kills survived; exits 1 at the first failed check (with the logs kept).
Firmware updates are not yet interrupted here: see docs/reliability.md (what is left out).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


class Writer(threading.Thread):
    """Sends configuration writes one after another until stopped; remembers what was acknowledged."""

    def __init__(self, port, counter, wifi_every):
        super().__init__(daemon=True)
        self.port, self.counter, self.wifi_every = port, counter, wifi_every
        self.acked = None
        self.in_flight = None
        self.writes = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.counter[0] += 1
            n = self.counter[0]
            try:
                if self.wifi_every and n % self.wifi_every == 0:
                    ssid, pw = [("HomeNet", "homenet-pass"), ("Office-5G", "office-pass")][n % 2]
                    common.api(self.port, {"cmd": "wifi_config", "ssid": ssid, "password": pw}, timeout=10)
                    continue
                key = f"{n:032x}"
                self.in_flight = key
                status, doc, _ = common.api(self.port, {"cmd": "meter_setkey", "key": key}, timeout=10)
                if status == 200 and doc and doc.get("result") == "OK":
                    self.acked = key
                    self.in_flight = None
                    self.writes += 1
            except OSError:
                return  # the service was killed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--max-delay", type=float, default=0.6, help="longest time between restart and kill, s")
    p.add_argument("--wifi-every", type=int, default=7, help="every Nth write is a wifi_config (0: none)")
    p.add_argument("--start-timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    binary = common.binary()
    work = tempfile.mkdtemp(prefix="meterext-powercut-")
    state_dir = os.path.join(work, "state")
    port = common.free_port()
    counter = [0]
    acked = None
    in_flight = None
    survived = 0
    during_write = 0
    start_times = []
    failure = None

    def start(i):
        log = open(os.path.join(work, f"run-{i:04d}.log"), "wb")
        return common.start_service([binary, "run", "--simulate", "--listen", f"127.0.0.1:{port}",
                                     "--state-dir", state_dir, "--wifi", "sim", "--poll-interval", "1"],
                                    work, state_dir, log)

    def check_store(i):
        with open(os.path.join(work, f"run-{i:04d}.log"), "rb") as f:
            log = f.read().decode(errors="replace")
        for bad in ("malformed", "cannot read", "could not keep"):
            if bad in log:
                return f"the store did not load cleanly after kill {i}: {bad!r} in the log"
        names = os.listdir(state_dir)
        if any(".corrupt-" in n for n in names):
            return f"a state file was set aside as corrupt after kill {i}: {names}"
        if any(".tmp-" in n for n in names):
            return f"a temporary file survived the restart after kill {i}: {names}"
        try:
            with open(os.path.join(state_dir, "config.json")) as f:
                config = json.load(f)
            with open(os.path.join(state_dir, "state.json")) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            return f"a state file does not parse after kill {i}: {e}"
        stored = config.get("meterKey")
        if acked is not None and stored not in (acked, in_flight):
            return f"after kill {i} config.json holds key {stored}, not the acknowledged {acked} or in-flight {in_flight}"
        return None

    proc = start(0)
    try:
        for i in range(1, a.kills + 1):
            try:
                start_times.append(common.wait_for_api(port, proc, a.start_timeout))
            except RuntimeError as e:
                failure = f"restart {i - 1}: {e}"
                break
            if i > 1:
                failure = check_store(i - 1)
                if failure:
                    break
            status, doc, _ = common.api(port, {"cmd": "meter_setkey", "key": f"{counter[0] + 1:032x}"})
            counter[0] += 1
            if status != 200 or not doc or doc.get("result") != "OK":
                failure = f"meter_setkey after restart {i - 1} answered {status} {doc}"
                break
            acked, in_flight = f"{counter[0]:032x}", None
            writer = Writer(port, counter, a.wifi_every)
            writer.acked = acked
            writer.start()
            time.sleep(rng.uniform(0.0, a.max_delay))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            writer.join(timeout=15)
            acked, in_flight = writer.acked, writer.in_flight
            during_write += in_flight is not None
            survived += 1
            proc = start(i)
        if failure is None:
            try:
                start_times.append(common.wait_for_api(port, proc, a.start_timeout))
                failure = check_store(a.kills)
            except RuntimeError as e:
                failure = f"last restart: {e}"
    finally:
        common.stop(proc)

    starts = sorted(start_times)
    median = starts[len(starts) // 2] if starts else 0
    print(f"powercut: {survived} of {a.kills} SIGKILLs survived ({during_write} with a meter_setkey in flight), "
          f"{counter[0]} configuration writes sent, seed {seed}")
    if starts:
        print(f"restart until the API answered: median {median:.2f} s, max {starts[-1]:.2f} s")
    if failure:
        print(f"POWERCUT FAILED: {failure}\nlogs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
