"""Shared by soak.py and powercut.py: processes, the pty bus, HTTP calls, /proc figures. Standard library only."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from boardrun import BoardProcess, board_argv, serial_device, service_dir  # noqa: E402,F401


def binary() -> str:
    path = os.environ.get("METEREXT_BIN", "")
    if not path or not os.access(path, os.X_OK):
        sys.exit(f"METEREXT_BIN must name the meterext binary (got {path!r})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, body: dict, timeout: float = 5.0):
    """POSTs one /api command; returns (status, decoded JSON or None, raw bytes). Raises OSError on no connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/api", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    return resp.status, doc, raw


def wait_for_api(port: int, proc: subprocess.Popen, seconds: float) -> float:
    """Seconds until system_status answers; raises if the process died or time ran out."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode} before the API answered")
        try:
            status, doc, _ = api(port, {"cmd": "system_status"}, timeout=2)
            if status == 200 and doc and doc.get("result") == "OK":
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"API on port {port} did not answer within {seconds} s")


class PtyBus:
    """A socat pty pair: the simulator on `meter`, the service on `gateway`."""

    def __init__(self, directory: str):
        if not shutil.which("socat"):
            sys.exit("socat is needed (apt-get install socat)")
        self.meter = os.path.join(directory, "meter")
        self.gateway = os.path.join(directory, "gateway")
        self.proc = subprocess.Popen(
            ["socat", "-d", f"pty,raw,echo=0,link={self.meter}", f"pty,raw,echo=0,link={self.gateway}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not (os.path.exists(self.meter) and os.path.exists(self.gateway)):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.05)
        serial_device(self.meter)
        serial_device(self.gateway)

    def close(self):
        stop(self.proc)


def start_service(argv, work, state_dir, log):
    """`meterext run …` as the board's unit runs it (Tests/support/boardrun.py): unprivileged, read-only root but
    `state_dir`, `work` (pty links) readable."""
    return BoardProcess(board_argv(argv, writable=[service_dir(state_dir)], readable=[work]),
                        stdout=log, stderr=subprocess.STDOUT)


def stop(proc, sig=signal.SIGTERM, wait=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
