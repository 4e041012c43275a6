"""The dashboard on the page at `/` (issue 15, item 5), in a real browser at phone size.

The real service runs as the board runs it (unprivileged, read-only root) against the built-in simulator and records
a 2-second load profile (`--profile-interval 2`); once `meter_history` has a few intervals, headless Chromium from
Debian opens the page at 390×844 and is driven over the DevTools protocol (websocket-client from the venv). The page
marks each chart's canvas with the number of points Chart.js drew and the body once all three were drawn; the test
reads that, the live values, the page width and every console/CSP error, and keeps a full-page screenshot in
.build/artifacts/dashboard.png. A second test hides /usr/share/javascript from the service (as on a board without
libjs-chart.js): live values must still show, and the charts must say which package is missing."""
import base64
import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, free_port, service_cmd

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / ".build" / "artifacts"
PROFILE_SECONDS = 2
MIN_INTERVALS = 3
POWER = "1-0:16.5.0.255"  # mean signed active power per interval (meter_history, D = 5)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps-test installs it)")


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api", data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def start_dashboard_service(procs, bin_path, tmp_path, hide_javascript=False):
    """`meterext run --simulate --profile-interval 2` as the board runs it (conftest.service_cmd). hide_javascript:
    an empty /usr/share/javascript inside the service's sandbox, as on a board without libjs-chart.js."""
    port = free_port()
    state = tmp_path / "st"
    argv = service_cmd(tmp_path, [bin_path, "run", "--simulate", "--listen", f"127.0.0.1:{port}", "--state-dir",
                                  str(state), "--wifi", "sim", "--poll-interval", "0.3",
                                  "--profile-interval", str(PROFILE_SECONDS)], state)
    if hide_javascript:
        if argv[0] != "bwrap":
            pytest.skip("hiding /usr/share/javascript needs the board sandbox (bubblewrap, run as root)")
        at = argv.index("--tmpfs") + 2  # after the private /tmp
        argv[at:at] = ["--tmpfs", "/usr/share/javascript"]
    procs.start(argv)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
            return port
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"meterext run did not answer /healthz: {procs.log_of(-1)}")


def wait_for_intervals(port, count):
    """Until meter_history has `count` recorded power intervals (a real run, not an empty chart)."""
    deadline = time.time() + 30 + count * PROFILE_SECONDS
    reply = None
    while time.time() < deadline:
        now = int(time.time())
        reply = post(port, {"cmd": "meter_history", "from": str(now - 3600), "to": str(now), "resolution": "interval",
                            "obis": [POWER]})
        if reply.get("result") == "OK":
            data = reply["meter"][0]["data"] if "meter" in reply else reply.get("data", [])
            entries = [e for d in data if d["OBIS"] == POWER for e in d["entry"]]
            if len(entries) >= count:
                return entries
        time.sleep(0.5)
    pytest.fail(f"meter_history never had {count} intervals: {reply}")


class DevTools:
    """Headless Chromium driven over the DevTools protocol: one page, its console and log collected."""

    def __init__(self, tmp_path):
        import websocket  # websocket-client, pinned in the venv (make deps-venv)
        profile = tmp_path / "chromium-profile"
        # Loopback only: no background traffic of the browser's own (updates, sync, metrics).
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-domain-reliability", "--no-default-browser-check",
             "--metrics-recording-only", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "--window-size=390,844", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if time.time() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def errors(self):
        """Console errors, uncaught exceptions and log errors (a CSP violation is one)."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"]["text"])
            elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"{p['entry'].get('source')}: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path):
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self):
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def browser(tmp_path):
    b = DevTools(tmp_path)
    yield b
    b.close()


STATE = """JSON.stringify({
  charts: document.body.dataset.charts || "",
  live: document.body.dataset.live || "",
  points: Object.fromEntries([...document.querySelectorAll("canvas")].map(c => [c.id, Number(c.dataset.points || -1)])),
  text: Object.fromEntries(["link", "code", "u1", "u2", "u3", "i1", "i2", "i3", "p1", "p2", "p3", "pimp", "pexp",
                            "etoday", "emonth", "m-power", "m-day", "m-month"].map(id => [id, document.getElementById(id).textContent])),
  scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth,
  innerWidth: window.innerWidth, networks: document.getElementById("networks").textContent,
})"""


def open_page(browser, port, until, timeout=30):
    browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
    browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
    deadline = time.time() + timeout
    state = {}
    while time.time() < deadline:
        state = json.loads(browser.evaluate(STATE) or "{}") if browser.evaluate("!!document.body") else {}
        if state and until(state):
            return state
        time.sleep(0.3)
    pytest.fail(f"the page never got there: {json.dumps(state, indent=1)}; errors: {browser.errors()}")


def assert_live_values(state):
    t = state["text"]
    assert t["link"] == "online"
    assert t["code"].startswith("Status code 1000"), t["code"]
    for n in (1, 2, 3):
        assert re.fullmatch(r"\d{2,3}\.\d V", t[f"u{n}"]), t
        assert re.fullmatch(r"-?\d+\.\d\d A", t[f"i{n}"]), t
        assert re.fullmatch(r"-?\d+ W|-?\d+\.\d\d kW", t[f"p{n}"]), t
    for key in ("pimp", "pexp"):
        assert re.fullmatch(r"\d+ W|\d+\.\d\d kW", t[key]), t


def test_dashboard_draws_charts_from_a_real_run_at_phone_size(procs, bin_path, tmp_path, browser):
    port = start_dashboard_service(procs, bin_path, tmp_path)
    intervals = wait_for_intervals(port, MIN_INTERVALS)
    state = open_page(browser, port, lambda s: s["charts"] == "drawn" and s["live"]
                      and s["text"]["code"].startswith("Status code") and s["text"]["etoday"] != "–")
    shot = browser.screenshot(ARTIFACTS / "dashboard.png")
    print(f"\ndashboard screenshot: {shot}")
    print(f"page state: {json.dumps(state)}")

    assert_live_values(state)
    # The values on the page are the service's: L1 voltage as meter_reading gives it (the simulator's voltage moves
    # by a few volts at most between the two reads).
    reading = post(port, {"cmd": "meter_reading"})["meter"][0]
    volts = next(float(d["entry"][0]["val"]) * 10 ** int(d["scale"]) for d in reading["data"] if d["OBIS"] == "1-0:32.7.0.255")
    assert abs(float(state["text"]["u1"].split()[0]) - volts) < 10, (state["text"]["u1"], volts)
    # Energy today and this month come from meter_history (day and month), in kWh.
    assert re.match(r"\d+ Wh|\d+\.\d\d kWh", state["text"]["etoday"]), state["text"]
    assert re.match(r"\d+ Wh|\d+\.\d\d kWh", state["text"]["emonth"]), state["text"]
    # Every chart was drawn by Chart.js with the run's data: at least the intervals recorded before the page opened.
    points = state["points"]
    assert points["c-power"] >= len(intervals) >= MIN_INTERVALS, points
    assert points["c-day"] >= 1 and points["c-month"] >= 1, points
    # Phone size: nothing wider than the screen (no horizontal scrolling).
    assert state["innerWidth"] == 390, state
    assert state["scrollWidth"] <= state["clientWidth"], state
    # The set-up part is still there and working.
    assert "HomeNet" in state["networks"]
    # No script error and nothing the Content-Security-Policy had to block.
    assert browser.errors() == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "no real screenshot"


def test_without_the_chart_library_live_values_still_show(procs, bin_path, tmp_path, browser):
    port = start_dashboard_service(procs, bin_path, tmp_path, hide_javascript=True)
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/javascript/chart.js/chart.min.js", timeout=10)
    assert missing.value.code == 404 and b"libjs-chart.js" in missing.value.read()
    state = open_page(browser, port, lambda s: s["charts"] == "no-library" and s["live"] and s["text"]["code"].startswith("Status code")
                      and "libjs-chart.js" in s["text"]["m-power"])
    shot = browser.screenshot(ARTIFACTS / "dashboard-without-chart-library.png")
    print(f"\nscreenshot without the chart library: {shot}")
    assert_live_values(state)
    for key in ("m-power", "m-day", "m-month"):
        assert "libjs-chart.js" in state["text"][key], state["text"]
    assert state["scrollWidth"] <= state["clientWidth"], state
    # The only errors are the library's 404s (one per file name the page tries).
    assert all("/javascript/chart.js/" in e for e in browser.errors()), browser.errors()
