"""Fixtures for meterext's integration tests: real processes, real ptys (socat), real peers (pymodbus, mbpoll)."""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = sys.executable
sys.path.insert(0, str(ROOT / "Tests" / "support"))
from boardrun import BoardProcess, board_argv, serial_device, service_dir  # noqa: E402  (the service runs as the board runs it)
import leakcheck  # noqa: E402  (no meterext outlives the session)


def meterext_bin():
    return os.environ.get("METEREXT_BIN", str(ROOT / ".build" / "debug" / "meterext"))


pytest_sessionstart, pytest_sessionfinish = leakcheck.hooks(meterext_bin)


@pytest.fixture(scope="session")
def bin_path():
    path = meterext_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"meterext binary not found at {path}: run `swift build` or set METEREXT_BIN")
    return path


class Processes:
    def __init__(self):
        self.procs = []

    def start(self, args, ready=None, timeout=15, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = BoardProcess(args, text=True, start_new_session=True, **kw)
        self.procs.append(proc)
        if ready:
            deadline = time.time() + timeout
            line = ""
            while time.time() < deadline:
                line = proc.stdout.readline()
                if ready in line:
                    return proc
                if proc.poll() is not None:
                    break
            err = proc.stderr.read() if proc.poll() is not None else ""
            raise RuntimeError(f"{args[0]} did not get ready ({line!r}): {err}")
        return proc

    def log_of(self, index):
        """What a process that has exited said on stderr (for a failure message); '' while it runs."""
        proc = self.procs[index]
        if proc.poll() is None or proc.stderr is None:
            return ""
        return proc.stderr.read()[-2000:]

    def stop_all(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.stop_all()


def pty_pair(procs, directory, name):
    """A linked pseudo-terminal pair made by socat; returns the two paths."""
    a, b = directory / f"{name}-a", directory / f"{name}-b"
    procs.start(["socat", "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 5
    while not (a.exists() and b.exists()):
        if time.time() > deadline:
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.02)
    return serial_device(str(a)), serial_device(str(b))


@pytest.fixture
def pty(procs, tmp_path):
    return pty_pair(procs, tmp_path, "bus")


# Known values for the pymodbus KPM33B peer (register address -> float).
KNOWN_FLOATS = {
    0x0030: 231.5, 0x0032: 229.8, 0x0034: 233.1,      # phase voltages V
    0x0036: 5.12, 0x0038: 3.07, 0x003A: 0.48,          # phase currents A
    0x003C: 400.1, 0x003E: 399.2, 0x0040: 401.0,       # line voltages
    0x0042: 1150.0, 0x0044: 690.5, 0x0046: -95.25,     # phase active power W (C exports)
    0x0048: 1745.25,                                   # total active power W
    0x004A: 120.0, 0x004C: -80.5, 0x004E: 10.0, 0x0050: 49.5,
    0x0052: 1180.0, 0x0054: 705.0, 0x0056: 110.0, 0x0058: 1995.0,
    0x005A: 0.975, 0x005C: 0.979, 0x005E: -0.866, 0x0060: 0.875,
    0x0062: 49.98,
    0x0068: 1520.125, 0x006A: 980.5, 0x006C: 310.25,   # forward active energy per phase kWh
    0x006E: 1.5, 0x0070: 0.25, 0x0072: 220.75,         # reverse active per phase
    0x0074: 150.5, 0x0076: 98.0, 0x0078: 20.0,
    0x007A: 5.0, 0x007C: 2.5, 0x007E: 60.25,
    0x0080: 3033.375, 0x0082: 2810.875, 0x0084: 222.5,
    0x0086: 336.25, 0x0088: 268.5, 0x008A: 67.75,
    0x008C: 400.0, 0x008E: 1300.5, 0x0090: 900.25, 0x0092: 432.625,
    0x0094: 50.0, 0x0096: 120.0, 0x0098: 100.0, 0x009A: 66.25,
    0x0200: 1500.0, 0x0202: 800.0, 0x0204: 150.0,
}
for month in range(13):
    KNOWN_FLOATS[0x009C + 2 * month] = 3000.0 - 100 * month       # combined active history
    KNOWN_FLOATS[0x00D0 + 2 * month] = 400.0 - 10 * month         # sharp active history
    KNOWN_FLOATS[0x016C + 2 * month] = 430.0 - 12.5 * month       # valley active history (last run of actives)
KNOWN_SERIAL = "33B0000126777"
KNOWN_WORDS = {0x001E: 0xDD22, 0x0026: 7, 0x0023: (26 << 8) | 11, 0x0024: (21 << 8) | 10, 0x0025: (4 << 8) | 5}


def peer_spec(address=1, relay=1, floats=None, words=None):
    return {"address": address, "serial": KNOWN_SERIAL, "relay": relay,
            "floats": {hex(k): v for k, v in (floats or KNOWN_FLOATS).items()},
            "words": {hex(k): v for k, v in (words or KNOWN_WORDS).items()}}


def start_peer(procs, tmp_path, port, **spec):
    path = tmp_path / "peer.json"
    path.write_text(json.dumps(peer_spec(**spec)))
    return procs.start([PYTHON, str(HERE / "kpm33b_peer.py"), "--port", port, "--spec", str(path)], ready="READY")


@pytest.fixture
def faulty_bus(procs, tmp_path):
    """meterext <-> pair1 <-> fault proxy <-> pair2 <-> pymodbus peer. Yields (path for meterext, control file)."""
    m_a, m_b = pty_pair(procs, tmp_path, "master")
    s_a, s_b = pty_pair(procs, tmp_path, "slave")
    control = tmp_path / "faults"
    control.write_text("")
    procs.start([PYTHON, str(HERE / "fault_proxy.py"), "--master-side", m_b, "--slave-side", s_a,
                 "--control", str(control), "--log", str(tmp_path / "proxy.log")], ready="READY")
    start_peer(procs, tmp_path, s_b)
    return m_a, control


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(bin_path, *args, timeout=60):
    return subprocess.run([bin_path, *args], capture_output=True, text=True, timeout=timeout)


def service_cmd(tmp_path, argv, state):
    """`argv` (a `meterext run …`) as the board's unit runs it: unprivileged, read-only root, `state` writable,
    the test's own folder readable (pty links, config files)."""
    return board_argv(argv, writable=[service_dir(state)], readable=[tmp_path])


def start_service(procs, bin_path, tmp_path, *args, state=None):
    """`meterext run` with the built-in simulator and simulated WiFi on a free port, as the board runs it; returns
    the port once /healthz answers."""
    import urllib.request
    port = free_port()
    state = state or tmp_path / "st"
    procs.start(service_cmd(tmp_path, [bin_path, "run", "--simulate", "--listen", f"127.0.0.1:{port}",
                                       "--state-dir", str(state), "--wifi", "sim", "--poll-interval", "0.3", *args],
                            state))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("meterext run did not answer /healthz within 20 s")


def start_meter_service(procs, bin_path, tmp_path, pty, ready, what, **spec):
    """The pymodbus peer on `pty[1]` (`spec` as for `peer_spec`) and `meterext run` on `pty[0]`, as the board runs
    it; returns the port once `ready(port)` is true (OSError while the service is not up yet counts as not ready)."""
    start_peer(procs, tmp_path, pty[1], **spec)
    port = free_port()
    state = tmp_path / "state"
    procs.start(service_cmd(tmp_path, [bin_path, "run", "--serial", pty[0], "--parity", "none", "--listen",
                                       f"127.0.0.1:{port}", "--state-dir", str(state), "--wifi", "sim",
                                       "--poll-interval", "0.5"], state))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if ready(port):
                return port
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"meterext run never {what}: {procs.log_of(-1)}")
