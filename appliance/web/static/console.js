// The appliance console: reads the daemon's JSON API, draws skeletons (never video) on a canvas.
"use strict";

const state = { epoch: 0, session: null, overview: null, camera: null, source: null, heat: null, history: {},
  edit: null, lastSnap: null, zoneInfo: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const epoch = state.epoch;  // a late answer to a request of an earlier login must not log this one out
  const opts = { credentials: "same-origin", headers: {}, ...options };
  if (opts.method && opts.method !== "GET") {
    opts.headers["Content-Type"] = "application/json";
    if (state.session) opts.headers["X-CSRF-Token"] = state.session.csrf;
  }
  const response = await fetch(path, opts);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (response.status === 401 && path !== "/api/login" && epoch === state.epoch) showLogin();
  return { status: response.status, body };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("data-")) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function showLogin() {
  state.epoch += 1;
  state.session = null;
  if (state.source) { state.source.close(); state.source = null; }
  $("nav").hidden = true;
  document.querySelectorAll(".view").forEach((v) => { v.hidden = true; });
  $("login").hidden = false;
}

async function start() {
  const r = await api("/api/session");
  if (r.status !== 200) return showLogin();
  state.session = r.body;
  state.epoch += 1;
  $("login").hidden = true;
  $("nav").hidden = false;
  $("who").textContent = `${state.session.user} (${state.session.role})`;
  show("overview");
  refresh();
}

function show(view) {
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== view; });
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === view));
  if (view === "camera" && state.overview) openCamera(state.camera || Object.keys(state.overview.status.cameras)[0]);
  if (view !== "camera" && state.source) { state.source.close(); state.source = null; }
  if (view === "events") loadEvents();
  if (view === "models") loadModels();
}

async function refresh() {
  if (!state.session) return;
  const r = await api("/api/overview");
  if (r.status === 200) { state.overview = r.body; renderOverview(); }
  setTimeout(refresh, 2000);
}

function fmt(x, digits = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

function renderOverview() {
  const o = state.overview;
  $("title").textContent = `Appliance ${o.status.appliance_id}`;
  const cards = Object.entries(o.status.cameras).map(([id, c]) => el("div", { class: "card", "data-camera": id },
    el("h3", {}, id),
    el("dl", {},
      el("dt", {}, "state"), el("dd", { class: `state-${c.state}` }, c.state + (c.error ? ` – ${c.error}` : "")),
      el("dt", {}, "fps"), el("dd", {}, fmt(c.fps, 1)),
      el("dt", {}, "people"), el("dd", { class: "people" }, String(c.tracks)),
      el("dt", {}, "threshold"), el("dd", {}, `${fmt(c.threshold)} (${c.threshold_source})`),
      el("dt", {}, "model"), el("dd", {}, c.site_model ? `site model ${c.site_model}` : `${o.status.model.name} ${o.status.model.version}`),
      el("dt", {}, "open anomalies"), el("dd", {}, String(c.active_anomalies)))));
  $("cameras").replaceChildren(...cards);
  const open = o.alarms.filter((a) => a.state !== "normal");
  $("no-alarms").hidden = open.length > 0;
  const operator = state.session.role !== "viewer";
  $("alarms").querySelector("tbody").replaceChildren(...open.map((a) => el("tr", { "data-point": `${a.camera_id}/${a.point}` },
    el("td", {}, a.camera_id), el("td", {}, a.point), el("td", { class: "alarm-state", "data-state": a.state }, a.state.replaceAll("_", " ")),
    el("td", {}, a.since), el("td", {}, String(a.anomalies)), el("td", {}, fmt(a.peak_score)),
    el("td", {}, ...(operator ? alarmButtons(a) : [])))));
  const b = o.broker;
  $("broker").textContent = b ? `MQTT ${b.link.broker}: ${b.link.state}; outbox ${b.outbox.depth} waiting, ${b.outbox.dropped} dropped` : "No MQTT sink configured.";
  $("recent").replaceChildren(...o.events.map((e) => eventItem(e)));
}

function alarmButtons(a) {
  const buttons = [];
  if (a.state === "active_unacknowledged" || a.state === "returned_unacknowledged") {
    buttons.push(el("button", { class: "ack", onclick: () => alarmAction(a, "ack", {}) }, "Acknowledge"));
  }
  if (a.state === "shelved") {
    buttons.push(el("button", { class: "unshelve", onclick: () => alarmAction(a, "unshelve", {}) }, "Unshelve"));
  } else if (a.state !== "out_of_service") {
    buttons.push(el("button", { class: "shelve", onclick: () => {
      const minutes = Number(prompt("Shelve for how many minutes (at most 480)?", "60"));
      if (minutes > 0) alarmAction(a, "shelve", { minutes });
    } }, "Shelve"));
  }
  return buttons;
}

async function alarmAction(a, action, body) {
  const comment = prompt(`${action} ${a.camera_id}/${a.point}: comment (optional)`) || undefined;
  const r = await api(`/api/alarms/${encodeURIComponent(a.camera_id)}/${encodeURIComponent(a.point)}/${action}`,
    { method: "POST", body: JSON.stringify({ ...body, comment }) });
  if (r.status !== 200) alert(r.body?.error || `refused (${r.status})`);
  const o = await api("/api/overview");
  if (o.status === 200) { state.overview = o.body; renderOverview(); }
}

function eventItem(e, withReplay = false) {
  const text = `${e.time} ${e.camera_id}${e.zone ? "/" + e.zone : ""} track ${e.track_id}: ${e.type} score ${fmt(e.score)} (threshold ${fmt(e.threshold)}) `;
  const replayable = withReplay && (e.type === "start" || e.type === "end");
  return el("li", { "data-event": e.event_id, "data-type": e.type }, text,
    ...(replayable ? [el("button", { class: "replay", onclick: () => replay(e.event_id, e.type) }, "Replay")] : []));
}

// -- an event's skeleton clip (evidence): base64 of zlib data, decoded in the browser
async function unpack(b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function replay(eventId, type) {
  const r = await api(`/api/events/${encodeURIComponent(eventId)}?type=${type}`);
  if (r.status !== 200 || !r.body.evidence) { $("replay-info").textContent = r.body?.error || "no clip"; return; }
  const ev = r.body.evidence;
  const xy = new Uint16Array((await unpack(ev.points)).buffer);
  const conf = await unpack(ev.confidence);
  const canvas = $("replay");
  [canvas.width, canvas.height] = ev.image_size;
  $("replay-box").hidden = false;
  $("replay-title").textContent = `${r.body.camera_id} track ${r.body.track_id}: ${type}, ${ev.frames} frames`;
  const limbs = state.overview.skeleton.limbs;
  const g = canvas.getContext("2d");
  for (let f = 0; f < ev.frames; f++) {
    g.fillStyle = "#000"; g.fillRect(0, 0, canvas.width, canvas.height);
    const joint = (j) => [xy[(f * 15 + j) * 2] / 4, xy[(f * 15 + j) * 2 + 1] / 4, conf[f * 15 + j] / 255];
    g.strokeStyle = "#ef4e4e"; g.lineWidth = 4;
    for (const [a, b] of limbs) {
      const ja = joint(a), jb = joint(b);
      if (ja[2] < 0.3 || jb[2] < 0.3) continue;
      g.beginPath(); g.moveTo(ja[0], ja[1]); g.lineTo(jb[0], jb[1]); g.stroke();
    }
    g.fillStyle = "#e6e9ee"; g.font = "20px sans-serif";
    g.fillText(`${((ev.times_ms[f] - ev.times_ms[ev.frames - 1]) / 1000).toFixed(1)} s`, 10, 26);
    canvas.dataset.frame = String(f + 1);
    canvas.dataset.neck = joint(1).slice(0, 2).join(",");
    $("replay-info").textContent = `frame ${f + 1} of ${ev.frames}`;
    if (f + 1 < ev.frames) await new Promise((ok) => setTimeout(ok, Math.max(20, ev.times_ms[f + 1] - ev.times_ms[f])));
  }
  canvas.dataset.replayed = String(ev.frames);
}

async function loadEvents(ev) {
  if (ev) ev.preventDefault();
  const q = new URLSearchParams();
  if ($("filter-camera").value) q.set("camera", $("filter-camera").value);
  if ($("filter-zone").value) q.set("zone", $("filter-zone").value);
  if ($("filter-since").value) q.set("since_ms", String(new Date($("filter-since").value).getTime()));  // local time
  const r = await api(`/api/events?${q}`);
  if (r.status === 200) $("event-list").replaceChildren(...r.body.map((e) => eventItem(e, true)));
}

// -- models
async function loadModels() {
  const r = await api("/api/models");
  if (r.status !== 200) return;
  const m = r.body;
  $("model-running").textContent = `running: ${m.running.name} ${m.running.version} (active version: ${m.active})`;
  const p = m.provenance;
  $("model-provenance").textContent = p ? `${p.type} model made ${p.created_at || "(date not recorded)"}` +
    (p.parts.length ? ` from ${p.parts.join(" and ")}` : "") + (p.dataset ? `; measured on ${p.dataset}, ${p.split}` : "") : "";
  $("model-versions").querySelector("tbody").replaceChildren(...m.versions.map((v) => el("tr", { "data-version": v.id },
    el("td", {}, v.active ? "active" : (v.bad ? "bad" : "")), el("td", {}, v.id), el("td", {}, `${v.name} ${v.version}`),
    el("td", {}, v.signer ? `${v.signer.name} (${v.signer.key_id})` : "unsigned"), el("td", {}, v.installed_at), el("td", {}, v.source))));
  $("model-updates").replaceChildren(...m.updates.slice().reverse().map((u) => el("li", {}, `${u.time} ${u.action} ${u.result}: ${u.version || ""} ${u.message || ""}`)));
  $("model-admin").hidden = state.session.role !== "admin";
  const admin = state.session.role === "admin";
  $("site-models").querySelector("tbody").replaceChildren(...Object.entries(m.site_models).map(([cam, list]) => {
    const active = list.find((v) => v.active);
    const others = list.filter((v) => !v.active).map((v) => v.id).join(", ") || "–";
    return el("tr", { "data-camera": cam }, el("td", {}, cam), el("td", { class: "site-active" }, active ? active.id : "none (the bundle alone)"),
      el("td", {}, active ? active.provenance.learned_at : ""), el("td", {}, active ? `${fmt(active.provenance.footage_minutes, 1)} min` : ""),
      el("td", {}, others),
      el("td", {}, ...(admin && active ? [el("button", { class: "site-rollback", onclick: () => rollbackSite(cam) }, "Roll back")] : [])));
  }));
}

async function rollbackSite(camera) {
  if (!confirm(`Roll camera ${camera} back to its previous site model (or the bundle alone)?`)) return;
  const r = await api(`/api/cameras/${encodeURIComponent(camera)}/site-model/rollback`, { method: "POST", body: "{}" });
  $("site-result").className = r.status === 200 ? "" : "error";
  $("site-result").textContent = r.status === 200 ? `${camera}: now ${r.body.site_model || "the bundle alone"}` : `refused: ${r.body?.error}`;
  loadModels();
}

async function uploadBundle(ev) {
  ev.preventDefault();
  const file = $("bundle-file").files[0];
  if (!file) return;
  $("upload-result").textContent = `installing ${file.name}...`;
  const r = await fetch("/api/models", { method: "POST", credentials: "same-origin", body: file,
    headers: { "Content-Type": "application/x-tar", "X-CSRF-Token": state.session.csrf, "X-Bundle-Name": file.name } });
  const body = await r.json().catch(() => ({}));
  $("upload-result").className = r.ok ? "" : "error";
  $("upload-result").textContent = r.ok ? body.result : `refused: ${body.error || r.status}`;
  loadModels();
}

async function rollbackModel() {
  if (!confirm("Roll back to the previous model version?")) return;
  const r = await api("/api/models/rollback", { method: "POST", body: "{}" });
  $("upload-result").className = r.status === 200 ? "" : "error";
  $("upload-result").textContent = r.status === 200 ? `rolled back: now ${r.body.active}` : `refused: ${r.body?.error}`;
  loadModels();
}

// -- the live camera view
function openCamera(id) {
  state.camera = id;
  const ids = Object.keys(state.overview.status.cameras);
  $("camera-tabs").replaceChildren(...ids.map((c) => el("button", { class: c === id ? "active" : "", "data-camera": c, onclick: () => openCamera(c) }, c)));
  if (state.source) state.source.close();
  state.history = {};
  state.heat = null;
  loadHeat(id);
  state.source = new EventSource(`/api/cameras/${encodeURIComponent(id)}/live`);
  state.source.onmessage = (m) => draw(JSON.parse(m.data));
  state.chartShown = null;
  state.edit = null;
  state.lastSnap = null;
  $("zones-editor").hidden = true;
  $("live").classList.remove("editing");
  loadCalibration(id);
  loadZones(id);
}

// -- zones: shown over the live view; admins draw and save them (applied at once, like SIGHUP)
async function loadZones(id) {
  const r = await api(`/api/cameras/${encodeURIComponent(id)}/zones`);
  if (r.status !== 200 || state.camera !== id) return;
  state.zoneInfo = r.body;
  const z = r.body;
  const names = z.zones.map((x) => `${x.name} (${x.kind}${x.enabled === false ? ", off" : ""})`).join(", ") || "none: the whole picture counts";
  $("zones-source").textContent = `Zones: ${names}. ` + (z.source === "console"
    ? `Saved in the console by ${z.saved_by} at ${z.saved_at}; they replace the configuration file's.`
    : "From the configuration file.");
  $("zones-edit").hidden = state.session.role !== "admin" || !z.editable || state.edit !== null;
  $("zones-revert").hidden = z.source !== "console";
}

function startEditing() {
  state.edit = { zones: structuredClone(state.zoneInfo.zones), selected: 0, drag: null };
  if (!state.edit.zones.length) newZone();
  $("zones-editor").hidden = false;
  $("zones-edit").hidden = true;
  $("zones-error").textContent = "";
  $("live").classList.add("editing");
  renderZoneTable();
}

function stopEditing() {
  state.edit = null;
  $("zones-editor").hidden = true;
  $("live").classList.remove("editing");
  loadZones(state.camera);
  redraw();
}

function newZone() {
  const taken = new Set(state.edit.zones.map((z) => z.name));
  let n = state.edit.zones.length + 1;
  while (taken.has(`zone-${n}`)) n += 1;
  state.edit.zones.push({ name: `zone-${n}`, kind: "include", polygon: [] });
  state.edit.selected = state.edit.zones.length - 1;
  renderZoneTable();
}

function renderZoneTable() {
  const e = state.edit;
  const rows = e.zones.map((z, i) => {
    const pick = el("input", { type: "radio", name: "zone-pick", checked: i === e.selected, onchange: () => { e.selected = i; renderZoneTable(); redraw(); } });
    const name = el("input", { type: "text", class: "zone-name", value: z.name, oninput: (ev) => { z.name = ev.target.value; redraw(); } });
    const kind = el("select", { class: "zone-kind", onchange: (ev) => { z.kind = ev.target.value; redraw(); } },
      ...["include", "exclude"].map((k) => el("option", { value: k, selected: z.kind === k }, k)));
    const on = el("input", { type: "checkbox", class: "zone-enabled", checked: z.enabled !== false, onchange: (ev) => { z.enabled = ev.target.checked; } });
    const del = el("button", { class: "zone-delete", onclick: () => { e.zones.splice(i, 1); e.selected = Math.max(0, Math.min(e.selected, e.zones.length - 1)); renderZoneTable(); redraw(); } }, "Delete");
    return el("tr", { class: i === e.selected ? "selected" : "", "data-zone": String(i) },
      el("td", {}, pick), el("td", {}, name), el("td", {}, kind), el("td", {}, on), el("td", { class: "corners" }, String(z.polygon.length)), el("td", {}, del));
  });
  $("zones-table").querySelector("tbody").replaceChildren(...rows);
}

function canvasPoint(ev) {
  const rect = $("live").getBoundingClientRect();
  const clamp = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  return [clamp((ev.clientX - rect.left) / rect.width), clamp((ev.clientY - rect.top) / rect.height)];
}

function nearCorner(p) {
  const rect = $("live").getBoundingClientRect();
  const zone = state.edit.zones[state.edit.selected];
  if (!zone) return -1;
  return zone.polygon.findIndex(([x, y]) => Math.hypot((x - p[0]) * rect.width, (y - p[1]) * rect.height) < 12);
}

function onCanvasDown(ev) {
  if (!state.edit) return;
  const p = canvasPoint(ev);
  const corner = nearCorner(p);
  if (corner >= 0) { state.edit.drag = corner; return; }
  const zone = state.edit.zones[state.edit.selected];
  if (!zone) return;
  zone.polygon.push(p);
  renderZoneTable();
  redraw();
}

function onCanvasMove(ev) {
  if (!state.edit || state.edit.drag === null) return;
  state.edit.zones[state.edit.selected].polygon[state.edit.drag] = canvasPoint(ev);
  redraw();
}

function onCanvasUp() { if (state.edit) state.edit.drag = null; }

// save (PUT) or go back to the configuration file's zones (DELETE); the answer holds the zones now in force
async function changeZones(options) {
  const r = await api(`/api/cameras/${encodeURIComponent(state.camera)}/zones`, options);
  if (r.status !== 200) { $("zones-error").textContent = `refused: ${r.body?.error || r.status}`; return; }
  state.overview.cameras[state.camera].zones = r.body.zones;
  stopEditing();
}

function saveZones() { return changeZones({ method: "PUT", body: JSON.stringify({ zones: state.edit.zones }) }); }

function revertZones() {
  if (confirm("Drop the zones saved in the console and use the configuration file's?")) changeZones({ method: "DELETE" });
}

function redraw() { if (state.lastSnap) draw(state.lastSnap); }

function drawZones(g, w, h) {
  const editing = state.edit !== null;
  const zones = editing ? state.edit.zones : (state.overview.cameras[state.camera]?.zones || []);
  zones.forEach((z, i) => {
    if (!z.polygon.length) return;
    const selected = editing && i === state.edit.selected;
    g.beginPath();
    z.polygon.forEach(([x, y], k) => (k ? g.lineTo(x * w, y * h) : g.moveTo(x * w, y * h)));
    if (z.polygon.length > 2) g.closePath();
    g.setLineDash(z.kind === "exclude" ? [8, 6] : []);
    g.strokeStyle = z.kind === "exclude" ? "#7a828e" : "#4ea1ef"; g.lineWidth = selected ? 5 : 3; g.stroke();
    g.setLineDash([]);
    g.fillStyle = g.strokeStyle; g.font = "18px sans-serif"; g.fillText(z.name, z.polygon[0][0] * w + 4, z.polygon[0][1] * h + 20);
    if (selected) {
      g.fillStyle = "#ffffff";
      for (const [x, y] of z.polygon) { g.beginPath(); g.arc(x * w, y * h, 7, 0, 2 * Math.PI); g.fill(); }
    }
  });
}

// -- calibration: start it, follow it, draw the report's chart with uPlot
async function loadCalibration(id) {
  if (state.camera !== id) return;
  const r = await api(`/api/cameras/${encodeURIComponent(id)}/calibration`);
  if (r.status !== 200) return;
  const { job, report } = r.body;
  const cam = state.overview.status.cameras[id];
  $("calib-form").hidden = state.session.role !== "admin" || (job && job.state === "running");
  $("learn-form").hidden = $("calib-form").hidden;
  $("calib-progress").hidden = !(job && job.state === "running");
  if (job) $("calib-progress").value = job.progress;
  const doing = job && job.kind === "learn" ? "learning" : "calibration";
  $("calib-error").textContent = job && job.state === "failed" ? `${doing} failed: ${job.error}` : "";
  $("calib-state").textContent = job && job.state === "running"
    ? `${job.kind === "learn" ? "learning a site model" : "calibrating"} from ${job.minutes} min of live footage (started by ${job.by})...`
    : `threshold ${fmt(cam.threshold)} (${cam.threshold_source})` + (report ? `; last report: ${report.method}, ${fmt(report.footage_minutes, 1)} min of footage` : "");
  if (report && report.chart && state.chartShown !== report.threshold) drawCalibration(report.chart);
  if (job && job.state === "running") setTimeout(() => loadCalibration(id), 1000);
}

async function startCalibration(ev) {
  ev.preventDefault();
  const learn = ev.target.id === "learn-form";
  const body = learn
    ? { minutes: Number($("learn-minutes").value), target_alarms_per_hour: Number($("learn-target").value) }
    : { minutes: Number($("calib-minutes").value), target_alarms_per_hour: Number($("calib-target").value),
      accept_drift: $("calib-drift").checked };
  const r = await api(`/api/cameras/${encodeURIComponent(state.camera)}/${learn ? "learn" : "calibrate"}`, { method: "POST", body: JSON.stringify(body) });
  if (r.status !== 202) $("calib-error").textContent = `refused: ${r.body?.error || r.status}`;
  loadCalibration(state.camera);
}

function verticalLine(value, label, colour) {
  return (u) => {
    const x = u.valToPos(value, "x", true);
    const g = u.ctx;
    g.save(); g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    g.moveTo(x, u.bbox.top); g.lineTo(x, u.bbox.top + u.bbox.height); g.stroke();
    g.fillStyle = colour; g.font = `${12 * devicePixelRatio}px sans-serif`; g.fillText(label, x + 4, u.bbox.top + 14 * devicePixelRatio);
    g.restore();
    u.thresholdX = x;  // where the line was drawn, in canvas pixels (the browser test reads it back)
  };
}

function drawCalibration(chart) {
  if (!window.uPlot) { $("calib-nochart").hidden = false; return; }
  const room = document.querySelector(".calibration").clientWidth;  // the chart divs are empty (hidden) now
  const width = Math.max(320, Math.min(900, room - 20));
  const edges = chart.histogram.edges;
  const centres = edges.slice(0, -1).map((e, i) => (e + edges[i + 1]) / 2);
  const counts = chart.histogram.counts.map((c) => (c > 0 ? c : null));
  const label = `threshold ${chart.threshold.toFixed(2)}`;
  const histSeries = [{}, { label: "windows", stroke: "#3b6fb0", fill: "rgba(90,143,208,0.6)", paths: uPlot.paths.bars({ size: [1, Infinity] }) }];
  const histData = [centres, counts];
  if (chart.tail) {
    histSeries.push({ label: "fitted tail (generalised Pareto)", stroke: "#2f9e44", width: 2 });
    histData.push(centres.map((c) => { const i = chart.tail.centres.findIndex((t) => Math.abs(t - c) < 1e-9); return i >= 0 && chart.tail.expected_windows[i] > 0 ? chart.tail.expected_windows[i] : null; }));
  }
  const hist = new uPlot({ title: "Score per window on this site's normal footage", width, height: 260,
    scales: { x: { time: false, range: [edges[0], edges[edges.length - 1]] }, y: { distr: 3 } }, series: histSeries,
    axes: [{ label: "window score (higher = more unusual)" }, { label: "windows (log scale)" }],
    hooks: { draw: [verticalLine(chart.threshold, label, "#d62728")] } }, histData, $("calib-hist").replaceChildren() || $("calib-hist"));
  const rate = chart.rate;
  const positive = (v) => (v !== null && v > 0 ? v : null);
  const rateSeries = [{}, { label: "alarms per hour, replayed on this footage", stroke: "#3b6fb0", width: 2 },
    { label: `target ${chart.target_alarms_per_hour} per hour`, stroke: "#888", dash: [6, 4] }];
  const rateData = [rate.thresholds, rate.replayed_per_hour.map(positive), rate.thresholds.map(() => chart.target_alarms_per_hour)];
  if (rate.fitted_per_hour) {
    rateSeries.push({ label: "alarms per hour, fitted tail", stroke: "#2f9e44", width: 2 });
    rateData.push(rate.fitted_per_hour.map(positive));
  }
  const xs = rate.thresholds;
  const rateRange = [Math.min(xs[0], chart.threshold), Math.max(xs[xs.length - 1], chart.threshold)];
  const rateChart = new uPlot({ title: "Alarms per hour at this threshold", width, height: 260,
    scales: { x: { time: false, range: rateRange }, y: { distr: 3 } }, series: rateSeries,
    axes: [{ label: "threshold (window score)" }, { label: "alarms per hour (log scale)" }],
    hooks: { draw: [verticalLine(chart.threshold, label, "#d62728")] } }, rateData, $("calib-rate").replaceChildren() || $("calib-rate"));
  window.calibrationCharts = { hist, rate: rateChart, threshold: chart.threshold };
  state.chartShown = chart.threshold;
}

async function loadHeat(id) {
  const r = await api(`/api/cameras/${encodeURIComponent(id)}/heat`);
  if (r.status === 200 && state.camera === id) state.heat = r.body;
  if (state.camera === id && state.source) setTimeout(() => loadHeat(id), 30000);
}

function colour(score, threshold) {
  if (score === null || threshold === null) return "#9aa4b2";
  if (score > threshold) return "#ef4e4e";
  return score > 0.8 * threshold ? "#f0b429" : "#3fbf6f";
}

function draw(snap) {
  state.lastSnap = snap;
  const canvas = $("live");
  const [w, h] = snap.size;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const g = canvas.getContext("2d");
  g.fillStyle = "#000"; g.fillRect(0, 0, w, h);
  if (state.heat) {
    const { rows, cols, counts } = state.heat;
    const peak = Math.max(1, ...counts.flat());
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) {
      if (!counts[r][c]) continue;
      g.fillStyle = `rgba(255,138,61,${0.15 + 0.6 * counts[r][c] / peak})`;
      g.fillRect(c * w / cols, r * h / rows, w / cols, h / rows);
    }
  }
  drawZones(g, w, h);
  const limbs = state.overview.skeleton.limbs;
  for (const p of snap.people) {
    const c = colour(p.score, snap.threshold);
    g.strokeStyle = c; g.lineWidth = 4;
    for (const [a, b] of limbs) {
      const ja = p.joints[a], jb = p.joints[b];
      if (ja[2] < 0.3 || jb[2] < 0.3) continue;
      g.beginPath(); g.moveTo(ja[0], ja[1]); g.lineTo(jb[0], jb[1]); g.stroke();
    }
    const head = p.joints[0];
    g.fillStyle = c; g.font = "bold 20px sans-serif";
    g.fillText(`#${p.id}${p.score !== null ? " " + p.score.toFixed(2) : ""}`, head[0] + 6, head[1] - 10);
    const hist = (state.history[p.id] = state.history[p.id] || []);
    hist.push(p.score); if (hist.length > 100) hist.shift();
  }
  canvas.dataset.people = String(snap.people.length);
  canvas.dataset.scored = String(snap.people.filter((p) => p.score !== null).length);
  canvas.dataset.frame = String(snap.frame);
  $("live-info").textContent = `frame ${snap.frame}, ${snap.people.length} people, threshold ${fmt(snap.threshold)}`;
  renderTracks(snap);
}

function renderTracks(snap) {
  const cards = snap.people.map((p) => {
    const spark = el("canvas", { width: 200, height: 40 });
    const g = spark.getContext("2d");
    const hist = state.history[p.id].filter((s) => s !== null);
    const top = Math.max(snap.threshold || 1, ...hist) * 1.1;
    if (snap.threshold !== null) {
      g.strokeStyle = "#ef4e4e"; g.setLineDash([4, 3]); g.beginPath();
      g.moveTo(0, 40 - 40 * snap.threshold / top); g.lineTo(200, 40 - 40 * snap.threshold / top); g.stroke(); g.setLineDash([]);
    }
    g.strokeStyle = colour(p.score, snap.threshold); g.beginPath();
    hist.forEach((s, i) => (i ? g.lineTo(i * 2, 40 - 40 * s / top) : g.moveTo(0, 40 - 40 * s / top)));
    g.stroke();
    return el("div", { class: "track", "data-track": String(p.id) }, `track #${p.id}: score ${fmt(p.score)}`, spark);
  });
  $("tracks").replaceChildren(...cards);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await api("/api/login", { method: "POST", body: JSON.stringify({ user: $("user").value, password: $("password").value }) });
    if (r.status === 200) { $("password").value = ""; $("login-error").textContent = ""; start(); }
    else $("login-error").textContent = r.body?.error || `refused (${r.status})`;
  });
  $("logout").addEventListener("click", async () => { await api("/api/logout", { method: "POST" }); showLogin(); });
  document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => show(t.dataset.view)));
  $("event-filter").addEventListener("submit", loadEvents);
  $("upload-form").addEventListener("submit", uploadBundle);
  $("calib-form").addEventListener("submit", startCalibration);
  $("learn-form").addEventListener("submit", startCalibration);
  $("rollback-button").addEventListener("click", rollbackModel);
  $("zones-edit").addEventListener("click", startEditing);
  $("zone-new").addEventListener("click", () => { newZone(); redraw(); });
  $("zone-undo").addEventListener("click", () => { state.edit.zones[state.edit.selected]?.polygon.pop(); renderZoneTable(); redraw(); });
  $("zones-save").addEventListener("click", saveZones);
  $("zones-cancel").addEventListener("click", stopEditing);
  $("zones-revert").addEventListener("click", revertZones);
  $("live").addEventListener("pointerdown", onCanvasDown);
  $("live").addEventListener("pointermove", onCanvasMove);
  $("live").addEventListener("pointerup", onCanvasUp);
  start();
});
