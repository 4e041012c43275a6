"""Issue 15: the load-profile store and `meter_history` end to end.

- `meter_history` and `GET /history.csv` against `meterext run --simulate --profile-interval 2`, run as the board
  runs it (unprivileged, read-only root: `start_service`), through curl, with bad inputs;
- the service SIGKILLed and restarted: the intervals before the kill are kept and one gap covers the outage;
- the store under SIGKILL during writes: a writer that commits one interval per transaction (as the recorder does)
  is killed at random points many times; every interval it reported committed is in the file and the file opens.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import start_service

INTERVAL = 2


def api(port, body):
    out = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-d", json.dumps(body),
                          f"http://127.0.0.1:{port}/api"], capture_output=True, text=True, timeout=20)
    text, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(text)


def series(reply, obis):
    data = reply["meter"][0]["data"]
    return next(d for d in data if d["OBIS"] == obis)


def wait_for_intervals(port, count, timeout=40):
    deadline = time.time() + timeout
    while time.time() < deadline:
        code, reply = api(port, {"cmd": "meter_history", "obis": ["1-0:1.8.0.255"]})
        assert code == 200, reply
        entries = series(reply, "1-0:1.8.0.255")["entry"]
        if len(entries) >= count:
            return reply
        time.sleep(0.5)
    pytest.fail(f"fewer than {count} intervals after {timeout} s: {reply}")


def test_meter_history_end_to_end(procs, bin_path, tmp_path):
    port = start_service(procs, bin_path, tmp_path, "--profile-interval", str(INTERVAL))
    wait_for_intervals(port, 3)
    now = int(time.time())
    code, reply = api(port, {"cmd": "meter_history", "from": str(now - 600), "to": str(now + 10),
                             "resolution": "interval", "id": 5})
    assert code == 200 and reply["result"] == "OK" and reply["id"] == 5
    assert isinstance(reply["gaps"], list)
    energy = series(reply, "1-0:1.8.0.255")
    assert energy["unit"] == "30" and energy["scale"] == "0"
    ts = [int(e["ts"]) for e in energy["entry"]]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(t % INTERVAL == 0 for t in ts), ts
    vals = [int(e["val"]) for e in energy["entry"]]
    assert vals == sorted(vals), "an import register never runs backwards"
    power = series(reply, "1-0:16.5.0.255")
    low, high = series(reply, "1-0:16.3.0.255"), series(reply, "1-0:16.6.0.255")
    for m, lo, hi in zip(power["entry"], low["entry"], high["entry"]):
        assert int(lo["val"]) <= int(m["val"]) <= int(hi["val"])
    voltage = series(reply, "1-0:32.5.0.255")
    assert voltage["scale"] == "-1" and all(1500 < int(e["val"]) < 3000 for e in voltage["entry"])

    # Only the codes asked for, in that order; a day bucket holds the intervals so far.
    code, day = api(port, {"cmd": "meter_history", "from": str(now - 86400), "to": str(now + 10),
                           "resolution": "day", "obis": ["1-0:1.29.0.255", "1-0:1.8.0.255"]})
    assert code == 200
    assert [d["OBIS"] for d in day["meter"][0]["data"]] == ["1-0:1.29.0.255", "1-0:1.8.0.255"]
    assert len(series(day, "1-0:1.8.0.255")["entry"]) >= 1
    # Months before installation: the meter's own settlement values, marked as such.
    code, month = api(port, {"cmd": "meter_history", "from": str(now - 400 * 86400), "to": str(now + 10),
                             "resolution": "month", "obis": ["1-0:15.8.0.255"]})
    assert code == 200
    assert any(e.get("src") == "meter" for e in series(month, "1-0:15.8.0.255")["entry"])

    # The CSV for spreadsheets.
    csv = subprocess.run(["curl", "-s", "-w", "\n%{http_code} %{content_type}",
                          f"http://127.0.0.1:{port}/history.csv?from={now - 600}&to={now + 10}&resolution=interval"
                          "&obis=1-0:1.8.0.255,1-0:32.5.0.255"], capture_output=True, text=True, timeout=20).stdout
    body, _, status = csv.rpartition("\n")
    assert status.startswith("200 text/csv")
    lines = body.strip().splitlines()
    assert lines[0] == "ts,1-0:1.8.0.255 [Wh],1-0:32.5.0.255 [V]"
    assert len(lines) >= 3 and all(int(line.split(",")[0]) % INTERVAL == 0 for line in lines[1:])
    bad = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/history.csv?resolution=week"],
                         capture_output=True, text=True, timeout=20).stdout
    assert bad.endswith("\n400") and "resolution" in bad


@pytest.mark.parametrize("params, names", [
    ({"from": "100", "to": "50"}, "'from'"),
    ({"from": "yesterday"}, "'from'"),
    ({"to": "-5"}, "'to'"),
    ({"resolution": "week"}, "'resolution'"),
    ({"obis": ["1-0:99.8.0.255"]}, "1-0:99.8.0.255"),
    ({"obis": []}, "'obis'"),
    ({"obis": "1-0:1.8.0.255"}, "obis"),
    ({"meter": "99"}, "'meter'"),
])
def test_meter_history_bad_inputs(procs, bin_path, tmp_path, params, names):
    port = start_service(procs, bin_path, tmp_path, "--profile-interval", str(INTERVAL))
    code, reply = api(port, {"cmd": "meter_history", **params})
    assert code == 400 and reply["error"] == "invalid_param", reply
    assert names in reply["message"], reply


def test_kill_and_restart_keeps_intervals_and_records_one_gap(procs, bin_path, tmp_path):
    state = tmp_path / "st"
    port = start_service(procs, bin_path, tmp_path, "--profile-interval", str(INTERVAL), state=state)
    before = wait_for_intervals(port, 3)
    kept = {e["ts"] for e in series(before, "1-0:1.8.0.255")["entry"]}
    proc = procs.procs[-1]
    os.killpg(proc.pid, signal.SIGKILL)  # a power cut, as far as the process can tell
    proc.wait(timeout=10)
    time.sleep(2 * INTERVAL + 1)  # the board is "off" for more than an interval
    port = start_service(procs, bin_path, tmp_path, "--profile-interval", str(INTERVAL), state=state)
    deadline = time.time() + 40
    while time.time() < deadline:
        code, reply = api(port, {"cmd": "meter_history", "obis": ["1-0:1.8.0.255"]})
        if reply["gaps"]:
            break
        time.sleep(0.5)
    assert reply["gaps"], f"no gap recorded after the restart: {reply}"
    after = {e["ts"] for e in series(reply, "1-0:1.8.0.255")["entry"]}
    assert kept <= after, "intervals committed before the kill were lost"
    gap = reply["gaps"][0]
    # No interval inside the gap: the time the board was off is missing, never invented.
    assert not [t for t in after if int(gap["from"]) < int(t) <= int(gap["to"])]


def test_store_survives_sigkill_during_writes(bin_path, tmp_path):
    db = tmp_path / "history.sqlite"
    committed = []
    rng = random.Random(15)
    kills = int(os.environ.get("HISTORY_KILLS", "30"))
    for _ in range(kills):
        writer = subprocess.Popen([bin_path, "bench", "history", "writer", "--db", str(db), "--interval", "900"],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.15, 0.8))
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=10)
        committed += [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed ")]
        # The file opens and is consistent; every interval reported committed is there.
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in conn.execute('SELECT "end" FROM interval WHERE meter = 1')}
        conn.close()
        missing = [end for end in committed if end not in stored]
        assert not missing, f"{len(missing)} committed intervals lost, first {missing[:3]}"
    assert len(committed) > kills, "the writer hardly wrote anything: the test proves nothing"
    # And the service's own code opens it (no moved-aside file).
    result = subprocess.run([bin_path, "bench", "history", "writer", "--db", str(db), "--count", "1"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert not [p for p in os.listdir(tmp_path) if "corrupt" in p]
