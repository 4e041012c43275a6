"""The service as the board runs it, for the hostile tests of issue 12 (updates, outgoing requests, CLI files):
user nobody, no capabilities beyond CAP_NET_BIND_SERVICE, no new privileges, in a state directory it owns.

The lead's Tests/integration/conftest.py gets a shared `service_cmd()`/`start_service(..., unprivileged=True)`;
until then these tests use this one (same setpriv flags)."""
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

NOBODY = pwd.getpwnam("nobody")


def as_nobody(args):
    return ["setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups",
            "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
            "--bounding-set=-all,+net_bind_service", "--no-new-privs", *args]


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
    """The (single) child process of `parent`, e.g. the service under a supervisor shell loop."""
    with open(f"/proc/{parent}/task/{parent}/children") as f:
        children = f.read().split()
    return int(children[0]) if children else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
