"""Issue 12, item 6: request_post / download_file never reach loopback, link-local or the board's own addresses,
also through redirects, and the refusal happens on the resolved address before any connection: canary listeners on
those addresses must see no connection at all. A LAN host (a test host in a network namespace) stays reachable.
Also the downloads quota and the removal of partial files left from before a start. The service runs as nobody."""
import os
import socket
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from test_update_support import meterext_bin  # noqa: E402
from netns_host import NamespaceHost  # noqa: E402
from unprivileged import NOBODY, Board, api_json, as_nobody, free_port, wait_healthy  # noqa: E402
from boardrun import BoardProcess  # noqa: E402


class Canary:
    """A listener that counts connections; the refused requests must never reach it."""

    def __init__(self, family, address):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def setup():
    board = Board(meterext_bin())
    host = NamespaceHost(board.root)
    canaries = {"v4": Canary(socket.AF_INET, "127.0.0.1"), "v6": Canary(socket.AF_INET6, "::1"),
                "own": Canary(socket.AF_INET, NamespaceHost.BOARD)}
    host.add_file("data.bin", os.urandom(100_000))
    os.makedirs(os.path.join(board.state, "downloads"))
    leftover = os.path.join(board.state, "downloads", ".part-4242-17")
    open(leftover, "wb").write(b"x" * 5000)
    for path in (os.path.join(board.state, "downloads"), leftover):
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    port = free_port()
    log = open(board.path("service.log"), "w")
    # BoardProcess: terminate() reaches meterext itself. Sent to bwrap, it left meterext running: setpriv's change
    # of user clears the parent-death signal that --die-with-parent sets.
    proc = BoardProcess(as_nobody(board, board.run_args(port, "--downloads-quota", "150000")), stdout=log,
                        stderr=log, start_new_session=True)
    try:
        wait_healthy(port, proc=proc)
        yield dict(board=board, host=host, port=port, canaries=canaries, leftover=leftover)
    finally:
        proc.terminate()
        proc.wait(10)
        for c in canaries.values():
            c.close()
        host.close()
        board.cleanup()


def call(setup, cmd, url):
    body = {"cmd": cmd, "file_uri": url}
    if cmd == "request_post":
        body["message"] = '{"secret":"should never leave"}'
    return api_json(setup["port"], body, timeout=60)


def test_a_lan_host_is_reachable(setup):
    r = call(setup, "request_post", setup["host"].url("/echo"))
    assert r["result"] == "OK" and int(r["status"]) == 200, r
    assert "should never leave" in r["body"]


def refused_targets(setup):
    c, host = setup["canaries"], setup["host"]
    direct = {
        "loopback": f"http://127.0.0.1:{c['v4'].port}/x",
        "localhost name": f"http://localhost:{c['v4'].port}/x",
        "ipv6 loopback": f"http://[::1]:{c['v6'].port}/x",
        "ipv4-mapped loopback": f"http://[::ffff:127.0.0.1]:{c['v4'].port}/x",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "board's own address": f"http://{NamespaceHost.BOARD}:{c['own'].port}/x",
    }
    redirected = {f"redirect to {k}": host.url("/redirect?to=" + v) for k, v in direct.items()
                  if k in ("loopback", "metadata", "board's own address")}
    return {**direct, **redirected}


@pytest.mark.parametrize("cmd", ["request_post", "download_file"])
def test_loopback_link_local_and_own_addresses_are_refused_before_any_connection(setup, cmd):
    for name, url in refused_targets(setup).items():
        r = call(setup, cmd, url)
        assert r["result"] == "ERROR" and r["error"] == "forbidden_address", (name, r)
    assert {k: c.accepted for k, c in setup["canaries"].items()} == {"v4": 0, "v6": 0, "own": 0}
    requests = setup["host"].requests()
    assert not [r for r in requests if r["host"] == NamespaceHost.METADATA], requests
    # The redirecting host itself was asked (so the refusal was at the redirect hop, not before).
    assert any(r["path"].startswith("/redirect") for r in requests)


def test_partial_files_from_before_the_start_are_removed_and_the_quota_says_how_full(setup):
    assert not os.path.exists(setup["leftover"])
    first = call(setup, "download_file", setup["host"].url("/data.bin"))
    assert first["result"] == "OK", first
    stored = os.path.join(setup["board"].state, "downloads", first["name"])
    assert os.path.getsize(stored) == 100_000
    assert os.stat(stored).st_uid == NOBODY.pw_uid
    second = call(setup, "download_file", setup["host"].url("/data.bin"))
    assert second["result"] == "ERROR" and second["error"] == "quota_exceeded", second
    assert "100000 of its 150000 bytes (66% full)" in second["message"], second
    assert sorted(os.listdir(os.path.join(setup["board"].state, "downloads"))) == [first["name"]]
