"""Run `meterext run` the way the board's systemd unit runs it (issue 12, item 0).

The unit (board/systemd/meterext.service) starts the service as the unprivileged `meterext` user with only
CAP_NET_BIND_SERVICE, NoNewPrivileges=yes, SupplementaryGroups=dialout, ProtectSystem=strict (everything read-only but
the state directory) and PrivateTmp=yes. Tests that ran the service as root never saw what that forbids (a socket
option that needs CAP_NET_ADMIN reset every connection), so every test that starts the service goes through
`board_argv`: bubblewrap makes the root file system read-only with a private /tmp, setpriv drops to user `nobody`
with exactly the unit's capability set.

Only root can do that; a test run by an ordinary user already runs the service unprivileged and gets the argv as it
is. METEREXT_TEST_AS_ROOT=1 turns the wrapper off (for debugging a test by hand, never in CI).
"""
import grp
import os
import pathlib
import pwd
import shutil
import subprocess
import time

USER = "nobody"
GROUP = "nogroup"
SUPPLEMENTARY = "dialout"       # the unit's SupplementaryGroups= that exists on every Debian system
CAPS = "net_bind_service"        # the unit's AmbientCapabilities= and CapabilityBoundingSet=


def enabled():
    return os.geteuid() == 0 and os.environ.get("METEREXT_TEST_AS_ROOT") != "1"


def _require_tools():
    missing = [t for t in ("bwrap", "setpriv") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"missing {' '.join(missing)}: `make deps-test` installs bubblewrap (setpriv is util-linux)")


def make_traversable(path):
    """The service user must reach files the test made under /tmp/pytest-of-root (mode 0700): give every parent
    directory the search bit for others (not read: nothing is listed)."""
    p = pathlib.Path(path).resolve()
    for d in [p, *p.parents]:
        if d.is_dir():
            mode = d.stat().st_mode
            if not mode & 0o001:
                os.chmod(d, (mode & 0o7777) | 0o001)


def service_dir(path):
    """Create `path` owned by the service user (as StateDirectory= does) and return it as a string."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if enabled():
        make_traversable(path.parent)
        os.chown(path, pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid)
        os.chmod(path, 0o750)
    return str(path)


def serial_device(path):
    """Give a pseudo-terminal (or a symlink to one) to the dialout group, as udev does for /dev/ttyAMA0."""
    if enabled():
        real = os.path.realpath(path)
        os.chown(real, 0, grp.getgrnam(SUPPLEMENTARY).gr_gid)
        os.chmod(real, 0o660)
        make_traversable(os.path.dirname(path))
    return path


def board_argv(argv, writable=(), readable=()):
    """argv wrapped to run as the board runs it. `writable`: the state directory (and any other ReadWritePaths);
    `readable`: paths under /tmp the service must see (hidden by the private /tmp otherwise), e.g. a pty symlink's
    folder or a config file."""
    if not enabled():
        return list(argv)
    _require_tools()
    wrap = ["bwrap", "--die-with-parent", "--ro-bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp"]
    binary = os.path.realpath(argv[0])
    binary_dir = os.path.dirname(binary)
    if binary_dir == "/tmp" or binary_dir.startswith("/tmp/"):
        # A checkout under /tmp (CI's clone may be one): keep the binary visible in the private /tmp, by its real
        # path (.build/debug is a link that would point nowhere there).
        readable = [*readable, binary_dir]
        argv = [binary, *argv[1:]]
    for p in readable:
        make_traversable(p)
        # bwrap makes the mount point's parents in the private /tmp as root 0700: the service must search them.
        parents = [d for d in reversed(pathlib.Path(p).resolve().parents) if str(d).startswith("/tmp/")]
        for d in parents:
            wrap += ["--perms", "0711", "--dir", str(d)]
        wrap += ["--ro-bind", str(p), str(p)]
    for p in writable:
        wrap += ["--bind", str(p), str(p)]
    gid = grp.getgrnam(SUPPLEMENTARY).gr_gid
    drop = ["setpriv", f"--reuid={USER}", f"--regid={GROUP}", f"--groups={gid}", "--no-new-privs",
            f"--inh-caps=-all,+{CAPS}", f"--ambient-caps=-all,+{CAPS}", f"--bounding-set=-all,+{CAPS}"]
    make_traversable(binary_dir)
    return wrap + ["--"] + drop + ["--"] + list(argv)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


WRAPPERS = ("bwrap", "setpriv")


def service_descendant(pid, wrappers=WRAPPERS):
    """The first process below `pid` (following first children) that is none of `wrappers`: meterext under
    bwrap and setpriv (and a supervisor shell, when the caller names "sh"); None while there is none yet."""
    level = [pid]
    while level:
        pid = level[0]
        if _comm(pid) not in wrappers:
            return pid
        level = _children(pid)
    return None


class BoardProcess(subprocess.Popen):
    """A Popen of `board_argv(...)`: `service_pid()` and signals (terminate, kill, send_signal) reach meterext
    itself, not the bwrap process that waits for it; poll()/wait() see meterext's exit through bwrap."""

    def service_pid(self, timeout=10.0):
        if not enabled():
            return self.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll() is None:
            pid = service_descendant(self.pid)
            if pid is not None:
                return pid
            time.sleep(0.01)
        raise RuntimeError(f"no meterext process under bwrap pid {self.pid}")

    def send_signal(self, sig):
        if self.poll() is not None:
            return
        try:
            os.kill(self.service_pid(), sig)
        except (ProcessLookupError, RuntimeError):
            pass
