"""The read-only static route the dashboard's chart library comes from (issue 15, item 5): `/javascript/…` serves
Debian's /usr/share/javascript and nothing else, with curl against the real service run as the board runs it.

Traversal in every spelling curl can send (`--path-as-is` keeps `..` as typed), escapes, hidden files, directories
and other methods are refused without leaking a byte; a missing file is a 404 that names the package; the library
itself comes with its content type, caching headers and a working revalidation; the page carries the
Content-Security-Policy that allows only the board's own scripts."""
import pathlib
import re
import subprocess

import pytest

from integration_conftest import start_service

LIBRARY = pathlib.Path("/usr/share/javascript/chart.js/chart.min.js")


@pytest.fixture(scope="module")
def port(bin_path, tmp_path_factory):
    from integration_conftest import Processes
    procs = Processes()
    try:
        yield start_service(procs, bin_path, tmp_path_factory.mktemp("static"))
    finally:
        procs.stop_all()


def curl(port, path, *args):
    """(status, headers dict, body bytes) of one request, the path sent exactly as given."""
    out = subprocess.run(["curl", "-sS", "--path-as-is", "-D", "-", "--max-time", "10", *args,
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


@pytest.fixture(scope="module")
def library():
    if not LIBRARY.exists():
        pytest.fail(f"{LIBRARY} is missing: `make deps-test` installs libjs-chart.js")
    return LIBRARY.read_bytes()


def test_the_chart_library_is_served_with_type_and_caching(port, library):
    status, headers, body = curl(port, "/javascript/chart.js/chart.min.js")
    assert status == 200
    assert body == library
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"public, max-age=\d+", headers["cache-control"])
    etag = headers["etag"]
    status, headers, body = curl(port, "/javascript/chart.js/chart.min.js", "-H", f"If-None-Match: {etag}")
    assert (status, body) == (304, b"")
    assert headers["etag"] == etag
    # Debian's own link (Chart.min.js -> chart.min.js) stays inside the directory and is followed.
    assert curl(port, "/javascript/chart.js/Chart.min.js")[2] == library
    status, headers, body = curl(port, "/javascript/chart.js/chart.min.js", "-I")
    assert status == 200 and int(headers["content-length"]) == len(library)


TRAVERSALS = [
    "/javascript/../../../../etc/passwd",
    "/javascript/chart.js/../../../../etc/passwd",
    "/javascript/chart.js/../../../../etc/passwd.js",
    "/javascript/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/javascript/..%2f..%2f..%2fetc%2fpasswd",
    "/javascript/%2E%2E%2F%2E%2E%2Fetc/passwd.js",
    "/javascript/..\\..\\..\\etc\\passwd",
    "/javascript//etc/passwd",
    "/javascript/chart.js/chart.min.js%00.png",
    "/javascript/chart.js/./chart.min.js",
    "/javascript/.hidden.js",
    "/javascript/chart.js",
    "/javascript/chart.js/",
    "/javascript/",
    "/javascript",
    "/javascript/chart.js/chart.min.js/..",
    "/javascript/" + "a/" * 20 + "x.js",
    "/javascript/" + "a" * 5000 + ".js",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_and_odd_names_are_refused_without_leaking(port, path):
    status, headers, body = curl(port, path)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"] == "application/json"
    assert b"root:" not in body and b"Chart.js" not in body
    assert b'"error":"not_found"' in body


def test_a_missing_file_is_a_404_that_names_the_package(port):
    status, _, body = curl(port, "/javascript/chart.js/no-such-file.js")
    assert status == 404
    assert b"libjs-chart.js" in body and b"no such file" in body
    status, _, body = curl(port, "/javascript/no-such-library/x.js")
    assert status == 404 and b"no-such-library" in body


def test_only_get_and_head(port):
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = curl(port, "/javascript/chart.js/chart.min.js", "-X", method, "--data", "x")
        assert status == 405, method
        assert headers["allow"] == "GET, HEAD"


def test_the_page_allows_only_the_boards_own_scripts(port):
    status, headers, body = curl(port, "/")
    assert status == 200
    csp = headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in csp and "http" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    # Every script the page loads is a same-origin file; none inline, none from elsewhere.
    scripts = re.findall(rb"<script([^>]*)>", body)
    assert scripts and all(re.search(rb'src="/[^/]', s) for s in scripts), scripts
    status, headers, js = curl(port, "/setup.js")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert b"/javascript/chart.js/" in js and b"meter_history" in js
    status, headers, _ = curl(port, "/setup.css")
    assert status == 200 and headers["content-type"] == "text/css; charset=utf-8"


def test_other_paths_stay_404(port):
    for path in ("/usr/share/javascript/chart.js/chart.min.js", "/etc/passwd", "/setup.js.bak", "/js/chart.min.js"):
        status, _, body = curl(port, path)
        assert status == 404, path
        assert b"root:" not in body
