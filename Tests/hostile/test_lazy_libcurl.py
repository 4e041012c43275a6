"""Issue 18 (memory): libcurl is loaded with dlopen at the first transfer, not linked. The running service maps
neither libcurl nor the libraries only it brings until something is downloaded; the first transfer loads it; a board
without libcurl4 gets an error that names the package instead of a service that does not start."""
import json
import os
import pathlib
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from integration_conftest import start_service  # noqa: E402


def libcurl_file():
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        if line.strip().startswith("libcurl.so.4 ("):
            return os.path.realpath(line.split("=>")[1].strip())
    pytest.skip("libcurl.so.4 is not installed here")


def service_pid(binary, port):
    """The meterext process itself (start_service runs it under setpriv/bubblewrap wrappers)."""
    target = os.path.realpath(binary)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.path.realpath(f"/proc/{pid}/exe") == target and f"127.0.0.1:{port}" in \
                    pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                return int(pid)
        except OSError:
            continue
    raise AssertionError("no meterext process listening on port %d" % port)


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
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", subprocess.run(["readelf", "-d", bin_path], capture_output=True,
                                                                   text=True, check=True).stdout)
    assert needed and not any(n.startswith("libcurl") for n in needed), needed
    curl = libcurl_file()
    port = start_service(procs, bin_path, tmp_path)
    pid = service_pid(bin_path, port)
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
