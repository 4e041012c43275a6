"""Who may do what from the set-up access point (issue 13), through real sockets in network namespaces.

The service runs as the board runs it inside its own namespace "board" with two links: the access point link
(board 10.42.0.1, a phone at 10.42.0.23) and a LAN link (board 192.168.77.1, a LAN host at 192.168.77.2 that also
owns 10.42.0.99, an address from the access point's range). Nothing is added to the host's own network.
"""
import json
import os
import random
import subprocess
import time

import pytest

from integration_conftest import board_argv, service_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PORT = 8080


def sh(*args, check=True):
    return subprocess.run(args, capture_output=True, text=True, check=check)


@pytest.fixture
def net():
    tag = f"{os.getpid() % 1000}{random.randint(0, 99)}"
    names = {"board": f"mxw-b{tag}", "phone": f"mxw-p{tag}", "lan": f"mxw-l{tag}"}
    for ns in names.values():
        sh("ip", "netns", "add", ns)
    try:
        b, p, l = (["ip", "netns", "exec", names[k]] for k in ("board", "phone", "lan"))
        sh("ip", "link", "add", f"mxwa{tag}", "type", "veth", "peer", "name", f"mxwp{tag}")
        sh("ip", "link", "set", f"mxwa{tag}", "netns", names["board"])
        sh("ip", "link", "set", f"mxwp{tag}", "netns", names["phone"])
        sh("ip", "link", "add", f"mxwl{tag}", "type", "veth", "peer", "name", f"mxwh{tag}")
        sh("ip", "link", "set", f"mxwl{tag}", "netns", names["board"])
        sh("ip", "link", "set", f"mxwh{tag}", "netns", names["lan"])
        for ns, cmds in ((b, [["addr", "add", "10.42.0.1/24", "dev", f"mxwa{tag}"],
                              ["addr", "add", "192.168.77.1/24", "dev", f"mxwl{tag}"],
                              ["link", "set", f"mxwa{tag}", "up"], ["link", "set", f"mxwl{tag}", "up"],
                              ["link", "set", "lo", "up"],
                              # Replies to the LAN host's 10.42.0.99 go back over the LAN link (a LAN numbered
                              # like the access point, or a host that picked such an address).
                              ["route", "add", "10.42.0.99/32", "via", "192.168.77.2"]]),
                         (p, [["addr", "add", "10.42.0.23/24", "dev", f"mxwp{tag}"], ["link", "set", f"mxwp{tag}", "up"]]),
                         (l, [["addr", "add", "192.168.77.2/24", "dev", f"mxwh{tag}"],
                              ["addr", "add", "10.42.0.99/32", "dev", f"mxwh{tag}"], ["link", "set", f"mxwh{tag}", "up"]])):
            for c in cmds:
                sh(*ns, "ip", *c)
        yield {"board": b, "phone": p, "lan": l}
    finally:
        for ns in names.values():
            sh("ip", "netns", "del", ns, check=False)


def post(ns, url, body, source=None):
    """(HTTP status, JSON body or text) of a POST sent from inside namespace `ns`."""
    cmd = [*ns, "curl", "-s", "-m", "30", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "--data-binary", body, url]
    if source:
        cmd[len(ns) + 1:len(ns) + 1] = ["--interface", source]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    text, _, code = out.rpartition("\n")
    try:
        return int(code), json.loads(text)
    except ValueError:
        return int(code or 0), text


def test_access_point_clients_may_set_up_and_nothing_more(bin_path, procs, tmp_path, net):
    state, rundir = service_dir(tmp_path / "st"), service_dir(tmp_path / "run")
    argv = [bin_path, "run", "--simulate", "--listen", f"0.0.0.0:{PORT}", "--state-dir", state, "--runtime-dir", rundir,
            "--wifi", "sim", "--poll-interval", "0.5"]
    procs.start([*net["board"], *board_argv(argv, writable=[state, rundir], readable=[tmp_path])])
    deadline = time.time() + 20
    while post(net["board"], f"http://127.0.0.1:{PORT}/api", '{"cmd":"wifi_status"}')[0] != 200:
        assert time.time() < deadline, "the service did not answer"
        time.sleep(0.3)
    ap = f"http://10.42.0.1:{PORT}/api"
    assert post(net["board"], f"http://127.0.0.1:{PORT}/api", '{"cmd":"wifi_status"}')[1]["ap"] == "open"

    # The phone on the access point: the protected commands beyond set-up need the token.
    for cmd in ["relay_set", "meter_factreset", "system_restart", "request_post", "download_file", "firmware_update",
                "wifi_ap_password"]:
        code, reply = post(net["phone"], ap, json.dumps({"cmd": cmd}))
        assert code == 401 and reply["error"] == "unauthorized", (cmd, code, reply)
    code, text = post(net["phone"], f"http://10.42.0.1:{PORT}/ota", "not an image")
    assert code == 401, (code, text)
    code, reply = post(net["phone"], ap, '{"cmd":"meter_setkey","key":"00112233445566778899aabbccddeeff"}')
    assert code != 401, reply

    # A LAN host with a source address from the access point's range, talking to the board's LAN address: no
    # exemption (trust follows the address the request arrived on).
    code, reply = post(net["lan"], f"http://192.168.77.1:{PORT}/api", '{"cmd":"wifi_config","ssid":"HomeNet"}',
                       source="10.42.0.99")
    assert code == 401, (code, reply)

    # Set-up itself works from the phone; on a single radio joining closes the access point, after which the same
    # phone address gets no exemption any more.
    code, reply = post(net["phone"], ap, '{"cmd":"wifi_config","ssid":"HomeNet","password":"homenet-pass"}')
    assert code == 200 and reply["result"] == "OK", (code, reply)
    code, reply = post(net["phone"], ap, '{"cmd":"wifi_config","ssid":"HomeNet","password":"homenet-pass"}')
    assert code == 401, (code, reply)
