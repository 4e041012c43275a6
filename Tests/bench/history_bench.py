"""Issue 15 figures for `make bench` (called from run.py): bytes the load profile writes to storage per day, and
`meter_history` time over 400 days of 15-minute intervals. Figures, not tests."""
import json
import pathlib
import shutil
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_bytes(pid):
    for line in open(f"/proc/{pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def history_figures(binary, procs, tmp, seconds=60, interval=2):
    # On the disk, not /tmp (a tmpfs counts no write_bytes).
    work = ROOT / ".build" / "bench" / "history"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    port = _free_port()
    p = procs.start([binary, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
                     "--runtime-dir", str(work / "run"), "--wifi", "sim", "--profile-interval", str(interval)])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(2 * interval + 1)  # start-up writes (token, config) are done, recording has begun

    def count():
        body = json.dumps({"cmd": "meter_history", "from": "0", "obis": ["1-0:1.8.0.255"]}).encode()
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body), timeout=10) as r:
            return len(json.loads(r.read())["meter"][0]["data"][0]["entry"])

    before, n0 = _write_bytes(p.pid), count()
    time.sleep(seconds)
    after, n1 = _write_bytes(p.pid), count()
    commits = max(1, n1 - n0)
    per_commit = (after - before) / commits
    figures = {"seconds": seconds, "interval": interval, "commits": commits, "bytes": after - before,
               "bytes_per_commit": per_commit, "bytes_per_day_900": per_commit * 96}

    db = work / "fill.sqlite"
    fill = json.loads(subprocess.run([binary, "bench", "history", "fill", "--db", str(db), "--days", "400"],
                                     check=True, capture_output=True, text=True).stdout)
    figures["fill"] = fill
    queries = {}
    for name, args in [
        ("interval, every code, one 10 000-entry page", ["--resolution", "interval"]),
        ("interval, 16.5.0 over 24 h (power chart)", ["--resolution", "interval", "--days", "1", "--obis", "1-0:16.5.0.255"]),
        ("day, 1.29.0 over 31 days (energy per day)", ["--resolution", "day", "--days", "31", "--obis", "1-0:1.29.0.255"]),
        ("day, 1.29.0 over 400 days", ["--resolution", "day", "--obis", "1-0:1.29.0.255"]),
        ("day, every code over 400 days (first page)", ["--resolution", "day"]),
        ("month, 1.29.0 over 400 days", ["--resolution", "month", "--obis", "1-0:1.29.0.255"]),
        ("hour, every code over 400 days (first page)", ["--resolution", "hour"]),
    ]:
        out = subprocess.run([binary, "bench", "history", "query", "--db", str(db), "--repeats", "50", *args],
                             check=True, capture_output=True, text=True).stdout
        queries[name] = json.loads(out)
    figures["queries"] = queries
    return figures


def markdown(f):
    lines = [
        "## Load profile (issue 15)",
        "",
        f"Storage writes: `meterext run --simulate --profile-interval {f['interval']}` on the disk for {f['seconds']} s "
        f"wrote {f['bytes'] / 1024:.0f} KiB (`/proc/PID/io` write_bytes, the whole service) for {f['commits']} "
        f"intervals: {f['bytes_per_commit'] / 1024:.1f} KiB per interval, so **{f['bytes_per_day_900'] / 1e6:.2f} MB "
        "per day** at the default 900 s (96 intervals; WAL checkpoints into the main file are included when one fell "
        "in the window).",
        "",
        f"Store filled with 400 days of 15-minute intervals ({f['fill']['intervals']} rows, every column): "
        f"{f['fill']['bytes'] / 1e6:.1f} MB (bound 32 MB).",
        "",
        "`meter_history` over that store, in process (SQLite query, bucketing and the JSON reply; 50 runs):",
        "",
        "| query | entries | p50 | p99 |",
        "|---|---|---|---|",
    ]
    for name, q in f["queries"].items():
        lines.append(f"| {name} | {q['entries']} | {q['p50_ms']:.1f} ms | {q['p99_ms']:.1f} ms |")
    lines += ["", "Goal: p99 under 50 ms.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import sys
    import tempfile
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from run import Procs
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=int, default=60)
    a = ap.parse_args()
    procs = Procs()
    try:
        figures = history_figures(a.bin, procs, pathlib.Path(tempfile.mkdtemp()), seconds=a.seconds)
    finally:
        procs.stop()
    print(json.dumps(figures, indent=1))
    print(markdown(figures))
