"""The service under test runs as the board's systemd unit runs it (issue 12, item 0): every suite starts it through
Tests/support/boardrun.py. These checks make sure that wrapper really confines it, so the other suites cannot
silently fall back to testing a root process."""
import os
import urllib.request

import pytest

from integration_conftest import start_service

CAP_NET_BIND_SERVICE = 1 << 10


def status_fields(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


@pytest.mark.skipif(os.geteuid() != 0, reason="run as an ordinary user, the service is unprivileged already")
def test_service_runs_unprivileged_with_only_the_units_capability(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    pid = procs.procs[-1].service_pid()
    st = status_fields(pid)
    uids = st["Uid"].split()
    assert uids[0] == uids[1] == str(65534), f"service runs as uid {uids}, not nobody"
    assert int(st["CapEff"], 16) == CAP_NET_BIND_SERVICE
    assert int(st["CapBnd"], 16) == CAP_NET_BIND_SERVICE
    assert st["NoNewPrivs"] == "1"
    # ProtectSystem=strict: "/" is mounted read-only in the service's mount namespace, the state dir is writable.
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = {line.split()[4]: line.split()[5] for line in f}
    assert mounts["/"].split(",")[0] == "ro"
    assert mounts[str(tmp_path / "st")].split(",")[0] == "rw"
    # The API answers such a process (a socket option that needs CAP_NET_ADMIN used to reset every connection).
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        assert r.status == 200
