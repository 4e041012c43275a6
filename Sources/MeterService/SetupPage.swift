/// The page served at `/`: what installers and field staff see on their phone, on the board's set-up access point
/// or on the LAN. Top: the dashboard (live values from `meter_reading` at the poll cadence, the meter link and its
/// status code, energy today and this month, charts of power over the last 24 h and energy per day and per month
/// from `meter_history`). Below: the WiFi set-up.
///
/// No external assets: the page, its script (`/setup.js`) and style (`/setup.css`) come from the firmware, the chart
/// library from the board's own Debian package `libjs-chart.js` (`/javascript/chart.js/…`, MeterHTTP's static
/// route), so it works without internet. Without the library the charts say so and everything else still works.
/// Everything shown comes from `POST /api` and is inserted with `textContent`, never as HTML. The
/// Content-Security-Policy allows scripts, styles and requests only from the board itself (no inline script).
public enum SetupPage {
    public static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// The files the page loads from the board, besides the chart library: (path, content type, body).
    public static let files: [(path: String, contentType: String, body: String)] = [
        ("/setup.js", "text/javascript; charset=utf-8", script),
        ("/setup.css", "text/css; charset=utf-8", style),
    ]

    public static let html: String = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>MeterExtension</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/setup.css">
<script src="/setup.js" defer></script>
</head>
<body>
<h1>MeterExtension</h1>

<section id="live" aria-live="polite">
<h2>Now <span id="link" class="badge">…</span></h2>
<p id="code" class="muted"></p>
<table class="phases">
<thead><tr><th></th><th>Voltage</th><th>Current</th><th>Power</th></tr></thead>
<tbody>
<tr><th>L1</th><td id="u1">–</td><td id="i1">–</td><td id="p1">–</td></tr>
<tr><th>L2</th><td id="u2">–</td><td id="i2">–</td><td id="p2">–</td></tr>
<tr><th>L3</th><td id="u3">–</td><td id="i3">–</td><td id="p3">–</td></tr>
</tbody>
</table>
<dl class="totals">
<dt>Import power</dt><dd id="pimp">–</dd>
<dt>Export power</dt><dd id="pexp">–</dd>
<dt>Energy today</dt><dd id="etoday">–</dd>
<dt>Energy this month</dt><dd id="emonth">–</dd>
</dl>
<p id="readat" class="muted small"></p>
</section>

<section>
<h2>Power, last 24 hours</h2>
<div class="chart" hidden><canvas id="c-power" aria-label="Power over the last 24 hours"></canvas></div>
<p id="m-power" class="muted small"></p>
</section>

<section>
<h2>Energy per day</h2>
<div class="chart" hidden><canvas id="c-day" aria-label="Energy per day, last 31 days"></canvas></div>
<p id="m-day" class="muted small"></p>
</section>

<section>
<h2>Energy per month</h2>
<div class="chart" hidden><canvas id="c-month" aria-label="Energy per month, last 13 months"></canvas></div>
<p id="m-month" class="muted small"></p>
</section>

<h2 class="part">Set-up</h2>

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
<label class="check"><input id="show" type="checkbox"> show password</label>
<button class="go" type="submit">Connect</button>
</form>
<p id="result" role="status"></p>
</section>
</body>
</html>
"""#

    public static let style: String = #"""
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:34em;padding:.8em;line-height:1.4;overflow-wrap:anywhere}
h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.05em;margin:.2em 0 .4em}
h2.part{margin:1.4em 0 .6em;font-size:1.15em}
section{border:1px solid #ccc;border-radius:6px;padding:.6em .8em;margin-bottom:.8em;min-width:0}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2em .8em;margin:0}dt{color:#555}dd{margin:0;overflow-wrap:anywhere;min-width:0}
dl.totals dd{text-align:right;font-variant-numeric:tabular-nums}
table.phases{width:100%;border-collapse:collapse;margin:.3em 0 .6em;font-variant-numeric:tabular-nums}
table.phases th,table.phases td{padding:.15em .2em;text-align:right;white-space:nowrap}
table.phases thead th{color:#555;font-weight:normal;font-size:.9em}
table.phases tbody th{text-align:left}
.badge{font-size:.8em;font-weight:normal;padding:.05em .5em;border-radius:1em;background:#ddd;vertical-align:middle}
.badge.online{background:#cfc;color:#060}.badge.stale{background:#fec}.badge.offline,.badge.starting{background:#fcc;color:#a00}
.chart{position:relative;height:13em;width:100%}
.chart canvas{max-width:100%}
ul{list-style:none;padding:0;margin:0}li button{width:100%;text-align:left;padding:.6em;margin:.15em 0;font-size:1em}
label{display:block;margin-top:.5em}input{width:100%;padding:.5em;font-size:1em}
label.check input{width:auto}
.go{margin-top:.8em;width:100%;padding:.7em;font-size:1em}
.ok{color:#060}.err{color:#a00}.muted{color:#666}.small{font-size:.85em;margin:.3em 0 0}
"""#

    public static let script: String = #"""
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

// ---- live values: meter_reading at the poll cadence -------------------------------------------------------------

// The board polls the meter once a second by default; one request per poll, never two at once, and slower while the
// page is not visible.
const POLL_MS = 1000, HIDDEN_POLL_MS = 10000;
const OBIS = {
  u1: "1-0:32.7.0.255", u2: "1-0:52.7.0.255", u3: "1-0:72.7.0.255",
  i1: "1-0:31.7.0.255", i2: "1-0:51.7.0.255", i3: "1-0:71.7.0.255",
  imp1: "1-0:21.7.0.255", imp2: "1-0:41.7.0.255", imp3: "1-0:61.7.0.255",
  exp1: "1-0:22.7.0.255", exp2: "1-0:42.7.0.255", exp3: "1-0:62.7.0.255",
  pimp: "1-0:1.7.0.255", pexp: "1-0:2.7.0.255",
};

function physical(d) {
  if (!d || !d.entry || !d.entry.length) return null;
  const v = Number(d.entry[d.entry.length - 1].val) * Math.pow(10, Number(d.scale || 0));
  return Number.isFinite(v) ? v : null;
}

function fmt(v, digits, unit) { return v === null || v === undefined ? "–" : v.toFixed(digits) + " " + unit; }
function fmtPower(w) {
  if (w === null || w === undefined) return "–";
  return Math.abs(w) >= 10000 ? (w / 1000).toFixed(2) + " kW" : Math.round(w) + " W";
}
function fmtEnergy(wh) {
  if (wh === null || wh === undefined) return "–";
  return Math.abs(wh) < 1000 ? Math.round(wh) + " Wh" : (wh / 1000).toFixed(2) + " kWh";
}

function showReading(r) {
  const m = r && r.meter && r.meter[0];
  const status = m ? m.status : "no answer";
  const link = $("link");
  link.textContent = status;
  link.className = "badge " + status;
  const byObis = {};
  for (const d of (m && m.data) || []) byObis[d.OBIS] = d;
  const val = (key) => physical(byObis[OBIS[key]]);
  for (const n of [1, 2, 3]) {
    $("u" + n).textContent = fmt(val("u" + n), 1, "V");
    $("i" + n).textContent = fmt(val("i" + n), 2, "A");
    const imp = val("imp" + n), exp = val("exp" + n);
    $("p" + n).textContent = imp === null && exp === null ? "–" : fmtPower((imp || 0) - (exp || 0));
  }
  $("pimp").textContent = fmtPower(val("pimp"));
  $("pexp").textContent = fmtPower(val("pexp"));
  let ts = 0;
  for (const d of (m && m.data) || []) for (const e of d.entry || []) ts = Math.max(ts, Number(e.ts) || 0);
  $("readat").textContent = ts ? "Read from the meter at " + new Date(ts * 1000).toLocaleTimeString()
                                 : (m && m.reason ? m.reason : "No reading yet.");
  document.body.dataset.live = ts ? String(ts) : "";
}

async function live() {
  try { showReading(await api({cmd: "meter_reading"})); }
  catch (e) { showReading(null); }
  setTimeout(live, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
}

// ---- history: meter_history (charts, energy today and this month) ----------------------------------------------

const HISTORY_MS = 60000;
// meter_history's codes: mean signed active power per interval (D = 5, "last average"), energy per bucket (D = 29:
// import, export, and the combined energy the meter's own monthly history back-fills).
const P = "1-0:16.5.0.255", AIMP = "1-0:1.29.0.255", AEXP = "1-0:2.29.0.255", ACOMB = "1-0:15.29.0.255";

// One meter_history query, following pages (at most 10 000 entries per reply) up to a bound.
async function history(resolution, from, to, obis) {
  const series = {}, gaps = [];
  let cursor = from;
  for (let page = 0; page < 20; page++) {
    const r = await api({cmd: "meter_history", from: String(cursor), to: String(to), resolution: resolution, obis: obis});
    if (r.result !== "OK") throw new Error(r.message || r.error || "meter_history failed");
    const m = r.meter && r.meter[0] ? r.meter[0] : r;
    for (const d of m.data || []) {
      const scale = Math.pow(10, Number(d.scale || 0));
      const list = series[d.OBIS] || (series[d.OBIS] = []);
      for (const e of d.entry || []) list.push({ts: Number(e.ts), v: Number(e.val) * scale, meter: e.src === "meter"});
    }
    for (const g of (r.gaps || m.gaps || [])) gaps.push({from: Number(g.from), to: Number(g.to)});
    const next = r.next !== undefined ? r.next : (r.next_from !== undefined ? r.next_from : m.next);
    if (next === undefined || next === null || next === "" || Number(next) <= cursor) break;
    cursor = Number(next);
  }
  return {series, gaps};
}

// The period an entry belongs to: its ts is the end of the period (or of the last interval in an open period).
function periodStart(ts) { return new Date((ts - 1) * 1000); }
function sameDay(a, b) { return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate(); }
function sameMonth(a, b) { return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth(); }

let Chart_ = null;
const charts = {};

function message(id, text) {
  $(id).textContent = libraryMissing ? "Charts need the chart library on the board (Debian package libjs-chart.js). " + text : text;
}

function drawn(canvas, points) {
  canvas.dataset.points = String(points);
  if (charts.power && charts.day && charts.month) document.body.dataset.charts = "drawn";
}

function chart(key, canvasId, config) {
  const canvas = $(canvasId);
  config.options = Object.assign({responsive: true, maintainAspectRatio: false, animation: false,
                                  interaction: {mode: "index", intersect: false},
                                  plugins: {legend: {display: config.data.datasets.length > 1, labels: {boxWidth: 12}}}},
                                 config.options || {});
  const points = config.data.datasets.reduce((n, d) => n + d.data.filter((p) => p !== null && (p.y === undefined || p.y !== null)).length, 0);
  config.plugins = [{id: "drawn", afterRender: () => drawn(canvas, points)}];
  canvas.parentElement.hidden = false;  // shown once there is something to draw (Chart.js sizes to its box)
  if (charts[key]) charts[key].destroy();
  charts[key] = new Chart_(canvas, config);
  drawn(canvas, points);
}

// Ticks on whole local hours, every 4 hours (a linear axis would start them at an odd minute).
function hourTicks(fromMs, toMs) {
  const t = new Date(fromMs); t.setMinutes(0, 0, 0);
  const ticks = [];
  for (t.setHours(t.getHours() + 1); t.getTime() <= toMs; t.setHours(t.getHours() + 1)) {
    if (t.getHours() % 4 === 0) ticks.push({value: t.getTime()});
  }
  return ticks;
}

function hhmm(ms) { const d = new Date(ms); return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0"); }

async function powerChart(now) {
  const from = now - 86400;
  const h = await history("interval", from, now, [P]);
  const pts = (h.series[P] || []).map((e) => ({x: e.ts * 1000, y: e.v}));
  for (const g of h.gaps) pts.push({x: Math.max(g.from, from) * 1000, y: null});
  pts.sort((a, b) => a.x - b.x);
  message("m-power", pts.length ? "Mean power per recording interval (import positive, export negative); gaps are left empty."
                                : "No intervals recorded yet.");
  if (!Chart_) return;
  chart("power", "c-power", {
    type: "line",
    data: {datasets: [{label: "Power (W)", data: pts, borderColor: "#1565c0", backgroundColor: "rgba(21,101,192,.15)",
                       fill: "origin", pointRadius: pts.length > 60 ? 0 : 2, borderWidth: 1.5, spanGaps: false}]},
    options: {parsing: false, normalized: true,
              scales: {x: {type: "linear", min: from * 1000, max: now * 1000, afterBuildTicks: (axis) => { axis.ticks = hourTicks(from * 1000, now * 1000); },
                           ticks: {maxRotation: 0, callback: (v) => hhmm(v)}},
                       y: {title: {display: true, text: "W"}}},
              plugins: {legend: {display: false}, tooltip: {callbacks: {title: (items) => items.length ? hhmm(items[0].parsed.x) : ""}}}},
  });
}

// Bars per period (day or month) of imported and exported energy in kWh; months from before the board recorded come
// from the meter's own monthly history (combined energy only) and are drawn apart.
function energyBars(h, slots, same, label) {
  const find = (code, slot, meterOnly) => (h.series[code] || []).find((e) => same(periodStart(e.ts), slot) && (!meterOnly || e.meter));
  const kwh = (e) => e ? e.v / 1000 : null;
  const imp = slots.map((d) => find(AIMP, d)), exp = slots.map((d) => find(AEXP, d));
  const meter = slots.map((d, i) => imp[i] ? undefined : find(ACOMB, d, true));
  const datasets = [{label: "Import (kWh)", data: imp.map(kwh), backgroundColor: "#1565c0"}];
  if (exp.some((e) => e && e.v > 0)) datasets.push({label: "Export (kWh)", data: exp.map(kwh), backgroundColor: "#2e7d32"});
  if (meter.some((e) => e)) datasets.push({label: "From the meter (kWh)", data: meter.map(kwh), backgroundColor: "#90a4ae"});
  for (const d of datasets) d.skipNull = true;  // a slot with one bar draws it full width
  return {labels: slots.map(label), datasets};
}

// One slot per day (31) or month (13), oldest first, each the local start of its period.
function slots(start, count, step) {
  return Array.from({length: count}, (_, i) => { const d = new Date(start); step(d, i); return d; });
}

function energyText(series, same, now) {
  const pick = (list) => { const e = (list || []).find((x) => same(periodStart(x.ts), now)); return e ? e.v : null; };
  const imp = pick(series[AIMP]), exp = pick(series[AEXP]);
  if (imp === null && exp === null) return "–";
  return fmtEnergy(imp || 0) + (exp ? " (export " + fmtEnergy(exp) + ")" : "");
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

async function dayChart(now) {
  const start = new Date(now * 1000); start.setHours(0, 0, 0, 0); start.setDate(start.getDate() - 30);
  const h = await history("day", Math.floor(start.getTime() / 1000), now, [AIMP, AEXP]);
  $("etoday").textContent = energyText(h.series, sameDay, new Date(now * 1000));
  const n = (h.series[AIMP] || []).length;
  message("m-day", n ? "Last 31 days; today so far." : "No days recorded yet.");
  if (!Chart_) return;
  const days = slots(start, 31, (d, i) => d.setDate(d.getDate() + i));
  chart("day", "c-day", {type: "bar", data: energyBars(h, days, sameDay, (d) => d.getDate() + " " + MONTHS[d.getMonth()]),
                         options: {scales: {x: {ticks: {maxRotation: 0, autoSkipPadding: 8}}, y: {title: {display: true, text: "kWh"}}}}});
}

async function monthChart(now) {
  const start = new Date(now * 1000); start.setHours(0, 0, 0, 0); start.setDate(1); start.setMonth(start.getMonth() - 12);
  const h = await history("month", Math.floor(start.getTime() / 1000), now, [AIMP, AEXP, ACOMB]);
  $("emonth").textContent = energyText(h.series, sameMonth, new Date(now * 1000));
  const n = (h.series[AIMP] || []).length + (h.series[ACOMB] || []).filter((e) => e.meter).length;
  const meter = (h.series[ACOMB] || []).some((e) => e.meter);
  message("m-month", n ? "Last 13 months; this month so far." + (meter ? " Grey: months before the board recorded, from the meter's own monthly history." : "")
                       : "No months recorded yet.");
  if (!Chart_) return;
  const months = slots(start, 13, (d, i) => d.setMonth(d.getMonth() + i));
  chart("month", "c-month", {type: "bar", data: energyBars(h, months, sameMonth, (d) => MONTHS[d.getMonth()] + " " + String(d.getFullYear()).slice(2)),
                             options: {scales: {x: {ticks: {maxRotation: 0, autoSkipPadding: 8}}, y: {title: {display: true, text: "kWh"}}}}});
}

// The board's clock decides what "the last 24 hours" are (a phone's clock may be off; the history is stamped by the board).
async function boardNow() {
  try { const s = await api({cmd: "system_status"}); const t = Number(s["sys-ts"]); if (t > 0) return t; } catch (e) {}
  return Math.floor(Date.now() / 1000);
}

async function refreshHistory() {
  const now = await boardNow();
  for (const [draw, id] of [[powerChart, "m-power"], [dayChart, "m-day"], [monthChart, "m-month"]]) {
    try { await draw(now); }
    catch (e) { message(id, "History not available: " + e.message); }
  }
  setTimeout(refreshHistory, document.hidden ? 5 * HISTORY_MS : HISTORY_MS);
}

// The chart library comes from the board's Debian package libjs-chart.js (no CDN: the page must work on the set-up
// access point). Without it the charts say so; the live values do not depend on it. Debian 12's libjs-chart.js (3.9)
// ships chart.min.js; Chart.js 4 builds are called chart.umd(.min).js.
const CHART_FILES = ["chart.min.js", "chart.umd.min.js", "chart.umd.js"];
let libraryMissing = false;
function loadChartLibrary(names) {
  return new Promise((resolve) => {
    const next = (i) => {
      if (i >= names.length) { resolve(null); return; }
      const s = document.createElement("script");
      s.src = "/javascript/chart.js/" + names[i];
      s.addEventListener("load", () => resolve(window.Chart || null));
      s.addEventListener("error", () => { s.remove(); next(i + 1); });
      document.head.append(s);
    };
    next(0);
  });
}

// ---- set-up: WiFi and status --------------------------------------------------------------------------------------

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
    $("code").textContent = m.ami_code ? "Status code " + m.ami_code + ": " + m.cause : (m.because || m.status || "");
    fill($("meter"), [["Code", m.ami_code], ["Cause", m.cause], ["Action", m.action], ["Because", m.because]]);
    $("meterbox").hidden = false;
  } catch (e) { $("meterbox").hidden = true; $("code").textContent = ""; }
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

live();
refresh();
scan();
setInterval(refresh, 5000);
loadChartLibrary(CHART_FILES).then((c) => {
  Chart_ = c;
  if (!c) {
    libraryMissing = true;
    document.body.dataset.charts = "no-library";
  }
  refreshHistory();
});
"""#
}
