// Vigil's web UI: one module, no build step, no third-party code. Every
// figure comes from the gateway's JSON API (/api/v1/rpc/<service>/<Method>),
// which calls query, alerting and heartbeat in the signed-in user's name.
// Text from the backends is only ever set as text, never as HTML.

const app = document.getElementById("app");
const tooltip = document.getElementById("tooltip");
const state = { session: null, project: null, windowMs: 3600000, seq: 0 };

// ---------- helpers ----------

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "text", "path", "line", "polyline", "circle", "title"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.setAttribute("class", v);
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(node.style, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const DASH = "–";
// `+ 0` turns -0 into 0.
const num = (v, d = 2) => (v === null || v === undefined || Number.isNaN(+v) ? DASH : (+v + 0).toLocaleString(undefined, { maximumFractionDigits: d }));
const pct = (v, d = 1) => (v === null || v === undefined ? DASH : `${(+v * 100).toFixed(d)}%`);
function bytes(v) {
  if (v === null || v === undefined) return DASH;
  let x = +v;
  for (const u of ["B", "KiB", "MiB", "GiB", "TiB"]) {
    if (Math.abs(x) < 1024 || u === "TiB") return u === "B" ? `${x.toFixed(0)} B` : `${x.toFixed(1)} ${u}`;
    x /= 1024;
  }
  return DASH;
}
function secs(v) {
  if (v === null || v === undefined) return DASH;
  const s = +v;
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`;
  return `${s.toFixed(2)} s`;
}
const nsText = (ns) => secs(+ns / 1e9);
function ago(ms) {
  if (!ms || +ms === 0) return DASH;
  const s = Math.max(0, (Date.now() - +ms) / 1000);
  if (s < 60) return `${s.toFixed(0)}s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)}m ago`;
  if (s < 86400) return `${(s / 3600).toFixed(0)}h ago`;
  return `${(s / 86400).toFixed(0)}d ago`;
}
const when = (ms) => (ms && +ms > 0 ? new Date(+ms).toLocaleString() : DASH);
const health = (h) => ({ HEALTH_OK: "ok", HEALTH_WARNING: "warning", HEALTH_CRITICAL: "critical" })[h] || "unknown";
const severity = (s) => (s || "").replace("SEVERITY_", "").toLowerCase();
const canEdit = () => ["editor", "admin"].includes(state.session?.roles?.[state.project]);
function windowNow() {
  const end = Date.now();
  return { start_ms: end - state.windowMs, end_ms: end };
}

function showTip(ev, text) {
  tooltip.textContent = text;
  tooltip.hidden = false;
  tooltip.style.left = `${ev.clientX + 14}px`;
  tooltip.style.top = `${ev.clientY + 14}px`;
}
const hideTip = () => { tooltip.hidden = true; };

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(service, method, body = {}) {
  const r = await fetch(`/api/v1/rpc/${service}/${method}`, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": state.session?.csrf || "",
      "x-vigil-project": state.project || "",
    },
    body: JSON.stringify(body),
  });
  if (r.status === 401) {
    window.location.assign(`/auth/login?return_to=${encodeURIComponent("/" + window.location.hash)}`);
    throw new ApiError(401, "signed out");
  }
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new ApiError(r.status, data.error || `HTTP ${r.status}`);
  return data;
}

function errorBox(e) {
  return el("p", { class: "error", text: e instanceof Error ? e.message : String(e) });
}

// A section that loads on its own and shows its own error.
function section(title, load) {
  const box = el("section", {}, title ? el("h2", { text: title }) : null, el("p", { class: "muted", text: "Loading…" }));
  const seq = state.seq;
  Promise.resolve()
    .then(load)
    .then((content) => {
      if (seq !== state.seq) return;
      box.replaceChildren(...(title ? [el("h2", { text: title })] : []), ...[content].flat());
    })
    .catch((e) => {
      if (seq !== state.seq) return;
      box.replaceChildren(...(title ? [el("h2", { text: title })] : []), errorBox(e));
    });
  return box;
}

function table(headers, rows, empty = "Nothing here.") {
  if (!rows.length) return el("p", { class: "muted", text: empty });
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.startsWith("#") ? "num" : "", text: h.replace(/^#/, "") })))),
    el("tbody", {}, rows));
}
const td = (v, cls) => el("td", { class: cls }, v);
const tdn = (v) => el("td", { class: "num" }, v);

// ---------- charts ----------

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

// series: [{name, points: [[ms, value]]}]
function lineChart(title, series, fmt = num) {
  const W = 600, H = 160, L = 56, B = 18, T = 8;
  const all = series.flatMap((s) => s.points);
  const box = el("div", { class: "chart" }, el("h3", { text: title }));
  if (!all.length) {
    box.append(el("p", { class: "muted", text: "No data in this window." }));
    return box;
  }
  const x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  const ymax = Math.max(...all.map((p) => p[1]), 0) * 1.1 || 1;
  const sx = (x) => L + ((x - x0) / Math.max(1, x1 - x0)) * (W - L - 8);
  const sy = (y) => T + (1 - y / ymax) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img", "aria-label": title });
  for (let i = 0; i <= 3; i++) {
    const y = (ymax * i) / 3;
    svg.append(el("line", { class: "axis", x1: L, x2: W - 8, y1: sy(y), y2: sy(y) }));
    svg.append(el("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end", text: fmt(y) }));
  }
  svg.append(el("text", { x: L, y: H - 4, text: new Date(x0).toLocaleTimeString() }));
  svg.append(el("text", { x: W - 8, y: H - 4, "text-anchor": "end", text: new Date(x1).toLocaleTimeString() }));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    svg.append(el("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.6, "vector-effect": "non-scaling-stroke" }));
    if (s.points.length === 1) svg.append(el("circle", { cx: sx(s.points[0][0]), cy: sy(s.points[0][1]), r: 3, fill: COLORS[i % COLORS.length] }));
  });
  svg.addEventListener("mousemove", (ev) => {
    const r = svg.getBoundingClientRect();
    const x = x0 + ((ev.clientX - r.left) / r.width * W - L) / (W - L - 8) * (x1 - x0);
    const lines = series.map((s) => {
      let best = null;
      for (const p of s.points) if (!best || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      return best ? `${s.name}: ${fmt(best[1])}` : null;
    }).filter(Boolean);
    showTip(ev, `${new Date(x).toLocaleTimeString()}\n${lines.join("\n")}`);
  });
  svg.addEventListener("mouseleave", hideTip);
  box.append(svg);
  if (series.length > 1) {
    box.append(el("div", { class: "legend" }, series.map((s, i) =>
      el("span", {}, el("span", { class: "swatch", style: { background: COLORS[i % COLORS.length] } }), s.name))));
  }
  return box;
}

async function promRange(query, name) {
  const w = windowNow();
  const step = Math.max(15000, Math.round(state.windowMs / 120 / 1000) * 1000);
  const r = await api("query", "Query", { query, start_ms: w.start_ms, end_ms: w.end_ms, step_ms: step });
  return (r.series || []).map((s) => ({
    name: name || (s.labels || []).map((l) => `${l.name}=${l.value}`).join(",") || s.metric || "value",
    points: (s.samples || []).map((p) => [+p.timestamp_ms, +p.value]),
  }));
}

// The series of one application: the query service names an application by
// the first non-empty of these labels.
const APP_LABELS = ["application", "systemd_service", "container_id", "process"];
function appSeries(metric, app, extra, range) {
  const esc = (v) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"');
  return "(" + APP_LABELS.map((label, i) => {
    const empties = APP_LABELS.slice(0, i).map((l) => `${l}=""`);
    const matchers = [extra, ...empties, `${label}="${esc(app)}"`].filter(Boolean).join(",");
    return `rate(${metric}{${matchers}}[${range}])`;
  }).join(" or ") + ")";
}

// ---------- session, project, navigation ----------

async function loadSession() {
  const r = await fetch("/api/v1/session", { credentials: "same-origin" });
  if (r.status === 401) {
    window.location.assign(`/auth/login?return_to=${encodeURIComponent("/" + window.location.hash)}`);
    return false;
  }
  state.session = await r.json();
  const projects = state.session.projects || [];
  const saved = localStorage.getItem("vigil.project");
  state.project = projects.includes(saved) ? saved : projects[0] || null;
  const sel = document.getElementById("project");
  sel.replaceChildren(...projects.map((p) => el("option", { value: p, selected: p === state.project, text: p })));
  sel.onchange = () => { state.project = sel.value; localStorage.setItem("vigil.project", sel.value); route(); };
  const role = state.session.roles?.[state.project] || "no role";
  document.getElementById("user").textContent = `${state.session.user.display} · ${role}`;
  if (state.session.can_sign_out) {
    document.getElementById("logout-csrf").value = state.session.csrf;
    document.getElementById("logout").hidden = false;
  }
  const win = document.getElementById("window");
  const savedWin = localStorage.getItem("vigil.window");
  if (savedWin) { win.value = savedWin; state.windowMs = +savedWin; }
  win.onchange = () => { state.windowMs = +win.value; localStorage.setItem("vigil.window", win.value); route(); };
  return true;
}

const PAGES = {
  "": overview, map: serviceMap, app: application, incidents, logs, traces, trace, profiles, heartbeats, settings,
};

function route() {
  state.seq += 1;
  hideTip();
  const [page, ...rest] = window.location.hash.replace(/^#\/?/, "").split("/");
  const args = rest.map(decodeURIComponent);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", (a.dataset.page === "overview" ? "" : a.dataset.page) === (page === "app" || page === "trace" ? "-" : page));
  }
  const render = PAGES[page] || overview;
  app.replaceChildren();
  if (!state.project) {
    app.append(el("p", { class: "error", text: "You have no role in any project. Ask an admin to grant one." }));
    return;
  }
  const started = performance.now();
  Promise.resolve(render(...args)).then(() => {
    document.body.dataset.rendered = page || "overview";
    window.vigilRenderMs = performance.now() - started;
  }).catch((e) => app.append(errorBox(e)));
}

// ---------- pages ----------

async function overview() {
  app.append(el("h1", { text: `Applications · ${state.project}` }));
  const w = windowNow();
  const [apps, incidents] = await Promise.all([
    api("query", "ListApplications", { window: w }).catch((e) => e),
    api("alerting", "ListIncidents", { state: "INCIDENT_STATE_OPEN", limit: 20 }).catch((e) => e),
  ]);
  if (incidents instanceof Error) app.append(errorBox(incidents));
  else if ((incidents.incidents || []).length) {
    app.append(el("h2", { text: "Open incidents" }), incidentTable(incidents.incidents, false));
  }
  if (apps instanceof Error) { app.append(errorBox(apps)); } else {
    const list = (apps.applications || []).slice().sort((a, b) => rank(b.health) - rank(a.health) || a.name.localeCompare(b.name));
    const counts = { ok: 0, warning: 0, critical: 0, unknown: 0 };
    list.forEach((a) => { counts[health(a.health)] += 1; });
    app.append(el("div", { class: "cards", id: "health-cards" },
      ["critical", "warning", "ok", "unknown"].map((h) => el("div", { class: "card" },
        el("div", { class: "label" }, el("span", { class: `dot ${h}` }), h), el("div", { class: "value", text: counts[h] })))));
    app.append(table(["Application", "#Instances", "Nodes", "#Requests/s", "#Errors", "#p99 latency", "Why"],
      list.map((a) => el("tr", { class: "app-row", "data-app": a.name },
        td(el("a", { href: `#/app/${encodeURIComponent(a.name)}` }, el("span", { class: `dot ${health(a.health)}` }), a.name)),
        tdn(a.instances), td((a.nodes || []).join(", ")),
        tdn(num(a.inbound?.request_rate)), tdn(pct(a.inbound?.error_ratio)), tdn(secs(a.inbound?.latency_p99_seconds)),
        td((a.reasons || []).join("; "), "muted"))),
      "No applications seen in this window yet."));
  }
  app.append(section("Hosts", async () => {
    const r = await api("query", "ListHosts", {});
    return table(["Node", "#CPU", "#Cores", "#Memory", "#Load 1m", "Last seen"],
      (r.hosts || []).map((h) => el("tr", { "data-node": h.node },
        td(h.node), tdn(pct(h.cpu_usage_ratio)), tdn(num(h.cpu_cores, 0)),
        tdn(`${pct(h.memory_usage_ratio)} of ${bytes(h.memory_total_bytes)}`), tdn(num(h.load1)), td(ago(h.last_seen_ms)))),
      "No hosts report yet.");
  }));
}
const rank = (h) => ({ HEALTH_CRITICAL: 3, HEALTH_WARNING: 2, HEALTH_OK: 1 })[h] || 0;

// Layered layout: sources left, callees right (longest path from a
// source); a cycle is broken at its least-called node. A layer taller than
// MAP_ROWS wraps into more columns. O(nodes + edges).
const MAP_ROWS = 14;
function layout(nodes, edges) {
  const out = new Map(nodes.map((n) => [n.name, []]));
  const indeg = new Map(nodes.map((n) => [n.name, 0]));
  for (const e of edges) {
    if (!out.has(e.from) || !out.has(e.to) || e.from === e.to) continue;
    out.get(e.from).push(e.to);
    indeg.set(e.to, indeg.get(e.to) + 1);
  }
  const layer = new Map();
  const seen = new Set();
  const drain = (queue) => {
    while (queue.length) {
      const n = queue.shift();
      if (seen.has(n)) continue;
      seen.add(n);
      for (const m of out.get(n)) {
        if (seen.has(m)) continue;
        layer.set(m, Math.max(layer.get(m) || 0, layer.get(n) + 1));
        indeg.set(m, indeg.get(m) - 1);
        if (indeg.get(m) <= 0) queue.push(m);
      }
    }
  };
  const starts = nodes.filter((n) => indeg.get(n.name) === 0).map((n) => n.name);
  for (const q of starts) layer.set(q, 0);
  drain(starts);
  for (;;) {
    const rest = nodes.filter((n) => !seen.has(n.name));
    if (!rest.length) break;
    const pick = rest.reduce((a, b) => (indeg.get(b.name) < indeg.get(a.name) ? b : a)).name;
    if (!layer.has(pick)) layer.set(pick, 0);
    drain([pick]);
  }
  const internal = nodes.filter((n) => !n.external).map((n) => layer.get(n.name));
  const last = Math.max(0, ...internal);
  const layers = [];
  for (const n of nodes) (layers[n.external ? last + 1 : layer.get(n.name)] ||= []).push(n);
  const pos = new Map();
  let x = 0;
  for (const col of layers) {
    if (!col) continue;
    col.sort((a, b) => a.name.localeCompare(b.name));
    col.forEach((n, i) => pos.set(n.name, { x: 40 + (x + Math.floor(i / MAP_ROWS)) * 240, y: 30 + (i % MAP_ROWS) * 46 }));
    x += Math.ceil(col.length / MAP_ROWS);
  }
  return pos;
}

async function serviceMap() {
  const filter = el("input", { type: "search", placeholder: "filter applications", id: "map-filter" });
  app.append(el("h1", { text: "Service map" }), el("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, el("label", {}, "Filter", filter)));
  const r = await api("query", "ServiceMap", { window: windowNow() });
  const nodes = r.nodes || [], edges = r.edges || [];
  if (!nodes.length) { app.append(el("p", { class: "muted", text: "No connections seen in this window yet." })); return; }
  const pos = layout(nodes, edges);
  const svg = el("svg", { id: "map", role: "img", "aria-label": "service map", preserveAspectRatio: "xMinYMin meet" });
  const g = el("g");
  svg.append(g);
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + 180, y1 = a.y + 15, x2 = b.x, y2 = b.y + 15, mx = (x1 + x2) / 2;
    const bad = (e.red?.error_ratio || 0) > 0.01 || (e.failed_connects || 0) > 0;
    const path = el("path", { class: `map-edge${bad ? " bad" : ""}`, d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, "data-from": e.from, "data-to": e.to });
    path.addEventListener("mousemove", (ev) => showTip(ev,
      `${e.from} → ${e.to}\n${num(e.red?.request_rate)} req/s, errors ${pct(e.red?.error_ratio)}\np99 ${secs(e.red?.latency_p99_seconds)}\nconnects ${num(e.connects)}, failed ${num(e.failed_connects)}, retransmits ${num(e.retransmits)}`));
    path.addEventListener("mouseleave", hideTip);
    g.append(path);
  }
  for (const n of nodes) {
    const p = pos.get(n.name);
    const label = n.name.length > 26 ? `${n.name.slice(0, 25)}…` : n.name;
    const node = el("g", { class: `map-node ${health(n.health)}${n.external ? " external" : ""}`, transform: `translate(${p.x},${p.y})`, "data-app": n.name },
      el("rect", { width: 180, height: 30, rx: 6 }), el("text", { x: 10, y: 19, text: label }), el("title", { text: n.name }));
    if (!n.external) node.addEventListener("click", () => { window.location.hash = `#/app/${encodeURIComponent(n.name)}`; });
    g.append(node);
  }
  // Pan and zoom with the view box.
  const xs = [...pos.values()];
  // Opens near 1:1 (never zoomed in past it, so a small map keeps readable
  // proportions; a big one opens at its start): "Fit" shows all of it.
  const full = { w: Math.max(1100, Math.max(...xs.map((p) => p.x)) + 240), h: Math.max(480, Math.max(...xs.map((p) => p.y)) + 70) };
  const vb = { x: 0, y: 0, w: Math.min(full.w, 1800), h: Math.min(full.h, 720) };
  const apply = () => svg.setAttribute("viewBox", `${vb.x} ${vb.y} ${vb.w} ${vb.h}`);
  apply();
  const fit = el("button", { type: "button", class: "small", onclick: () => { Object.assign(vb, { x: 0, y: 0, ...full }); apply(); } }, "Fit");
  filter.closest("form").append(fit);
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
    const r2 = svg.getBoundingClientRect();
    const fx = (ev.clientX - r2.left) / r2.width, fy = (ev.clientY - r2.top) / r2.height;
    vb.x += vb.w * fx * (1 - k); vb.y += vb.h * fy * (1 - k); vb.w *= k; vb.h *= k;
    apply();
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, vx: vb.x, vy: vb.y }; });
  window.addEventListener("mouseup", () => { drag = null; });
  svg.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const r2 = svg.getBoundingClientRect();
    vb.x = drag.vx - ((ev.clientX - drag.x) / r2.width) * vb.w;
    vb.y = drag.vy - ((ev.clientY - drag.y) / r2.height) * vb.h;
    apply();
  });
  filter.addEventListener("input", () => {
    const f = filter.value.toLowerCase();
    for (const n of g.querySelectorAll(".map-node")) n.style.opacity = !f || n.dataset.app.toLowerCase().includes(f) ? 1 : 0.15;
    for (const e of g.querySelectorAll(".map-edge")) e.style.opacity = !f || e.dataset.from.toLowerCase().includes(f) || e.dataset.to.toLowerCase().includes(f) ? 1 : 0.1;
  });
  app.append(el("div", { id: "map-wrap" }, svg),
    el("p", { class: "muted", text: `${nodes.length} applications and endpoints, ${edges.length} connections. Scroll to zoom, drag to pan, click an application to open it.` }));
}

async function application(name) {
  app.append(el("h1", {}, el("a", { href: "#/map", text: "Service map" }), " / ", name));
  const w = windowNow();
  const r = await api("query", "GetApplication", { name, window: w });
  const s = r.summary || {}, red = s.inbound || {}, slo = r.slo || {}, res = r.resources || {};
  app.append(el("div", { class: "cards", id: "app-cards" },
    card("Health", el("span", {}, el("span", { class: `dot ${health(s.health)}` }), health(s.health))),
    card("Requests/s", num(red.request_rate)), card("Errors", pct(red.error_ratio)),
    card("Latency p50 / p99", `${secs(red.latency_p50_seconds)} / ${secs(red.latency_p99_seconds)}`),
    card(`Availability (objective ${num(slo.availability_objective_percent)}%)`, slo.availability_percent == null ? DASH : `${num(slo.availability_percent, 3)}%`),
    card("Error budget left", pct(slo.availability_budget_left, 0)),
    card(`Latency < ${secs(slo.latency_threshold_seconds)} (objective ${num(slo.latency_objective_percent)}%)`, slo.latency_percent == null ? DASH : `${num(slo.latency_percent, 3)}%`),
    card("Burn rate (availability)", num(slo.availability_burn_rate))));
  if ((s.reasons || []).length) app.append(el("p", { class: "hint", text: s.reasons.join("; ") }));

  const L7 = "process_l7_requests_total", H = "process_l7_request_duration_seconds_bucket";
  const charts = el("div", { class: "grid2", id: "red-charts" });
  app.append(el("h2", { text: "RED" }), charts);
  const chart = (title, parts, fmt) => {
    const slot = el("div", { class: "chart" }, el("h3", { text: title }), el("p", { class: "muted", text: "Loading…" }));
    charts.append(slot);
    Promise.all(parts.map(([q, n]) => promRange(q, n))).then((ss) => slot.replaceWith(lineChart(title, ss.flat(), fmt))).catch((e) => slot.append(errorBox(e)));
  };
  chart("Requests per second", [[`sum(${appSeries(L7, name, 'side="server"', "1m")})`, "requests/s"]], num);
  chart("Errors per second", [[`sum(${appSeries(L7, name, 'side="server",status=~"5..|error|SERVFAIL|REFUSED|FORMERR|NOTIMP"', "1m")})`, "errors/s"]], num);
  chart("Latency", [
    [`histogram_quantile(0.5, sum by (le) (${appSeries(H, name, 'side="server"', "1m")}))`, "p50"],
    [`histogram_quantile(0.99, sum by (le) (${appSeries(H, name, 'side="server"', "1m")}))`, "p99"],
  ], secs);
  chart("CPU (cores)", [[`sum(${appSeries("container_cpu_usage_seconds_total", name, "", "1m")})`, "cores"]], num);

  app.append(el("h2", { text: "Resources" }), el("div", { class: "cards" },
    card("CPU", `${num(res.cpu_usage_cores)} cores${res.cpu_limit_cores ? ` of ${num(res.cpu_limit_cores)}` : ""}`),
    card("Memory", `${bytes(res.memory_rss_bytes)}${res.memory_limit_bytes ? ` of ${bytes(res.memory_limit_bytes)}` : ""}`),
    card("Throttled", secs(res.cpu_throttled_seconds)), card("OOM kills", num(res.oom_kills, 0)), card("Restarts", num(res.restarts, 0)),
    card("Memory growth", res.memory_rss_growth_bytes_per_second == null ? DASH : `${bytes(res.memory_rss_growth_bytes_per_second * 3600)}/h`)));

  app.append(el("h2", { text: "Instances" }), table(["Node", "#PID", "Process", "Owner"],
    (r.instances || []).map((i) => el("tr", {}, td(i.node), tdn(i.pid), td(i.process), td(i.owner, "mono")))));

  app.append(el("h2", { text: "Upstreams" }), table(["Upstream", "#Requests/s", "#Errors", "#p99", "#Connects", "#Failed", "#Retransmits", "#RTT"],
    (r.upstreams || []).map((u) => el("tr", {},
      td(u.external ? u.name : el("a", { href: `#/app/${encodeURIComponent(u.name)}`, text: u.name })),
      tdn(num(u.red?.request_rate)), tdn(pct(u.red?.error_ratio)), tdn(secs(u.red?.latency_p99_seconds)),
      tdn(num(u.connects)), tdn(num(u.failed_connects)), tdn(num(u.retransmits)), tdn(secs(u.connect_time_mean_seconds)))),
    "No upstreams seen."));
  app.append(section("Downstreams", async () => {
    const m = await api("query", "ServiceMap", { window: w });
    return table(["Caller", "#Requests/s", "#Errors", "#p99"],
      (m.edges || []).filter((e) => e.to === name).map((e) => el("tr", {},
        td(el("a", { href: `#/app/${encodeURIComponent(e.from)}`, text: e.from })),
        tdn(num(e.red?.request_rate)), tdn(pct(e.red?.error_ratio)), tdn(secs(e.red?.latency_p99_seconds)))),
      "No callers seen.");
  }));
  app.append(section("Inspections", async () => {
    const st = await api("alerting", "InspectionStatus", { application: name });
    return table(["Inspection", "Status", "#Value", "#Threshold", "Summary"],
      (st.results || []).map((x) => el("tr", {},
        td(x.inspection), td(el("span", { class: `sev-${(x.status || "").replace("STATUS_", "").toLowerCase()}`, text: (x.status || "").replace("STATUS_", "").toLowerCase() })),
        tdn(x.value == null ? DASH : `${num(x.value)} ${x.unit}`), tdn(`${num(x.threshold)} ${x.unit}`),
        td(x.incident_id ? el("a", { href: "#/incidents", text: x.summary }) : x.summary))),
      "No inspection has run for it yet.");
  }));
  app.append(section("Recent logs", async () => {
    const l = await api("query", "SearchLogs", { application: name, window: w, limit: 30 });
    return [logTable(l.records || []), el("p", {}, el("a", { href: `#/logs/${encodeURIComponent(name)}`, text: "Open in the logs explorer →" }))];
  }));
  app.append(section("Slowest traces", async () => {
    const t = await api("query", "SearchTraces", { service: name, window: w, limit: 15 });
    const spans = (t.spans || []).slice().sort((a, b) => b.duration_ns - a.duration_ns);
    return traceTable(spans);
  }));
  app.append(el("p", {}, el("a", { href: `#/profiles/${encodeURIComponent(name)}`, text: "CPU profile (flamegraph) →" })));
}
const card = (label, value) => el("div", { class: "card" }, el("div", { class: "label", text: label }), el("div", { class: "value" }, value));

function incidentTable(list, actions) {
  return table(["Severity", "State", "Inspection", "Subject", "Summary", "Opened", ""],
    list.map((i) => {
      const ack = i.acknowledged_by
        ? el("span", { class: "muted", text: `acknowledged by ${i.acknowledged_by}` })
        : actions && i.state === "INCIDENT_STATE_OPEN"
          ? el("button", {
            class: "small ack", disabled: !canEdit(), title: canEdit() ? "Acknowledge" : "needs the editor role",
            onclick: async (ev) => {
              ev.target.disabled = true;
              try { await api("alerting", "AcknowledgeIncident", { id: i.id }); route(); } catch (e) { ev.target.after(errorBox(e)); }
            },
          }, "Acknowledge")
          : null;
      return el("tr", { class: "incident", "data-id": i.id },
        td(severity(i.severity), `sev-${severity(i.severity)}`), td(i.state === "INCIDENT_STATE_OPEN" ? "open" : "resolved"),
        td(i.inspection), td(i.application ? el("a", { href: `#/app/${encodeURIComponent(i.application)}`, text: i.subject }) : i.subject),
        td(el("div", {}, i.summary, i.root_cause?.text ? el("div", { class: "hint root-cause", text: `Likely cause: ${i.root_cause.text}` }) : null)),
        td(ago(i.opened_at_ms)), td(ack));
    }), "No incidents.");
}

async function incidents() {
  const sel = el("select", { id: "incident-state" },
    el("option", { value: "INCIDENT_STATE_OPEN", text: "open" }), el("option", { value: "INCIDENT_STATE_RESOLVED", text: "resolved" }),
    el("option", { value: "INCIDENT_STATE_UNSPECIFIED", text: "all" }));
  const body = el("div");
  const load = async () => {
    body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    try {
      const r = await api("alerting", "ListIncidents", { state: sel.value, limit: 200 });
      body.replaceChildren(incidentTable(r.incidents || [], true));
    } catch (e) { body.replaceChildren(errorBox(e)); }
  };
  sel.addEventListener("change", load);
  app.append(el("h1", { text: "Incidents" }), el("form", { class: "filters" }, el("label", {}, "State", sel)), body);
  await load();
}

function logTable(records) {
  return table(["Time", "Severity", "Application", "Message"],
    records.map((l) => el("tr", { class: "log-row" },
      td(new Date(+l.time_ms).toLocaleTimeString(), "mono"), td(l.severity_text, `sev-${l.severity_text}`), td(l.service),
      td(el("div", { class: "log-line" }, l.body, l.trace_id ? el("div", {}, el("a", { href: `#/trace/${l.trace_id}`, text: `trace ${l.trace_id.slice(0, 16)}…` })) : null)))),
    "No log lines match.");
}

async function logs(appName = "", traceId = "") {
  const f = {
    application: el("input", { name: "application", value: appName, placeholder: "any" }),
    text: el("input", { name: "text", placeholder: "words in the message" }),
    severity: el("select", { name: "severity" }, [["0", "any"], ["9", "info+"], ["13", "warn+"], ["17", "error+"]].map(([v, t]) => el("option", { value: v, text: t }))),
    trace: el("input", { name: "trace_id", placeholder: "trace id", value: traceId }),
  };
  const results = el("div"), patterns = el("div");
  let cursor = "";
  const more = el("button", { type: "button", hidden: true }, "More");
  const query = () => ({ application: f.application.value.trim(), text: f.text.value.trim(), min_severity: +f.severity.value, trace_id: f.trace.value.trim(), window: windowNow(), limit: 100 });
  const search = async (append) => {
    try {
      const r = await api("query", "SearchLogs", { ...query(), cursor: append ? cursor : "" });
      cursor = r.next_cursor || "";
      more.hidden = !cursor;
      const t = logTable(r.records || []);
      if (append && results.querySelector("tbody") && t.querySelector("tbody")) results.querySelector("tbody").append(...t.querySelector("tbody").children);
      else results.replaceChildren(t);
    } catch (e) { results.replaceChildren(errorBox(e)); }
    if (!append) {
      try {
        const p = await api("query", "LogPatterns", query());
        patterns.replaceChildren(table(["#Count", "Pattern (example)", "Last seen"],
          (p.patterns || []).slice(0, 20).map((x) => el("tr", { class: "pattern-row" }, tdn(num(x.count, 0)), td(el("span", { class: "log-line", text: x.example })), td(ago(x.last_seen_ms)))),
          "No patterns."));
      } catch (e) { patterns.replaceChildren(errorBox(e)); }
    }
  };
  more.addEventListener("click", () => search(true));
  app.append(el("h1", { text: "Logs" }),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); search(false); } },
      el("label", {}, "Application", f.application), el("label", {}, "Text", f.text), el("label", {}, "Severity", f.severity),
      el("label", {}, "Trace", f.trace), el("button", { type: "submit" }, "Search")),
    el("div", { class: "grid2" }, el("div", {}, el("h2", { text: "Lines" }), results, more), el("div", {}, el("h2", { text: "Patterns" }), patterns)));
  await search(false);
}

function traceTable(spans) {
  return table(["Start", "Service", "Operation", "#Duration", "Status"],
    spans.map((s) => el("tr", { class: "trace-row" },
      td(new Date(+s.start_ns / 1e6).toLocaleTimeString(), "mono"), td(s.service),
      td(el("a", { href: `#/trace/${s.trace_id}`, text: s.name })), tdn(nsText(s.duration_ns)), td(s.status))),
    "No traces match.");
}

async function traces() {
  const f = {
    service: el("input", { name: "service", placeholder: "any" }),
    operation: el("input", { name: "operation", placeholder: "any" }),
    min: el("input", { name: "min_duration_ms", type: "number", min: 0, placeholder: "ms" }),
    status: el("select", { name: "status" }, ["", "ok", "error", "unset"].map((v) => el("option", { value: v, text: v || "any" }))),
  };
  const results = el("div");
  const search = async () => {
    try {
      const r = await api("query", "SearchTraces", {
        service: f.service.value.trim(), operation: f.operation.value.trim(), min_duration_ms: +(f.min.value || 0),
        status: f.status.value, window: windowNow(), limit: 100,
      });
      results.replaceChildren(traceTable(r.spans || []));
    } catch (e) { results.replaceChildren(errorBox(e)); }
  };
  app.append(el("h1", { text: "Traces" }),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); search(); } },
      el("label", {}, "Service", f.service), el("label", {}, "Operation", f.operation), el("label", {}, "Min duration", f.min),
      el("label", {}, "Status", f.status), el("button", { type: "submit" }, "Search")), results);
  await search();
}

async function trace(id) {
  app.append(el("h1", { text: `Trace ${id}` }));
  const r = await api("query", "GetTrace", { trace_id: id });
  const spans = r.spans || [];
  const total = Math.max(1, +r.duration_ns);
  app.append(el("p", { class: "muted", text: `${spans.length} spans, ${nsText(r.duration_ns)}, from ${new Set(spans.map((s) => s.service)).size} services` }));
  const wf = el("div", { class: "waterfall", id: "waterfall" });
  for (const s of spans) {
    const left = (+s.offset_ns / total) * 100, width = Math.max(0.2, (+s.duration_ns / total) * 100);
    const bar = el("div", { class: `wf-bar${s.status === "error" ? " error" : ""}`, style: { left: `${left}%`, width: `${width}%` } }, el("span", { text: nsText(s.duration_ns) }));
    const name = el("div", { class: "wf-name", style: { paddingLeft: `${0.5 + s.depth * 0.9}rem` }, title: `${s.service}: ${s.name}` },
      el("strong", { text: s.service }), " ", s.name);
    const row = el("div", { class: "wf-row span-row" }, name, el("div", { class: "wf-bar-area" }, bar));
    let detail = null;
    row.addEventListener("click", () => {
      if (detail) { detail.remove(); detail = null; return; }
      const attrs = [...(s.attributes || []), ...(s.resource || [])].map((a) => `${a.name} = ${a.value}`);
      detail = el("div", { class: "wf-detail" },
        el("div", { text: `${s.kind} · status ${s.status}${s.status_message ? `: ${s.status_message}` : ""} · span ${s.span_id}` }),
        attrs.map((a) => el("div", { class: "mono", text: a })),
        (s.events || []).map((e) => el("div", { text: `event ${e.name} at +${nsText(+e.time_ns - +s.start_ns)}` })),
        el("a", { href: `#/logs//${id}`, text: "Logs of this trace →" }));
      row.after(detail);
    });
    wf.append(row);
  }
  app.append(wf);
}

// Flamegraph: one row per depth, frames as boxes sized by their total.
function flame(root, diff) {
  const box = el("div", { class: "flame", id: "flamegraph" });
  const rows = [];
  const total = diff ? 1 : Math.max(1, +root.total);
  const hue = (name) => { let h = 0; for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360; return h; };
  const walk = (n, depth, start, width) => {
    if (width < 0.05) return;
    (rows[depth] ||= []).push({ n, start, width });
    let x = start;
    for (const c of n.children || []) {
      const w = diff ? Math.max(c.baseline_share, c.comparison_share) * 100 : (+c.total / total) * 100;
      walk(c, depth + 1, x, w);
      x += w;
    }
  };
  walk(root, 0, 0, 100);
  rows.forEach((frames) => {
    const row = el("div", { class: "flame-row" });
    for (const { n, start, width } of frames) {
      const f = el("div", { class: "flame-frame", style: { left: `${start}%`, width: `${width}%` }, text: n.name });
      if (diff) {
        const d = n.comparison_share - n.baseline_share;
        f.style.background = d > 0.001 ? `rgba(220,38,38,${Math.min(0.85, 0.25 + d * 8)})` : d < -0.001 ? `rgba(22,163,74,${Math.min(0.85, 0.25 - d * 8)})` : "#e5e7eb";
        f.addEventListener("mousemove", (ev) => showTip(ev, `${n.name}\nbefore ${pct(n.baseline_share)} → now ${pct(n.comparison_share)}`));
      } else {
        f.style.background = `hsl(${20 + (hue(n.name) % 40)}, 85%, ${62 + (hue(n.name) % 15)}%)`;
        f.addEventListener("mousemove", (ev) => showTip(ev, `${n.name}\n${num(n.total, 0)} samples (${pct(+n.total / total)}), self ${num(n.self, 0)}`));
      }
      f.addEventListener("mouseleave", hideTip);
      row.append(f);
    }
    box.append(row);
  });
  return box;
}

async function profiles(appName = "") {
  const input = el("input", { name: "application", value: appName, placeholder: "application", required: true });
  const mode = el("select", { name: "mode" }, el("option", { value: "flame", text: "this window" }), el("option", { value: "diff", text: "diff with the window before" }));
  const out = el("div");
  const show = async () => {
    const name = input.value.trim();
    if (!name) { out.replaceChildren(el("p", { class: "muted", text: "Name an application." })); return; }
    out.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    try {
      const w = windowNow();
      if (mode.value === "diff") {
        const before = { start_ms: w.start_ms - state.windowMs, end_ms: w.start_ms };
        const r = await api("query", "FlamegraphDiff", { application: name, profile_type: "cpu", baseline: before, comparison: w });
        out.replaceChildren(el("p", { class: "muted", text: `${num(r.baseline_samples, 0)} samples before, ${num(r.comparison_samples, 0)} now; red grew, green shrank.` }),
          r.root ? flame(r.root, true) : el("p", { class: "muted", text: "No samples." }));
      } else {
        const r = await api("query", "Flamegraph", { application: name, profile_type: "cpu", window: w });
        const dl = el("button", { type: "button", class: "small", onclick: async () => {
          const p = await api("query", "ExportPprof", { application: name, profile_type: "cpu", window: w });
          const raw = Uint8Array.from(atob(p.pprof_gzip || ""), (c) => c.charCodeAt(0));
          const a = el("a", { href: URL.createObjectURL(new Blob([raw], { type: "application/gzip" })), download: `${name}.pb.gz` });
          a.click();
        } }, "Download pprof");
        out.replaceChildren(el("p", { class: "muted" }, `${num(r.stacks, 0)} stacks, ${num(r.root?.total, 0)} samples `, dl),
          r.root && +r.root.total > 0 ? flame(r.root, false) : el("p", { class: "muted", text: "No samples in this window." }));
      }
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  app.append(el("h1", { text: "Profiles" }),
    el("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); show(); } },
      el("label", {}, "Application", input), el("label", {}, "Show", mode), el("button", { type: "submit" }, "Show")), out);
  if (appName) await show();
}

async function heartbeats() {
  app.append(el("h1", { text: "Heartbeat checks" }));
  const r = await api("heartbeat", "ListChecks", {});
  const status = (s) => (s || "").replace("CHECK_STATUS_", "").toLowerCase();
  const origin = (o) => (o || "").replace("CHECK_ORIGIN_", "").toLowerCase();
  const schedule = (c) => (c.schedule ? `${c.schedule} (${c.tz})` : `every ${secs(+c.period_ms / 1000)}`);
  const action = (c) => {
    const paused = status(c.status) === "paused";
    const result = el("span", { class: "muted" });
    const button = el("button", {
      class: "small check-action", disabled: !canEdit(), title: canEdit() ? "" : "needs the editor role",
      onclick: async () => {
        button.disabled = true;
        try {
          await api("heartbeat", paused ? "ResumeCheck" : "PauseCheck", { id: c.unique_key });
          route();
        } catch (e) { result.textContent = ` ${e.message}`; button.disabled = false; }
      },
    }, paused ? "Resume" : "Pause");
    return el("span", {}, button, result);
  };
  app.append(table(["Check", "Status", "Schedule", "#Grace", "Last ping", "Next ping", "#Pings", "#Last run", ""],
    (r.checks || []).map((c) => el("tr", { class: "check-row" },
      td(el("span", {}, el("strong", { text: c.name }), " ",
        el("span", { class: "muted", text: [c.tags, origin(c.origin)].filter(Boolean).join(" · ") }),
        c.last_message ? el("div", { class: "muted mono", text: c.last_message }) : "")),
      td(el("span", {}, el("span", { class: `dot ${{ up: "ok", late: "warning", down: "critical", paused: "" }[status(c.status)] || ""}` }),
        status(c.status), c.started ? " (running)" : "")),
      td(schedule(c)), tdn(secs(+c.grace_ms / 1000)), td(ago(c.last_ping_ms)),
      td(+c.next_ping_ms ? new Date(+c.next_ping_ms).toLocaleString() : DASH),
      tdn(c.pings), tdn(+c.last_duration_ms ? secs(+c.last_duration_ms / 1000) : DASH), td(action(c)))),
    "No checks configured."));
}

async function settings() {
  app.append(el("h1", { text: "Settings" }),
    el("p", { class: "muted", text: "Read-only: Vigil is configured declaratively (the config file or the Helm values). Editors can send a test notification." }));
  app.append(section("Notification integrations", async () => {
    const r = await api("alerting", "ListIntegrations", {});
    return table(["Name", "Target", "Categories", "Minimum severity", "Deployments", ""],
      (r.integrations || []).map((i) => {
        const result = el("span", { class: "muted" });
        const button = el("button", {
          class: "small test-notification", disabled: !canEdit(), title: canEdit() ? "Send a test notification" : "needs the editor role",
          onclick: async () => {
            button.disabled = true;
            result.textContent = " sending…";
            try {
              const t = await api("alerting", "TestIntegration", { name: i.name });
              result.textContent = t.delivered ? " delivered" : ` not delivered: ${t.error}`;
            } catch (e) { result.textContent = ` ${e.message}`; }
            button.disabled = !canEdit();
          },
        }, "Send test notification");
        return el("tr", { class: "integration-row" }, td(i.name), td(i.target, "mono"), td((i.categories || []).join(", ") || "all"),
          td(i.min_severity || DASH), td(i.deployments ? "yes" : "no"), td(el("span", {}, button, result)));
      }),
      "No integrations configured.");
  }));
  app.append(section("Inspections", async () => {
    const r = await api("alerting", "ListInspections", {});
    return table(["Inspection", "Category", "#Threshold", "#Critical", "Title"],
      (r.inspections || []).map((i) => el("tr", {}, td(i.id, "mono"), td(i.category), tdn(`${num(i.threshold)} ${i.unit}`),
        tdn(i.critical == null ? DASH : `${num(i.critical)} ${i.unit}`), td(i.title))));
  }));
}

// ---------- start ----------

window.addEventListener("hashchange", route);
loadSession().then((ok) => { if (ok) route(); }).catch((e) => app.replaceChildren(errorBox(e)));
