"""`make bench`: speed and memory figures, each against a peer measured in the same run where there is one.

Prints the figures and rewrites docs/benchmarks.md (date, commit, command). Asserts nothing: benchmarks are not
tests. Needs: socat, gcc, libmodbus-dev, wrk, nginx (installed by `make bench`).
"""
import argparse
import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / ".build" / "bench"


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, start_new_session=True, stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def pty_pair(procs, tmp, name):
    a, b = tmp / f"{name}-a", tmp / f"{name}-b"
    procs.start(["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"])
    for _ in range(100):
        if a.exists() and b.exists():
            return str(a), str(b)
        time.sleep(0.02)
    raise RuntimeError("socat did not create the pty pair")


def build_peers():
    OUT.mkdir(parents=True, exist_ok=True)
    sh("gcc", "-O2", "-shared", "-fPIC", "-o", str(OUT / "malloc_count.so"), str(ROOT / "Tests/bench/malloc_count.c"))
    flags = sh("pkg-config", "--cflags", "--libs", "libmodbus").split()
    sh("gcc", "-O2", "-o", str(OUT / "libmodbus_bench"), str(ROOT / "Tests/bench/libmodbus_bench.c"), *flags)


def callgrind_instructions(args, toggle, transactions, tmp, name):
    """User-space instructions per transaction inside `toggle` (callgrind counts instructions, not time: the same
    figure on a busy machine). Both masters are counted the same way: from the call of the transaction function
    to its return, syscalls included as calls (their kernel side is not seen by either)."""
    out = tmp / f"callgrind.{name}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--toggle-collect={toggle}", f"--callgrind-out-file={out}",
                    *args], check=True, capture_output=True, text=True, timeout=900)
    total = None
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
    return total / transactions


def busy_load(procs, n=2):
    """The background load of the turnaround figure: one CPU-bound process per core at normal priority (what a
    firmware download, a compile or a busy HTTP client does to a 2-core board)."""
    return [procs.start([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


PACED_GAP_US = 10_000


def modbus_figures(binary, procs, tmp, count):
    master, slave = pty_pair(procs, tmp, "bus")
    procs.start([binary, "simulate", "--serial", slave])
    time.sleep(0.5)
    ours = json.loads(sh(binary, "bench", "modbus", "--serial", master, "--count", str(count)))
    peer = json.loads(sh(str(OUT / "libmodbus_bench"), master, str(count)))
    # Issue 18: the same reads paced as a board's poll loop runs them (idle longer than t3.5 between transactions),
    # where meterext's t3.5 rule costs no wait; back to back it costs one more sleep and wake-up than libmodbus.
    gap = str(PACED_GAP_US)
    paced = {"ours": json.loads(sh(binary, "bench", "modbus", "--serial", master, "--count", str(count // 2),
                                   "--gap-us", gap)),
             "peer": json.loads(sh(str(OUT / "libmodbus_bench"), master, str(count // 2), gap))}
    for r in (ours, peer, paced["ours"], paced["peer"]):
        n = max(1, r["transactions"])
        r["cpu_us_per_transaction"] = r["cpu_seconds"] / n * 1e6
        r["in_call_cpu_us_per_transaction"] = r["in_call_cpu_seconds"] / n * 1e6
        r["voluntary_switches_per_transaction"] = r["voluntary_switches"] / n
    n = max(20, count // 5)
    # valgrind 3.19 cannot read the toolchain's DWARF 5 debug info: count on a copy without it (same code, symbols).
    nodebug = OUT / "meterext.nodebug"
    sh("objcopy", "--strip-debug", binary, str(nodebug))
    ir_ours = callgrind_instructions([str(nodebug), "bench", "modbus", "--serial", master, "--count", str(n)],
                                     "*benchTransaction*", n, tmp, "ours")
    ir_peer = callgrind_instructions([str(OUT / "libmodbus_bench"), master, str(n)], "modbus_read_registers", n, tmp,
                                     "peer")
    de_idle = json.loads(sh(binary, "bench", "modbus", "--de", "--realtime", "--serial", master, "--count", str(count)))
    load = busy_load(procs)
    try:
        de_plain = json.loads(sh(binary, "bench", "modbus", "--de", "--serial", master, "--count", str(count)))
        de = json.loads(sh(binary, "bench", "modbus", "--de", "--realtime", "--serial", master, "--count", str(count)))
    finally:
        for p in load:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    env = dict(os.environ, LD_PRELOAD=str(OUT / "malloc_count.so"))
    alloc = json.loads(sh(binary, "bench", "poll", "--serial", master, "--cycles", "200", env=env))
    return {"ours": ours, "peer": peer, "paced": paced, "ir_ours": ir_ours, "ir_peer": ir_peer, "ir_transactions": n,
            "de": de, "de_plain": de_plain, "de_idle": de_idle, "alloc": alloc}


SCAN_SUMMARY = re.compile(r"scan: (\d+) probes in ([0-9.]+) s, physical minimum ([0-9.]+) s")


def scan_figures(binary, procs, tmp):
    """Issue 14: `meterext scan` over the whole address range against the simulator at address 247 (the worst
    case; a pty can only do 8N1, so the 8E1/8O1 settings are skipped), timed against the physical minimum of the
    same probes (request + reply on the wire and a t3.5 gap after each), which scan prints."""
    master, slave = pty_pair(procs, tmp, "scan")
    procs.start([binary, "simulate", "--serial", slave, "--parity", "none", "--address", "247"])
    time.sleep(0.5)
    started = time.monotonic()
    result = subprocess.run([binary, "scan", "--serial", master], capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    m = SCAN_SUMMARY.search(result.stderr)
    if result.returncode != 0 or not m or "address 247" not in result.stdout:
        raise RuntimeError(f"scan failed: {result.stdout} {result.stderr[-500:]}")
    return {"probes": int(m.group(1)), "seconds": float(m.group(2)), "minimum": float(m.group(3)), "wall": wall}


def wrk(url, script=None, seconds=10, connections=16, threads=2, cpus=None):
    """`cpus`: run wrk under `taskset -c CPUS` (the load generator on its own core)."""
    args = (["taskset", "-c", cpus] if cpus else []) + ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
                                                        "--latency"]
    if script:
        args += ["-s", script]
    out = sh(*args, url)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def ms(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": ms("50"), "p99_ms": ms("99"), "non2xx": "Non-2xx" in out, "requests": requests}


def post(port, cmd, timeout=5):
    """`cmd`: a command name, or a whole request object (with its parameters)."""
    body = cmd if isinstance(cmd, dict) else {"cmd": cmd}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def smaps_rollup(pid):
    """kB: Rss, Pss, Private_Dirty (+ Private_Clean) of the whole process."""
    fields = {}
    for line in open(f"/proc/{pid}/smaps_rollup"):
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


def mappings(pid):
    """kB of Rss, Pss and Private_Dirty per mapped file (every mapping of one file summed), keyed by the file's
    real path as the kernel shows it (/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3, not the soname)."""
    out, current = {}, None
    for line in open(f"/proc/{pid}/smaps"):
        parts = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = parts[5] if len(parts) > 5 else "[anon]"
            out.setdefault(current, {"Rss": 0, "Pss": 0, "Private_Dirty": 0})
        elif parts and parts[0].rstrip(":") in ("Rss", "Pss", "Private_Dirty"):
            out[current][parts[0].rstrip(":")] += int(parts[1])
    return out


def real(path):
    """One name per file: ldd prints sonames under /lib (a symlink to /usr/lib with merged /usr, and the soname a
    symlink to the versioned file); smaps prints the file the kernel mapped. Both resolve to the same real path."""
    return os.path.realpath(path)


def library_closure(path):
    """Real paths of every shared library `path` loads, transitively (ldd resolves the whole tree)."""
    return {real(l.split("=>")[1].split()[0]) for l in sh("ldd", path).splitlines()
            if "=>" in l and "/" in l.split("=>")[1]}


def needed(path):
    """The sonames `path` names itself (DT_NEEDED), not the ones its libraries bring."""
    return re.findall(r"\(NEEDED\).*\[(.+)\]", sh("readelf", "-d", path))


def libcurl_path():
    for l in sh("ldconfig", "-p").splitlines():
        if l.strip().startswith("libcurl.so.4 ("):
            return real(l.split("=>")[1].strip())
    return None


def curl_costs(binary, pid):
    """What libcurl and the libraries only it brings cost the running service (Rss, Pss per mapped file). Those
    are libcurl's closure minus the closure of every other library the binary links itself (libc, libsodium,
    libsqlite3, ...). `linked` says whether the binary names libcurl
    (DT_NEEDED) or loads it with dlopen at the first transfer (then nothing of it is mapped until one ran)."""
    curl = libcurl_path()
    if curl is None:
        return None
    direct = needed(binary)
    by_soname = {l.split("=>")[0].strip(): real(l.split("=>")[1].split()[0]) for l in sh("ldd", binary).splitlines()
                 if "=>" in l and "/" in l.split("=>")[1]}
    others = set()
    for soname in direct:
        if "libcurl" in soname or soname not in by_soname:
            continue
        others |= {by_soname[soname]} | library_closure(by_soname[soname])
    only_curl = ({curl} | library_closure(curl)) - others
    rows = []
    for path, m in mappings(pid).items():
        if path.startswith("/") and real(path) in only_curl:
            rows.append((pathlib.Path(path).name, m["Rss"], m["Pss"]))
    rows.sort(key=lambda r: -r[1])
    return {"linked": any("libcurl" in n for n in direct), "loaded": any(n.startswith("libcurl") for n, _, _ in rows),
            "libraries": len(only_curl), "mapped": len(rows), "rss_kb": sum(r[1] for r in rows),
            "pss_kb": sum(r[2] for r in rows), "rows": rows}


def largest_mappings(pid, count=24):
    """Rss, Pss, Private_Dirty of the largest mapped files (and [anon], [heap], ...), largest first."""
    rows = [(pathlib.Path(p).name if p.startswith("/") else p, m["Rss"], m["Pss"], m["Private_Dirty"])
            for p, m in mappings(pid).items()]
    return sorted(rows, key=lambda r: -r[1])[:count]


def idle_figures(binary, procs, tmp, seconds=20):
    """Issue 18 goal 2: heap allocations of the whole process (every thread) per Modbus transaction while no
    client asks anything, and the resident memory of that steady state."""
    port = free_port()
    counter = tmp / "idle-allocations"
    # The meter is another process on a pty, as on a board (the in-process simulator's own allocations would be
    # counted with the service's otherwise).
    master, slave = pty_pair(procs, tmp, "idle")
    procs.start([binary, "simulate", "--serial", slave])
    env = dict(os.environ, LD_PRELOAD=str(OUT / "malloc_count.so"), MALLOC_COUNT_FILE=str(counter))
    service = procs.start([binary, "run", "--serial", master, "--parity", "none", "--listen", f"127.0.0.1:{port}",
                           "--state-dir", str(tmp / "idle-state"), "--wifi", "sim"], env=env)
    for _ in range(200):
        try:
            if post(port, "system_status").get("meter_link") == "online":
                break
        except OSError:
            pass
        time.sleep(0.05)
    time.sleep(3)  # every poll group read at least once; start-up work done

    def read_counter():
        return int.from_bytes(counter.read_bytes()[:8], "little")

    t0 = int(post(port, "system_status")["link_errors"]["transactions"])
    m0 = time.monotonic()
    # The request above is the benchmark's own: its connection's close and timers must not count as idle work.
    time.sleep(2)
    a0 = read_counter()
    time.sleep(seconds)
    a1 = read_counter()
    t1 = int(post(port, "system_status")["link_errors"]["transactions"])
    # Transactions counted between the two requests, scaled to the `seconds` the allocations were counted in.
    t1 = t0 + round((t1 - t0) * seconds / (time.monotonic() - m0))
    memory = smaps_rollup(service.pid)
    curl = curl_costs(binary, service.pid)
    largest = largest_mappings(service.pid)
    threads = sorted(pathlib.Path(f"/proc/{service.pid}/task/{t}/comm").read_text().strip()
                     for t in os.listdir(f"/proc/{service.pid}/task"))
    # The first outgoing transfer (request_post to a loopback address: libcurl is set up, then the address policy
    # refuses the connection before any socket exists) loads libcurl when the binary loads it lazily.
    try:
        post_reply = post(port, {"cmd": "request_post", "file_uri": "http://127.0.0.1:9/", "message": "{}"})
    except urllib.error.HTTPError as e:  # the refusal is an error reply (403)
        post_reply = json.loads(e.read() or b"{}")
    time.sleep(1)
    return {"allocations": a1 - a0, "transactions": t1 - t0, "seconds": seconds, "memory": memory, "curl": curl,
            "largest": largest, "threads": threads, "after_transfer": {
                "reply": post_reply, "memory": smaps_rollup(service.pid),
                "curl": curl_costs(binary, service.pid)}}


def http_figures(binary, procs, tmp, seconds):
    """Issue 18: `meter_reading` against nginx serving the same bytes, 16 connections, two ways:
    - separate cores (the headline): servers pinned to the last CPU, one wrk thread pinned to the first. On a board
      the clients are other machines; here a load generator sharing the server's cores measures its own time slices
      (with wrk's two threads and the servers on two shared cores, a request waits whenever its wrk thread is
      descheduled: a p99 of 3-6 ms for the faster server).
    - shared cores: unpinned, wrk's two threads and the server's default event loops on the same cores (as before).
    meterext runs its default loops each time (one per core it may run on); nginx one worker."""
    body = json.dumps({"cmd": "meter_reading"}).encode()
    script = tmp / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.body = \'{"cmd":"meter_reading","id":1}\'\n'
                      'wrk.headers["Content-Type"] = "application/json"\n')
    cpus = sorted(os.sched_getaffinity(0))
    pinned = len(cpus) >= 2
    server_cpu, client_cpu = (str(cpus[-1]), str(cpus[0])) if pinned else (None, None)

    def reading(port, timeout):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body,
                                                                   method="POST"), timeout=1) as r:
                    answer = r.read()
                if json.loads(answer)["meter"][0]["data"]:
                    return answer
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("meterext gave no full reading")

    def meterext(name, cpu=None):
        port = free_port()
        t0 = time.monotonic()
        service = procs.start((["taskset", "-c", cpu] if cpu else []) +
                              [binary, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir",
                               str(tmp / name), "--wifi", "sim"])
        first = None
        while time.monotonic() - t0 < 20 and first is None:
            try:
                with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/api", data=body,
                                                                   method="POST"), timeout=1) as r:
                    r.read()
                    first = time.monotonic() - t0
            except OSError:
                time.sleep(0.002)
        return service, port, first, reading(port, 10)

    def stop(p):
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)

    def measure(pid, url, lua, cpus, threads):
        cpu = cpu_seconds(pid)
        result = wrk(url, lua, seconds, threads=threads, cpus=cpus)
        result["cpu_us_per_request"] = cpu_per_request(cpu_seconds(pid) - cpu, result)
        return result

    www = tmp / "www"
    www.mkdir()
    nport = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/json;
  server {{ listen 127.0.0.1:{nport}; root {www}; }} }}
""")

    def nginx(cpu=None):
        master = procs.start((["taskset", "-c", cpu] if cpu else []) + ["nginx", "-c", str(conf), "-p", str(tmp)])
        time.sleep(0.5)
        return master, int(sh("pgrep", "-P", str(master.pid)).split()[0])

    results = {"pinned": pinned, "server_cpu": server_cpu, "client_cpu": client_cpu}
    # Shared cores first: this service is also the memory figure (the board's default: one loop per core).
    service, port, first, answer = meterext("state")
    (www / "reading.json").write_bytes(answer)
    results["mem_before"] = smaps_rollup(service.pid)
    results["shared"] = {"ours": measure(service.pid, f"http://127.0.0.1:{port}/api", str(script), None, 2)}
    results["mem_after"] = smaps_rollup(service.pid)
    results["event_loops_shared"] = event_loops(service.pid)
    stop(service)
    master, worker = nginx()
    results["shared"]["nginx"] = measure(worker, f"http://127.0.0.1:{nport}/reading.json", None, None, 2)
    stop(master)
    if pinned:
        service, port, _, _ = meterext("state-pinned", server_cpu)
        results["event_loops_pinned"] = event_loops(service.pid)
        results["separate"] = {"ours": measure(service.pid, f"http://127.0.0.1:{port}/api", str(script),
                                               client_cpu, 1)}
        stop(service)
        master, worker = nginx(server_cpu)
        results["separate"]["nginx"] = measure(worker, f"http://127.0.0.1:{nport}/reading.json", None, client_cpu, 1)
        stop(master)
    results.update(first_answer_ms=first * 1000 if first else None, reply_bytes=len(answer))
    return results


def event_loops(pid):
    return sum(1 for t in os.listdir(f"/proc/{pid}/task")
               if pathlib.Path(f"/proc/{pid}/task/{t}/comm").read_text().startswith("NIO-ELT"))


def cpu_seconds(pid):
    """User + system CPU time of one process (all its threads) from /proc/PID/stat."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(cpu, result):
    """Issue 18: CPU µs per request: on a shared machine steadier than requests/s (it does not count waiting)."""
    return cpu / max(1, result["requests"]) * 1e6


def binary_size(binary, tmp):
    stripped = tmp / "meterext.stripped"
    shutil.copy(binary, stripped)
    sh("strip", str(stripped))
    return os.path.getsize(binary), os.path.getsize(stripped), sh("ldd", binary)


def order_file_coverage(binary):
    """How much of board/meterext.order (the link order of the executed functions) the binary still defines: a
    list older than the code only costs resident memory, and this says when to regenerate it."""
    listed = (ROOT / "board" / "meterext.order").read_text().split()
    defined = set(sh("nm", "--defined-only", "--format=just-symbols", binary).split())
    return {"listed": len(listed), "found": sum(1 for name in listed if name in defined)}


def ratio(ours, peer):
    return ours / peer if peer else float("nan")


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def mqtt_backlog_figures(binary, tmp):
    """Issue 16: a backlog of 10 000 intervals drained into a local Mosquitto by the real uplink; publish rate and
    memory (Tests/bench/fleet.py)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import fleet
    return fleet.backlog_figures(binary, tmp / "mqtt-backlog", backlog=10_000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--idle-seconds", type=int, default=20)
    ap.add_argument("--only", default="",
                    help="comma-separated parts (modbus, idle, http, scan, modbus_tcp, history, mqtt, size): run only "
                         "those and print their figures as JSON; docs/benchmarks.md is left as it is")
    args = ap.parse_args()
    only = {p for p in args.only.split(",") if p}
    # Page-cache pages of a file written moments ago (a binary just linked or copied) are dirty until written back,
    # and smaps counts them as the process's Private_Dirty: write them back first.
    os.sync()
    command = "make bench" + (f" BENCH_ARGS=\"{' '.join(sys.argv[3:])}\"" if len(sys.argv) > 3 else "")
    build_peers()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="meterext-bench-"))
    results = {}
    for name, run in [("modbus", lambda p: modbus_figures(args.bin, p, tmp, args.count)),
                      ("idle", lambda p: idle_figures(args.bin, p, tmp, args.idle_seconds)),
                      ("http", lambda p: http_figures(args.bin, p, tmp, args.seconds)),
                      ("scan", lambda p: scan_figures(args.bin, p, tmp)),
                      # Issue 17: Modbus TCP server and the poll cycle under TCP load (Tests/bench/modbus_tcp_bench.py).
                      ("modbus_tcp", lambda p: __import__("modbus_tcp_bench").modbus_tcp_figures(args.bin, p, tmp,
                                                                                                   args.seconds)),
                      # Issue 15: load-profile storage writes and meter_history time (Tests/bench/history_bench.py).
                      ("history", lambda p: __import__("history_bench").history_figures(args.bin, p, tmp))]:
        if only and name not in only:
            continue
        procs = Procs()
        try:
            results[name] = run(procs)
        finally:
            procs.stop()
        print(f"bench: {name} done", file=sys.stderr)
    if only:
        if "mqtt" in only:
            results["mqtt"] = mqtt_backlog_figures(args.bin, tmp)
        if "size" in only:
            size, stripped, ldd = binary_size(args.bin, tmp)
            results["size"] = {"bytes": size, "stripped_bytes": stripped, "ldd": ldd,
                               "order_file": order_file_coverage(args.bin)}
        for r in results.values():
            if isinstance(r, dict) and "ours" in r and "peer" in r and "transactions" in r["ours"]:
                for side in ("ours", "peer"):
                    r[side]["cpu_us_per_transaction"] = r[side]["cpu_seconds"] / max(1, r[side]["transactions"]) * 1e6
        if "idle" in results:
            i = results["idle"]
            i["allocations_per_transaction"] = i["allocations"] / max(1, i["transactions"])
        if "http" in results:
            h = results["http"]
            for how in ("separate", "shared"):
                if how in h:
                    h[how]["ratio"] = ratio(h[how]["ours"]["rps"], h[how]["nginx"]["rps"])
                    h[how]["cpu_ratio"] = ratio(h[how]["ours"]["cpu_us_per_request"],
                                                h[how]["nginx"]["cpu_us_per_request"])
        print(json.dumps(results, indent=1, default=str))
        return
    m, idle, http, scan = results["modbus"], results["idle"], results["http"], results["scan"]
    from modbus_tcp_bench import markdown as modbus_tcp_markdown
    modbus_tcp = results["modbus_tcp"]
    from history_bench import markdown as history_markdown
    history = results["history"]
    ours, peer, alloc = m["ours"], m["peer"], m["alloc"]
    mqtt = mqtt_backlog_figures(args.bin, tmp)  # issue 16
    size, stripped, ldd = binary_size(args.bin, tmp)
    order = order_file_coverage(args.bin)
    cpu_ours = ours["cpu_seconds"] / ours["transactions"] * 1e6
    cpu_peer = peer["cpu_seconds"] / peer["transactions"] * 1e6
    commit = sh("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD").strip()
    dirty = " (with uncommitted changes)" if sh("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no").strip() else ""
    libs = ", ".join(sorted({l.split()[0] for l in ldd.splitlines() if "=>" in l}))
    de, de_plain, de_idle = m["de"], m["de_plain"], m["de_idle"]
    t35 = de["t35_us"]
    per_tx = idle["allocations"] / max(1, idle["transactions"])
    mem = idle["memory"]
    hb, ha = http["mem_before"], http["mem_after"]
    curl = idle["curl"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Measured {now} at commit `{commit}`{dirty} on this project's 2-core x86_64 Debian 12 machine with "
        f"`{command}` (release build `{pathlib.Path(args.bin).name}`, `--count {args.count}`, wrk {args.seconds} s, "
        "2 threads, 16 connections). Figures, not tests: nothing here is asserted. Other sessions' builds may share "
        "the machine, so compare ratios within one run; instruction counts (callgrind) do not depend on the load.",
        "",
        "## Modbus master vs libmodbus (same simulator, same pty, 9600 8N1, FC03 × 52 registers)",
        "",
        "| | meterext | libmodbus 3.1.6 | ratio (goal) |",
        "|---|---|---|---|",
        f"| instructions per transaction (callgrind, user space) | {m['ir_ours']:.0f} | {m['ir_peer']:.0f} | "
        f"{ratio(m['ir_ours'], m['ir_peer']):.2f} (≤ 1) |",
        f"| CPU per transaction (getrusage, user + system) | {cpu_ours:.0f} µs | {cpu_peer:.0f} µs | "
        f"{ratio(cpu_ours, cpu_peer):.2f} (≤ 1) |",
        f"| wake-ups per transaction (voluntary context switches) | {ours['voluntary_switches_per_transaction']:.2f} | "
        f"{peer['voluntary_switches_per_transaction']:.2f} | |",
        f"| CPU per transaction, paced as a poll loop ({PACED_GAP_US // 1000} ms idle between, inside the call) | "
        f"{m['paced']['ours']['in_call_cpu_us_per_transaction']:.0f} µs | "
        f"{m['paced']['peer']['in_call_cpu_us_per_transaction']:.0f} µs | "
        f"{ratio(m['paced']['ours']['in_call_cpu_us_per_transaction'], m['paced']['peer']['in_call_cpu_us_per_transaction']):.2f} (≤ 1) |",
        f"| transactions per second | {ours['transactions'] / ours['wall_seconds']:.1f} | "
        f"{peer['transactions'] / peer['wall_seconds']:.1f} | |",
        f"| failed | {ours['failed']:.0f} | {peer['failed']} | |",
        "",
        f"Instructions are counted by `valgrind --tool=callgrind` over {m['ir_transactions']} transactions, only inside "
        "the transaction call (`--toggle-collect`: `BenchCommand.benchTransaction` for meterext, "
        "`modbus_read_registers` for libmodbus), so process start-up and the benchmark loop are not counted. "
        "Both run without a direction line here (as with an auto-direction adapter). meterext keeps t3.5 of silence "
        "before every request, as the spec asks; libmodbus does not, which shows in the wall time per transaction and, "
        "back to back, as one more wake-up (sleep) per transaction in the CPU time. The paced row idles "
        f"{PACED_GAP_US // 1000} ms between reads on both sides, as a poll loop does (the line is then already quiet "
        "and meterext does not wait); it counts this thread's CPU inside the transaction call (CLOCK_THREAD_CPUTIME_ID).",
        "",
        "## Heap allocations",
        "",
        f"- Whole process, nobody asking (`meterext run` against the simulator in its own process on a pty, every "
        f"thread, {idle['seconds']} s): "
        f"**{per_tx:.2f} per Modbus transaction** (goal ≤ 0.5): {idle['allocations']} allocations over "
        f"{idle['transactions']} transactions. Threads: {', '.join(idle['threads'])}.",
        f"- Poll thread alone: {alloc['allocations_per_cycle']:.3f} per poll cycle (goal 0): {alloc['allocations']:.0f} "
        f"over {alloc['cycles']:.0f} cycles (basic block and relay every cycle, energy and demand every 0.2 s).",
        "",
        "Counted by an LD_PRELOAD malloc/calloc/realloc/memalign counter (`Tests/bench/malloc_count.c`), per thread "
        "and for the whole process.",
        "",
        "## RS485 turnaround (DE line held like a GPIO direction pin)",
        "",
        f"Computed end of the last stop bit → DE released (one character = {de['character_time_us']:.0f} µs, "
        f"t3.5 = {t35:.0f} µs at 9600 8N1; goal: max ≤ t3.5 under load). Load: one busy process per core at normal "
        "priority.",
        "",
        "| | p50 | max | max / t3.5 |",
        "|---|---|---|---|",
        f"| idle machine, SCHED_FIFO {'on' if de_idle['sched_fifo'] else 'refused'} | "
        f"{de_idle['de_release_after_last_stop_bit_us_p50']:.0f} µs | {de_idle['de_release_after_last_stop_bit_us_max']:.0f} µs | "
        f"{de_idle['de_release_after_last_stop_bit_us_max'] / t35:.2f} |",
        f"| under load, normal scheduling (before issue 18) | {de_plain['de_release_after_last_stop_bit_us_p50']:.0f} µs | "
        f"{de_plain['de_release_after_last_stop_bit_us_max']:.0f} µs | {de_plain['de_release_after_last_stop_bit_us_max'] / t35:.2f} |",
        f"| under load, SCHED_FIFO {'on' if de['sched_fifo'] else 'refused'} (the poll thread on a board) | "
        f"{de['de_release_after_last_stop_bit_us_p50']:.0f} µs | {de['de_release_after_last_stop_bit_us_max']:.0f} µs | "
        f"**{de['de_release_after_last_stop_bit_us_max'] / t35:.2f}** |",
        "",
        f"DE asserted → first byte written: p50 {de['de_assert_to_first_byte_us_p50']:.2f} µs, "
        f"max {de['de_assert_to_first_byte_us_max']:.2f} µs. On a pty there is no UART to confirm the end of the "
        "frame, so this measures the computed wait and the scheduler's wake-up latency; on a Pi the TEMT "
        "confirmation adds the UART's own lag.",
        "",
        "## HTTP: `meter_reading` vs nginx serving the same JSON as a static file",
        "",
    ]
    for how, title in (("separate", f"wrk (1 thread) on CPU {http['client_cpu']}, the server on CPU "
                                    f"{http['server_cpu']} ({http.get('event_loops_pinned')} event loop): **the goal's figure**"),
                       ("shared", f"shared cores: wrk (2 threads) and the server ({http['event_loops_shared']} event "
                                  "loops) unpinned on the same cores")):
        if how not in http:
            continue
        o, n = http[how]["ours"], http[how]["nginx"]
        lines += [
            f"{title}:",
            "",
            "| | meterext (POST /api) | nginx 1.22 (GET static file, 1 worker) | ratio (goal) |",
            "|---|---|---|---|",
            f"| requests per second | {o['rps']:.0f} | {n['rps']:.0f} | **{ratio(o['rps'], n['rps']):.2f}** (≥ 1.0) |",
            f"| latency p50 | {o['p50_ms']:.2f} ms | {n['p50_ms']:.2f} ms | |",
            f"| latency p99 | {o['p99_ms']:.2f} ms | {n['p99_ms']:.2f} ms | (< 2 ms) |",
            f"| CPU per request (user + system, whole server) | {o['cpu_us_per_request']:.1f} µs | "
            f"{n['cpu_us_per_request']:.1f} µs | {ratio(o['cpu_us_per_request'], n['cpu_us_per_request']):.2f} |",
            "",
        ]
    lines += [
        f"Reply body {http['reply_bytes']} bytes, 16 connections, {args.seconds} s per run, one server at a time. "
        "meterext runs its default event loops: one per core it may run on (pinned to one CPU: one). On a board the "
        "clients are other machines; with wrk on the server's cores a request also waits whenever its wrk thread is "
        "descheduled, which is what the shared-cores p99 shows. Start to first answered `/api` request: "
        f"{http['first_answer_ms']:.0f} ms.",
        "",
        "## Memory (from /proc/PID/smaps_rollup)",
        "",
        "| | private dirty (goal ≤ 4 MB) | PSS | RSS (goal ≤ 16 MB) |",
        "|---|---|---|---|",
        f"| steady state, nobody asking | {mb(mem['Private_Dirty'])} | {mb(mem['Pss'])} | {mb(mem['Rss'])} |",
        f"| before the wrk load | {mb(hb['Private_Dirty'])} | {mb(hb['Pss'])} | {mb(hb['Rss'])} |",
        f"| after {args.seconds} s of wrk (16 connections) | {mb(ha['Private_Dirty'])} | {mb(ha['Pss'])} | {mb(ha['Rss'])} |",
        "",
    ]
    if curl:
        after = idle["after_transfer"]["curl"]
        how = ("the binary links libcurl" if curl["linked"] else
               "libcurl is loaded with dlopen at the first transfer")
        lines += [
            f"libcurl and the {curl['libraries'] - 1} libraries only it brings (firmware, file and POST transfers; "
            f"{how}): **{mb(curl['rss_kb'])} resident, {mb(curl['pss_kb'])} PSS** in the steady state above; after "
            f"the first transfer {mb(after['rss_kb'])} resident, {mb(after['pss_kb'])} PSS "
            f"(whole process then {mb(idle['after_transfer']['memory']['Rss'])} RSS). Largest: "
            + ", ".join(f"{n} {r} kB RSS / {p} kB PSS" for n, r, p in after["rows"][:8]) + ".",
            "",
            "Largest mappings in the steady state (kB RSS / PSS / private dirty): "
            + ", ".join(f"{n} {r}/{p}/{d}" for n, r, p, d in idle["largest"][:12]) + ".",
            "",
        ]
    lines += [
        "## `meterext scan`: full scan vs its physical minimum",
        "",
        f"Meter (simulator) at address 247, 9600 8N1 on a pty: found after {scan['probes']} probes in "
        f"{scan['seconds']:.2f} s (process wall time {scan['wall']:.2f} s); the physical minimum of the same probes "
        f"(8-byte request and 9-byte reply on the wire, a t3.5 gap after each) is {scan['minimum']:.2f} s: "
        f"{scan['seconds'] / scan['minimum']:.2f}× (goal ≤ 1.5×). A pty delivers bytes instantly, so the wait per "
        "silent address is what counts: t3.5 + the reply's wire time + the 15 ms latency margin.",
        "",
        *modbus_tcp_markdown(modbus_tcp).splitlines(),
        *history_markdown(history).splitlines(),
        "",
        "## Binary",
        "",
        f"`{args.bin.replace(str(ROOT) + '/', '')}`: {size / 1e6:.1f} MB, **stripped {stripped / 1e6:.1f} MB** "
        "(goal ≤ 18 MB). Swift runtime linked statically; shared libraries: " + libs + ".",
        "",
        f"Link order (`board/meterext.order`, the functions a running gateway executes, laid out first): "
        f"{order['found']} of its {order['listed']} names are defined in this binary"
        + (" — regenerate it (`Tests/bench/order_file.py`)." if order["found"] < 0.9 * order["listed"] else "."),
        "",
        "## MQTT uplink: a backlog of 10 000 intervals (issue 16)",
        "",
        f"{mqtt['intervals']:.0f} intervals drained into a local Mosquitto in {mqtt['seconds']:.2f} s "
        f"({mqtt['intervals_per_s']:.0f} per second, QoS 1, at most {mqtt['window']:.0f} in flight; peak in flight "
        f"{mqtt['peak_in_flight']:.0f}). Resident memory {mqtt['rss_before_kib'] / 1024:.1f} MB before, "
        f"{mqtt['rss_peak_kib'] / 1024:.1f} MB at its peak: the backlog stays in the store. Fleet figures: "
        "[fleet.md](fleet.md).",
        "",
        "Reproduce: `make bench` (set `BENCH_ARGS=\"--count 1000 --seconds 30\"` for longer runs).",
        "",
    ]
    text = "\n".join(lines)
    notes = ROOT / "Tests" / "bench" / "notes.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
