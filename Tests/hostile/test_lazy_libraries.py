"""Issue 18 (memory): libcurl and libmosquitto are loaded with dlopen when first needed, not linked.

- libcurl at the first transfer: the running service maps neither libcurl nor the libraries only it brings until
  something is downloaded; a board without libcurl4 gets an error that names the package instead of a service that
  does not start.
- libmosquitto when the MQTT uplink starts: a board without `--mqtt` maps neither it nor OpenSSL; with `--mqtt` it is
  loaded and the uplink connects to a real Mosquitto; a board without libmosquitto1 is told which package to install.
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from integration_conftest import start_service  # noqa: E402
from mqtt_broker import Broker, wait_for  # noqa: E402


def library_file(soname):
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        if line.strip().startswith(soname + " ("):
            return os.path.realpath(line.split("=>")[1].strip())
    pytest.skip(f"{soname} is not installed here")


def libcurl_file():
    return library_file("libcurl.so.4")


def needed_libraries(binary):
    return re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(["readelf", "-d", binary], capture_output=True,
                                                                 text=True, check=True).stdout)


def mapped_real_files(pid):
    return {os.path.realpath(f) for f in mapped_files(pid) if f.startswith("/")}


def mapped_files(pid):
    return {line.split()[5] for line in open(f"/proc/{pid}/maps") if len(line.split()) > 5}


def api(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:  # error replies (403 for a refused address) carry the JSON too
        return json.loads(e.read())


def test_the_binary_names_no_libcurl_and_the_service_maps_it_only_after_the_first_transfer(procs, bin_path, tmp_path):
    needed = needed_libraries(bin_path)
    assert needed and not any(n.startswith("libcurl") for n in needed), needed
    curl = libcurl_file()
    port = start_service(procs, bin_path, tmp_path)
    pid = procs.procs[-1].service_pid()
    time.sleep(1)
    assert curl not in {os.path.realpath(f) for f in mapped_files(pid) if f.startswith("/")}
    # A transfer to loopback: libcurl is loaded and set up, then the board's address rule refuses the connection.
    reply = api(port, {"cmd": "request_post", "file_uri": "http://127.0.0.1:9/", "message": "{}"})
    assert "forbidden_address" in json.dumps(reply), reply
    assert curl in {os.path.realpath(f) for f in mapped_files(pid) if f.startswith("/")}


def test_a_board_without_libcurl_gets_an_error_naming_the_package(bin_path, tmp_path):
    curl = libcurl_file()
    state = tmp_path / "state"
    state.mkdir()
    # libcurl's file replaced by an empty one for this process only (a mount namespace of its own).
    r = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--ro-bind", "/dev/null", curl, "--bind", str(tmp_path),
                        str(tmp_path), bin_path, "net", "download", "--state-dir", str(state),
                        "--allow-local-addresses", "http://127.0.0.1:9/file"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "libcurl4" in out and "libcurl.so.4" in out, out


def test_libmosquitto_is_mapped_only_when_the_uplink_runs(procs, bin_path, tmp_path):
    needed = needed_libraries(bin_path)
    assert needed and not any(n.startswith(("libmosquitto", "libssl", "libcrypto")) for n in needed), needed
    mosquitto = library_file("libmosquitto.so.1")
    port = start_service(procs, bin_path, tmp_path / "plain")
    time.sleep(1)
    assert mosquitto not in mapped_real_files(procs.procs[-1].service_pid()), "no uplink: libmosquitto stays unloaded"

    broker = Broker(tmp_path / "broker").start()
    try:
        port = start_service(procs, bin_path, tmp_path / "uplink", "--mqtt", broker.url(),
                             "--mqtt-client-id", "lazy-1")
        wait_for(lambda: api(port, {"cmd": "system_status"}).get("mqtt", {}).get("state") == "connected", 30,
                 "the uplink to connect through the loaded library")
        assert mosquitto in mapped_real_files(procs.procs[-1].service_pid())
    finally:
        broker.stop()


def test_a_board_without_libmosquitto_is_told_the_package(bin_path, tmp_path):
    mosquitto = library_file("libmosquitto.so.1")
    state = tmp_path / "state"
    state.mkdir()
    r = subprocess.run(["bwrap", "--dev-bind", "/", "/", "--ro-bind", "/dev/null", mosquitto, "--bind", str(tmp_path),
                        str(tmp_path), bin_path, "run", "--simulate", "--listen", "127.0.0.1:0", "--state-dir",
                        str(state), "--wifi", "sim", "--mqtt", "mqtt://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "libmosquitto1" in out and "libmosquitto.so.1" in out, out
