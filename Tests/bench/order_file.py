#!/usr/bin/env python3
"""Issue 18 (memory): writes board/meterext.order, the link order of the functions a board runs.

The release link (`make release`) hands this file to lld (`--symbol-ordering-file`): the functions listed are laid
out first, in this order, so the code a running gateway touches sits in a few contiguous pages instead of being spread
over the 13 MB `.text` (the kernel maps 64 kB around every page fault of a file mapping, so scattered code costs
resident memory and page cache far beyond its size). Functions not listed keep the linker's order after them; a
listed name that no longer exists is skipped. A stale file costs memory, never correctness.

How the list is made: `valgrind --tool=callgrind` runs the release binary as a board does (`meterext run` on a pty
against `meterext simulate` in another process), answers the requests apps and the dashboard make, and stops it;
then the same for `meterext simulate` and `meterext run --simulate` (`make run`). Every function of the binary that
executed at least once is listed, the most-executed first (the poll and HTTP paths share cache lines and pages).

    make release && .venv/bin/python Tests/bench/order_file.py --bin .build/release/meterext

Rerun it after large changes; `make bench` reports the resident set it gives.
"""
import argparse
import collections
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from run import Procs, free_port, post, pty_pair, sh  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


def callgrind(binary, args, out, procs, **kw):
    return procs.start(["valgrind", "--tool=callgrind", "--demangle=no", "--dump-instr=no",
                        f"--callgrind-out-file={out}", binary, *args], **kw)


def ask(port, seconds):
    """What apps, the dashboard and installers ask, repeated for `seconds` (a dozen new readings under valgrind)."""
    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.read()

    deadline = time.monotonic() + 120
    while True:  # up, and the meter read once
        try:
            if post(port, "meter_reading", timeout=30)["meter"][0]["data"]:
                break
        except (OSError, KeyError, IndexError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the service under valgrind never read the meter")
        time.sleep(0.5)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = int(time.time())
        for body in ({"cmd": "meter_reading"}, {"cmd": "system_status"}, {"cmd": "meter_status"},
                     {"cmd": "wifi_status"}, *({"cmd": "meter_history", "from": str(now - 86400), "to": str(now),
                                               "resolution": resolution, "obis": ["1-0:16.5.0.255", "1-0:1.29.0.255"]}
                                              for resolution in ("interval", "day", "month"))):
            try:
                post(port, body, timeout=30)
            except urllib.error.HTTPError:
                pass  # a refused command still runs the request path
        for path in ("/", "/setup.js", "/healthz", "/metrics"):
            try:
                get(path)
            except urllib.error.HTTPError:
                pass
        time.sleep(1)


def executed(out, binary_name):
    """Self instruction count per function of the binary (mangled names) in one callgrind output."""
    counts = collections.Counter()
    names = {}
    objects = {}
    current_ob = current_fn = None
    in_call = False
    for line in pathlib.Path(out).read_text(errors="replace").splitlines():
        if line.startswith(("ob=", "fn=", "cob=", "cfn=", "calls=")):
            key, value = line.split("=", 1)
            if key == "calls":
                in_call = True
                continue
            ref, _, name = value.partition(" ")
            table = objects if key in ("ob", "cob") else names
            if name:
                table[ref] = name
            if key == "ob":
                current_ob = objects.get(ref, ref)
            elif key == "fn":
                current_fn = names.get(ref, ref)
            continue
        if line and line[0].isdigit() or line.startswith(("+", "-", "*")):
            if in_call:  # the cost line after `calls=` is inclusive cost of the call, not this function's own
                in_call = False
                continue
            if current_ob and current_ob.endswith("/" + binary_name) and current_fn:
                parts = line.split()
                if len(parts) >= 2:
                    # callgrind names a recursive activation `name'2`: the same function.
                    counts[re.sub(r"'\d+$", "", current_fn)] += int(parts[1])
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="release build of meterext (with its symbol table)")
    parser.add_argument("--seconds", type=int, default=60, help="how long each run is asked (default 60)")
    parser.add_argument("--out", default=str(ROOT / "board" / "meterext.order"))
    args = parser.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="meterext-order-"))
    # valgrind 3.19 cannot read the toolchain's DWARF 5 debug info: run a copy without it (same code and symbols).
    binary = tmp / "meterext"
    sh("objcopy", "--strip-debug", args.bin, str(binary))
    procs = Procs()
    counts = collections.Counter()
    try:
        runs = []
        # 1. as a board runs it: the meter in another process on a pty.
        master, slave = pty_pair(procs, tmp, "order")
        simulator = callgrind(str(binary), ["simulate", "--serial", slave], tmp / "cg.simulate", procs)
        port = free_port()
        service = callgrind(str(binary), ["run", "--serial", master, "--parity", "none", "--listen",
                                          f"127.0.0.1:{port}", "--state-dir", str(tmp / "state"), "--wifi", "sim"],
                            tmp / "cg.run", procs)
        ask(port, args.seconds)
        runs += [(service, tmp / "cg.run"), (simulator, tmp / "cg.simulate")]
        # 2. `make run`: the built-in simulator in the same process.
        port = free_port()
        builtin = callgrind(str(binary), ["run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir",
                                          str(tmp / "state-sim"), "--wifi", "sim"], tmp / "cg.builtin", procs)
        ask(port, args.seconds // 2)
        runs.append((builtin, tmp / "cg.builtin"))
        for process, out in runs:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(120)
            counts.update(executed(out, binary.name))
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    symbols = set(sh("nm", "--defined-only", "--format=just-symbols", args.bin).split())
    ordered = [name for name, _ in counts.most_common() if name in symbols]
    pathlib.Path(args.out).write_text("\n".join(ordered) + "\n")
    print(f"{len(ordered)} functions executed ({len(counts) - len(ordered)} names not in the symbol table) "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
