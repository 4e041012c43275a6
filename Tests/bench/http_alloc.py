#!/usr/bin/env python3
"""Issue 18 goal 3: heap allocations per `meter_reading` request over POST /api (whole process, LD_PRELOAD counter
Tests/bench/malloc_count.c), with wrk's request as in run.py's http figures. The simulated meter keeps polling, so
the allocations of an equally long idle window are subtracted. A figure, not a test.

    .venv/bin/python Tests/bench/http_alloc.py --bin .build/release/meterext [--seconds 5]
"""
import argparse
import json
import os
import pathlib
import re
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import free_port  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        so = tmp / "malloc_count.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(ROOT / "Tests/bench/malloc_count.c")],
                       check=True)
        counter = tmp / "count"
        port = free_port()
        env = dict(os.environ, LD_PRELOAD=str(so), MALLOC_COUNT_FILE=str(counter))
        service = subprocess.Popen([args.bin, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir",
                                    str(tmp / "state"), "--wifi", "sim"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            body = json.dumps({"cmd": "meter_reading"}).encode()
            for _ in range(200):
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body, method="POST")
                    with urllib.request.urlopen(req, timeout=1) as r:
                        if json.loads(r.read())["meter"][0]["data"]:
                            break
                except OSError:
                    pass
                time.sleep(0.1)
            time.sleep(2)

            def count():
                return struct.unpack("<Q", counter.read_bytes()[:8])[0]

            a = count()
            time.sleep(args.seconds)
            idle = count() - a
            script = tmp / "post.lua"
            script.write_text('wrk.method = "POST"\nwrk.body = \'{"cmd":"meter_reading","id":1}\'\n'
                              'wrk.headers["Content-Type"] = "application/json"\n')
            b = count()
            out = subprocess.run(["wrk", "-t2", "-c16", f"-d{args.seconds}s", "-s", str(script),
                                  f"http://127.0.0.1:{port}/api"], capture_output=True, text=True, check=True).stdout
            loaded = count() - b
            requests = int(re.search(r"(\d+) requests in", out).group(1))
            print(json.dumps({"requests": requests, "allocations_under_load": loaded, "allocations_idle": idle,
                              "allocations_per_request": (loaded - idle) / max(1, requests)}, indent=1))
        finally:
            service.terminate()
            service.wait()


if __name__ == "__main__":
    main()
