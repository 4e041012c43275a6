#!/usr/bin/env python3
"""Where the idle service allocates (issue 18 goal 2; a tool, not part of `make bench`).

Runs the same scenario as run.py's idle figures (`meterext simulate` on a pty, `meterext run` against it, nobody
asking) with Tests/bench/malloc_count.c's MALLOC_COUNT_TRACE, then prints the allocation call stacks of a
`--seconds` window, most frequent first, symbolized with llvm-symbolizer and swift-demangle.

    .venv/bin/python Tests/bench/alloc_sites.py --bin $PWD/.build/release/meterext [--seconds 20] [--frames 8]
"""
import argparse
import collections
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (pty_pair, free_port, post, Procs)


def module_map(pid):
    rows = []
    for line in pathlib.Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        rows.append((lo, hi, int(parts[2], 16), parts[5]))
    return rows


def symbolize(addresses, maps, inlines=False):
    by_module = collections.defaultdict(list)
    where = {}
    for a in addresses:
        for lo, hi, off, path in maps:
            if lo <= a < hi:
                # Return addresses point after the call: look one byte back.
                by_module[path].append((a, a - lo + off - 1))
                break
        else:
            where[a] = hex(a)
    for path, items in by_module.items():
        base = min(lo - off for lo, hi, off, p in maps if p == path)
        text = "\n".join(hex(a - base - 1) for a, _ in items)
        out = subprocess.run(["llvm-symbolizer", "--obj", path, "--functions=linkage"]
                             + ([] if inlines else ["--no-inlines"]),
                             input=text, capture_output=True, text=True).stdout.strip().split("\n\n")

        def frames(o):  # function, file:line pairs; with inlines the innermost first
            lines = o.split("\n")
            return " <= ".join(f"{lines[k]}@{lines[k + 1].rsplit('/', 1)[-1]}" if inlines else lines[k]
                               for k in range(0, len(lines) - 1 if inlines else 1, 2))
        names = subprocess.run(["swift-demangle", "--simplified", "--compact"], input="\n".join(
            frames(o) for o in out), capture_output=True, text=True).stdout.splitlines()
        for (a, _), name in zip(items, names):
            where[a] = f"{name if inlines else name[:150]} [{pathlib.Path(path).name}+{a - base - 1:#x}]"
    return where


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--inlines", action="store_true", help="name inlined functions and source lines too")
    args = ap.parse_args()
    so = bench.OUT / "malloc_count.so"
    bench.OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(so), str(bench.ROOT / "Tests/bench/malloc_count.c")],
                   check=True)
    procs = bench.Procs()
    with tempfile.TemporaryDirectory() as d:
        try:
            tmp = pathlib.Path(d)
            trace = tmp / "trace"
            port = bench.free_port()
            master, slave = bench.pty_pair(procs, tmp, "idle")
            procs.start([args.bin, "simulate", "--serial", slave])
            env = dict(os.environ, LD_PRELOAD=str(so), MALLOC_COUNT_TRACE=str(trace))
            service = procs.start([args.bin, "run", "--serial", master, "--parity", "none", "--listen",
                                   f"127.0.0.1:{port}", "--state-dir", str(tmp / "state"), "--wifi", "sim"], env=env)
            for _ in range(200):
                try:
                    if bench.post(port, "system_status").get("meter_link") == "online":
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            time.sleep(3)
            t0 = int(bench.post(port, "system_status")["link_errors"]["transactions"])
            start = time.monotonic_ns()
            time.sleep(args.seconds)
            end = time.monotonic_ns()
            t1 = int(bench.post(port, "system_status")["link_errors"]["transactions"])
            maps = module_map(service.pid)
            stacks = collections.Counter()
            threads = collections.Counter()
            for line in trace.read_text().splitlines():
                parts = line.split()
                if len(parts) < 2 or not start <= int(parts[0]) <= end:
                    continue
                threads[parts[1]] += 1
                stacks[(parts[1], tuple(int(x, 16) for x in parts[2:2 + args.frames]))] += 1
        finally:
            procs.stop()
    total = sum(threads.values())
    print(f"{total} allocations in {args.seconds} s over {t1 - t0} transactions "
          f"({total / max(1, t1 - t0):.2f} per transaction)")
    print("by thread:", json.dumps(dict(threads.most_common())))
    where = symbolize({a for (_, s) in stacks for a in s}, maps, args.inlines)
    for (thread, stack), n in stacks.most_common(args.top):
        print(f"\n{n:6d}  [{thread}]")
        for a in stack:
            print("          " + where.get(a, hex(a)))


if __name__ == "__main__":
    main()
