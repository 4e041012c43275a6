/// The set-up page served at `/`: what field staff see on their phone after joining the
/// board's access point. Plain HTML and a little JavaScript, no external assets, so it
/// works without internet. Everything it shows comes from `POST /api` and is inserted
/// with `textContent`, never as HTML.
public enum SetupPage {
    public static let html: String = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MeterExtension set-up</title>
<style>
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:28em;padding:1em;line-height:1.4}
h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .4em}
section{border:1px solid #ccc;border-radius:6px;padding:.6em .8em;margin-bottom:.8em}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2em .8em;margin:0}dt{color:#555}dd{margin:0;word-break:break-all}
ul{list-style:none;padding:0;margin:0}li button{width:100%;text-align:left;padding:.6em;margin:.15em 0;font-size:1em}
label{display:block;margin-top:.5em}input{width:100%;box-sizing:border-box;padding:.5em;font-size:1em}
.go{margin-top:.8em;width:100%;padding:.7em;font-size:1em}
.ok{color:#060}.err{color:#a00}.muted{color:#777}
</style>
</head>
<body>
<h1>MeterExtension set-up</h1>

<section>
<h2>Status</h2>
<dl id="status"></dl>
</section>

<section id="meterbox" hidden>
<h2>Meter</h2>
<dl id="meter"></dl>
</section>

<section>
<h2>WiFi networks</h2>
<button id="scan" type="button">Search again</button>
<p id="scanmsg" class="muted">Searching…</p>
<ul id="networks"></ul>
</section>

<section>
<h2>Join a network</h2>
<form id="join">
<label for="ssid">Network name (SSID)</label>
<input id="ssid" name="ssid" required maxlength="32" autocomplete="off" autocapitalize="none">
<label for="password">Password</label>
<input id="password" name="password" type="password" maxlength="64" autocomplete="off">
<label><input id="show" type="checkbox" style="width:auto"> show password</label>
<button class="go" type="submit">Connect</button>
</form>
<p id="result" role="status"></p>
</section>

<script>
"use strict";
function $(id) { return document.getElementById(id); }

async function api(body) {
  const r = await fetch("/api", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  return r.json();
}

function fill(dl, rows) {
  dl.replaceChildren();
  for (const [name, value] of rows) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt"); dt.textContent = name;
    const dd = document.createElement("dd"); dd.textContent = String(value);
    dl.append(dt, dd);
  }
}

async function refresh() {
  const rows = [];
  try {
    const w = await api({cmd: "wifi_status"});
    rows.push(["Network", w.ssid], ["State", w.state], ["Signal", w.rssi ? w.rssi + " dBm" : ""],
              ["Address", w.IP], ["MAC", w["ap-mac"]], ["Last error", w["last-error"]]);
    if (w.ap === "open") rows.push(["Set-up access point", w["ap-closes-in"] ? "closes in " + Math.ceil(w["ap-closes-in"] / 60) + " min" : "open"]);
  } catch (e) { rows.push(["WiFi", "no answer"]); }
  try {
    const s = await api({cmd: "system_status"});
    const read = Number(s.last_reading_ts);
    rows.push(["Meter link", s.meter_link],
              ["Last reading", read ? new Date(read * 1000).toLocaleString() : "none yet"],
              ["Firmware", s["sw-version"]]);
  } catch (e) { rows.push(["System", "no answer"]); }
  fill($("status"), rows);
  try {
    const m = await api({cmd: "meter_status"});
    if (m.result !== "OK") throw new Error("unavailable");
    fill($("meter"), [["Code", m.ami_code], ["Cause", m.cause], ["Action", m.action], ["Because", m.because]]);
    $("meterbox").hidden = false;
  } catch (e) { $("meterbox").hidden = true; }
}

async function scan() {
  $("scanmsg").textContent = "Searching…";
  $("networks").replaceChildren();
  try {
    const r = await api({cmd: "wifi_scan"});
    if (r.result !== "OK") throw new Error(r.error || "scan failed");
    const list = r.networks || [];
    $("scanmsg").textContent = list.length ? "Tap a network:" : "No networks found.";
    for (const n of list) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = n.ssid + " — " + n.signal + "%" + (n.security ? ", " + n.security : " (open)");
      b.addEventListener("click", () => { $("ssid").value = n.ssid; $("password").value = ""; $("password").focus(); });
      const li = document.createElement("li"); li.append(b);
      $("networks").append(li);
    }
  } catch (e) { $("scanmsg").textContent = "Search failed: " + e.message; }
}

$("show").addEventListener("change", () => { $("password").type = $("show").checked ? "text" : "password"; });
$("scan").addEventListener("click", scan);
$("join").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const out = $("result");
  out.className = "muted";
  out.textContent = "Connecting… this can take half a minute. On a single-radio board this page loses its connection when the board joins your network.";
  const body = {cmd: "wifi_config", ssid: $("ssid").value, mode: "sta"};
  if ($("password").value !== "") body.password = $("password").value;
  try {
    const r = await api(body);
    if (r.result === "OK") {
      out.className = "ok";
      out.textContent = "Connected to " + body.ssid + "." + (r.IP ? " On that network the board is at http://" + r.IP + "/" : "");
    }
    else { out.className = "err"; out.textContent = "Not connected: " + (r.error || "unknown error"); }
  } catch (e) {
    out.className = "muted";
    out.textContent = "The board stopped answering here; it has probably joined " + body.ssid + ". Find it on that network.";
  }
  refresh();
});

refresh();
scan();
setInterval(refresh, 5000);
</script>
</body>
</html>
"""#
}
