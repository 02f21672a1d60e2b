// The hub's status page: polls the read-only JSON API on this listener
// (/api/v1/...) and draws what it gets. No framework, no CDN. When the ops
// listener has --http-token, the API answers 401 and the page asks for the
// token once (kept in this tab's sessionStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 2000;
const PAGE = 50;
const state = { prev: null, history: [], selected: null, next: null, q: "", online: "", devices: [] };

function token() { return sessionStorage.getItem("hub-token"); }

async function api(path) {
  const headers = {};
  if (token()) headers.Authorization = "Bearer " + token();
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) {
    const t = prompt("This hub's ops listener needs its bearer token (--http-token):");
    if (t) { sessionStorage.setItem("hub-token", t.trim()); return api(path); }
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function time(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const now = Date.now();
  const t = d.toLocaleTimeString([], { hour12: false });
  return now - ms < 86400000 ? t : d.toLocaleDateString() + " " + t;
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return "now";
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function fmtRate(v) { return v < 10 ? v.toFixed(1) : Math.round(v).toLocaleString(); }

function showError(e) {
  const p = $("error");
  if (e) { p.textContent = String(e.message || e); p.hidden = false; } else p.hidden = true;
}

// ---- status, rates, chart -------------------------------------------------

function drawChart(points) {
  const svg = $("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const now = Date.now();
  const pts = points.filter((p) => p[0] >= now - 3600000);
  if (!pts.length) return;
  // the last hour, or less while the hub has been up for less (2 min at least)
  const from = Math.max(now - 3600000, Math.min(pts[0][0], now - 120000));
  const span = now - from;
  const max = Math.max(1, ...pts.map((p) => p[1]));
  const x = (t) => ((t - from) / span) * 600;
  const y = (v) => 115 - (v / max) * 105;
  let d = "";
  pts.forEach((p, i) => { d += (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1) + " "; });
  const ns = "http://www.w3.org/2000/svg";
  const area = document.createElementNS(ns, "path");
  area.setAttribute("d", d + "L" + x(pts[pts.length - 1][0]).toFixed(1) + " 120 L" + x(pts[0][0]).toFixed(1) + " 120 Z");
  area.setAttribute("class", "area");
  const line = document.createElementNS(ns, "path");
  line.setAttribute("d", d);
  line.setAttribute("class", "line");
  svg.appendChild(area);
  svg.appendChild(line);
  $("chart-min").textContent = span >= 3590000 ? "1 h ago" : Math.round(span / 60000) + " min ago";
  $("chart-max").textContent = "peak " + max.toLocaleString() + " · now " + pts[pts.length - 1][1].toLocaleString();
}

async function refreshStatus() {
  const s = await api("/api/v1/status");
  $("hub-id").textContent = s.hub;
  $("version").textContent = "v" + s.version;
  document.title = "hub " + s.hub;
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : "not ready";
  ready.className = "pill " + (s.ready ? "ok" : "bad");
  $("connections").textContent = s.connections.toLocaleString();
  $("devices-total").textContent = "of " + s.devices.toLocaleString() + " devices, max " + s.max_connections.toLocaleString();
  if (state.prev) {
    const dt = (s.time - state.prev.time) / 1000;
    if (dt > 0) {
      $("rate-in").textContent = fmtRate(Math.max(0, s.messages.in - state.prev.messages.in) / dt);
      $("rate-out").textContent = fmtRate(Math.max(0, s.messages.out - state.prev.messages.out) / dt);
    }
  }
  state.prev = s;
  const b = $("broker");
  b.textContent = s.broker.connected === s.workers.live && s.workers.live > 0 ? "up" : "down";
  b.className = "big " + (b.textContent === "up" ? "yes" : "no");
  $("broker-detail").textContent = s.broker.connected + " of " + s.workers.live + " workers connected";
  $("workers").textContent = s.workers.live + " / " + s.workers.configured;
  $("workers-detail").textContent = s.workers.restarts + " restarts · registry open in " + s.registry.open;
  // server history (10 s samples), then this page's own polls
  const hist = s.history.map((h) => [h[0], h[1]]);
  const last = hist.length ? hist[hist.length - 1][0] : 0;
  state.history = state.history.filter((p) => p[0] > last && p[0] > Date.now() - 3600000);
  state.history.push([s.time, s.connections]);
  drawChart(hist.concat(state.history));
  $("updated").textContent = "updated " + new Date(s.time).toLocaleTimeString([], { hour12: false });
}

// ---- devices ----------------------------------------------------------------

// a device's groups as text: the names the API lists, and how many more
function groupsText(d) {
  const g = (d.groups || []).join(", ");
  return d.groups_more ? g + " +" + d.groups_more + " more" : g;
}

function cell(tr, col, text) {
  const td = el("td", text);
  td.dataset.col = col;
  tr.appendChild(td);
  return td;
}

function deviceRow(d, withGroups) {
  const tr = el("tr");
  tr.dataset.id = d.id;
  if (d.id === state.selected) tr.className = "sel";
  cell(tr, "id", d.id);
  cell(tr, "name", d.name || "–");
  if (withGroups) {
    const g = cell(tr, "groups", groupsText(d) || "–");
    g.className = "groups";
    g.title = groupsText(d);
  }
  const on = cell(tr, "online");
  on.appendChild(el("span", d.online ? "online" : (d.disabled ? "disabled" : "offline"), d.online ? "yes" : "no"));
  cell(tr, "since", d.online ? time(d.since) : "–");
  cell(tr, "addr", d.addr || "–");
  cell(tr, "last", d.online ? "now" : ago(d.last_seen));
  tr.addEventListener("click", () => selectDevice(d.id));
  return tr;
}

// the list as shown: a groups column only when a device shown has groups
function renderDevices() {
  const withGroups = state.devices.some((d) => d.groups && d.groups.length);
  $("groups-col").hidden = !withGroups;
  const body = $("devices").tBodies[0];
  while (body.firstChild) body.removeChild(body.firstChild);
  state.devices.forEach((d) => body.appendChild(deviceRow(d, withGroups)));
  if (!state.devices.length) {
    const tr = el("tr"); const td = el("td", "no devices match", "muted");
    td.colSpan = withGroups ? 7 : 6;
    tr.appendChild(td); body.appendChild(tr);
  }
}

async function loadDevices(append) {
  const p = new URLSearchParams({ limit: PAGE });
  if (state.q) p.set("q", state.q);
  if (state.online) p.set("online", state.online);
  if (append && state.next) p.set("after", state.next);
  const r = await api("/api/v1/devices?" + p);
  state.devices = append ? state.devices.concat(r.devices) : r.devices;
  renderDevices();
  state.next = r.next;
  $("more").hidden = !r.next;
}

// ---- events -----------------------------------------------------------------

async function loadEvents() {
  const p = new URLSearchParams({ limit: state.selected ? 30 : 15 });
  if (state.selected) p.set("device", state.selected);
  const r = await api("/api/v1/events?" + p);
  const body = $("events").tBodies[0];
  while (body.firstChild) body.removeChild(body.firstChild);
  r.events.forEach((e) => {
    const tr = el("tr");
    tr.appendChild(el("td", time(e.ts)));
    tr.appendChild(el("td", e.device));
    const k = el("td");
    k.appendChild(el("span", e.kind, e.kind === "online" ? "yes" : "no"));
    tr.appendChild(k);
    tr.appendChild(el("td", e.reason || ""));
    tr.appendChild(el("td", e.addr || ""));
    body.appendChild(tr);
  });
}

async function selectDevice(id) {
  state.selected = id;
  const d = await api("/api/v1/devices/" + encodeURIComponent(id));
  $("events-title").textContent = "events of " + d.id + (d.name ? " (" + d.name + ")" : "") +
    (d.online ? " · online since " + time(d.since) + " from " + d.addr : " · offline");
  const g = $("device-groups");
  while (g.firstChild) g.removeChild(g.firstChild);
  if (d.groups && d.groups.length) {
    g.appendChild(el("span", "groups ", "muted"));
    d.groups.forEach((name) => g.appendChild(el("span", name, "tag")));
    if (d.groups_more) g.appendChild(el("span", "+" + d.groups_more + " more", "muted"));
  }
  g.hidden = !g.firstChild;
  $("events-all").hidden = false;
  for (const tr of $("devices").tBodies[0].rows) tr.className = tr.dataset.id === id ? "sel" : "";
  await loadEvents();
}

// ---- loop -------------------------------------------------------------------

async function tick() {
  try {
    await refreshStatus();
    await loadDevices(false);
    await loadEvents();
    showError(null);
  } catch (e) {
    showError(e);
  }
}

let searchTimer = null;
document.addEventListener("DOMContentLoaded", () => {
  $("search").addEventListener("input", (ev) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.q = ev.target.value.trim(); loadDevices(false).catch(showError); }, 200);
  });
  $("filter").addEventListener("change", (ev) => { state.online = ev.target.value; loadDevices(false).catch(showError); });
  $("more").addEventListener("click", () => loadDevices(true).catch(showError));
  $("events-all").addEventListener("click", () => {
    state.selected = null;
    $("events-title").textContent = "newest presence events";
    $("events-all").hidden = true;
    $("device-groups").hidden = true;
    loadEvents().catch(showError);
    for (const tr of $("devices").tBodies[0].rows) tr.className = "";
  });
  tick();
  setInterval(tick, POLL_MS);
});
