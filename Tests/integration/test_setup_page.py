"""The set-up page at `/`, rendered by a real browser (headless Chromium from Debian) against the running
service with the simulated WiFi back end: it must list the scanned networks and the board's status."""
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, start_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def page_url(bin_path, procs, tmp_path):
    port = start_service(procs, bin_path, tmp_path)
    time.sleep(2)  # let the status engine see the meter
    return f"http://127.0.0.1:{port}/"


def chromium(*args, timeout=60):
    base = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=390,844", "--virtual-time-budget=5000"]
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_page_lists_networks_and_status(page_url, tmp_path):
    dom = chromium("--dump-dom", page_url).stdout
    # Filled in by the page's JavaScript from wifi_scan, system_status and meter_status.
    for text in ("HomeNet", "Office-5G", "CafeOpen"):
        assert text in dom, f"{text} not rendered"
    assert "online" in dom
    assert "1000" in dom or "Relay Closed" in dom
    shot = ROOT / ".build" / "artifacts" / "setup-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(f"--screenshot={shot}", page_url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, "no real screenshot"
