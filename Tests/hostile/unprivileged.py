"""The service as the board runs it, for the hostile tests of issue 12 (updates, outgoing requests, CLI files):
Tests/support/boardrun.py's `board_argv` (bubblewrap read-only root and private /tmp, setpriv to user nobody with
only CAP_NET_BIND_SERVICE, no new privileges) around `meterext run`, in a state directory nobody owns, and the CLI
as root beside it."""
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from boardrun import WRAPPERS, board_argv, enabled, service_descendant  # noqa: E402

NOBODY = pwd.getpwnam("nobody")
if not enabled():
    raise RuntimeError("these tests check files across users: run them as root (without METEREXT_TEST_AS_ROOT)")


def as_nobody(board, args, writable=(), readable=()):
    """`args` (a `meterext run`) as the board's unit runs it: the state directory writable, the board's folder
    (keys, fake programs) visible read-only."""
    return board_argv(args, writable=[board.state, *writable], readable=[board.root, *readable])


class Board:
    """A state directory owned by nobody in a world-traversable temporary directory (pytest's tmp_path is 0700)."""

    def __init__(self, binary):
        self.bin = binary
        self.root = tempfile.mkdtemp(prefix="meterext-hostile-")
        os.chmod(self.root, 0o755)
        self.state = os.path.join(self.root, "state")
        os.mkdir(self.state, 0o700)
        os.chown(self.state, NOBODY.pw_uid, NOBODY.pw_gid)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def run_args(self, port, *extra):
        return [self.bin, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir", self.state,
                "--wifi", "sim", "--poll-interval", "0.3", *extra]

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def api(port, body, timeout=10, path="/api"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_json(port, body, timeout=10):
    return json.loads(api(port, body, timeout)[1])


def wait_healthy(port, timeout=30, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}")
            time.sleep(0.2)
    raise RuntimeError(f"no /healthz on port {port} within {timeout} s")


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


def service_pid(board):
    """The pid the service wrote into its lock file."""
    with open(os.path.join(board.state, "service.lock")) as f:
        return json.load(f)["pid"]


def child_pid(parent):
    """The meterext process under `parent` (a supervisor shell loop), below bwrap and setpriv; None if none now."""
    pid = service_descendant(parent, WRAPPERS + ("sh",))
    return None if pid == parent else pid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
