// Appliance console: a small single-page app in plain JS (no framework, no build step).
// Views render from the JSON API; the SSE stream /api/v1/events triggers a refresh of the
// visible view, so changes on the box show up without reloading.
"use strict";

const $main = document.getElementById("main");
let session = null; // { csrf, capabilities, version }
let current = null; // { name, refresh(), dirty? }
let refreshTimer = 0;

// ---------- DOM helpers (no innerHTML with data: everything is text nodes) ----------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}
const link = (href, text, attrs = {}) => h("a", { href, "data-nav": "", ...attrs }, text);
function badge(state) { return h("span", { class: `badge b-${String(state).replace(/[^a-z-]/g, "")}` }, state); }
// A machine whose SMBIOS UUID is not unique (label set by the agent API): named by MAC + baseboard serial.
function junkFlag(r) {
  const why = r.labels["appliance.sidero.dev/junk-uuid"];
  return why ? [" ", h("span", { class: "badge b-junk", title: `SMBIOS UUID not unique (${why}): registered as mac-<MAC>-<baseboard serial>; fix the UUID in the firmware` }, "UUID not unique")] : null;
}
function fmtBytes(b) {
  if (!b) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]; let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b >= 10 || i === 0 ? Math.round(b) : b.toFixed(1)} ${u[i]}`;
}
const fmtMiB = (m) => (m ? fmtBytes(m * 1048576) : "—");
function fmtAgo(unix) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unix));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(unix * 1000).toLocaleDateString();
}
function toast(msg, kind = "") {
  const t = h("div", { class: `toast ${kind}` }, msg);
  document.getElementById("toasts").append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}
function setMain(...kids) { $main.replaceChildren(...kids.filter((k) => k !== null && k !== undefined && k !== false)); }
function setTitle(t) { document.title = `${t} · Appliance console`; }

// ---------- API ----------
class ApiError extends Error {
  constructor(status, body) { super(body.error || `HTTP ${status}`); this.status = status; this.body = body; }
}
async function api(method, path, body) {
  const opts = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") opts.headers["x-csrf-token"] = session ? session.csrf : "";
  if (body !== undefined) { opts.headers["content-type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  if (r.status === 401) { location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`); throw new ApiError(401, {}); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

// ---------- Confirm dialog ----------
function confirmAction(title, text, okLabel, danger) {
  const d = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const ok = document.getElementById("confirm-ok");
  ok.textContent = okLabel;
  ok.className = `btn ${danger ? "danger" : "primary"}`;
  d.returnValue = "";
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
    ok.focus();
  });
}

// ---------- Router ----------
const routes = [
  [/^\/$/, "overview", viewOverview],
  [/^\/servers$/, "servers", viewServers],
  [/^\/servers\/([^/]+)$/, "servers", viewServer],
  [/^\/classes$/, "classes", (m) => viewList("serverclasses", m)],
  [/^\/classes\/([^/]+)$/, "classes", (m) => viewObject("serverclasses", m)],
  [/^\/environments$/, "environments", (m) => viewList("environments", m)],
  [/^\/environments\/([^/]+)$/, "environments", (m) => viewObject("environments", m)],
  [/^\/settings$/, "settings", viewSettings],
];
function navigate(url, replace) {
  if (current && current.dirty && !window.confirm("Discard your unsaved changes?")) return;
  history[replace ? "replaceState" : "pushState"]({}, "", url);
  render(true);
}
async function render(focus) {
  const path = location.pathname;
  if (current && current.cleanup) current.cleanup();
  for (const [re, section, fn] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll(".nav a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    current = { name: section };
    try { await fn(m.slice(1).map(decodeURIComponent)); } catch (e) { showError(e); }
    if (focus) $main.focus({ preventScroll: true });
    return;
  }
  setMain(h("div", { class: "panel" }, h("h1", {}, "Not found"), h("p", {}, link("/", "Back to the overview"))));
}
function showError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  setMain(h("div", { class: "panel" }, h("h1", {}, e.status === 404 ? "Not found" : "Something went wrong"), h("p", { class: "field-error" }, e.message), h("p", {}, link("/", "Back to the overview"))));
}
document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-nav]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", () => render(true));

// ---------- Live updates ----------
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { if (current && current.refresh) current.refresh(); }, 250);
}
function connectEvents() {
  const live = document.getElementById("live");
  const text = live.querySelector(".live-text");
  const es = new EventSource("/api/v1/events");
  es.addEventListener("hello", () => { live.className = "live on"; text.textContent = "Live"; live.title = "Receiving changes from the box"; });
  es.addEventListener("change", (ev) => { if (current && current.onChange) current.onChange(JSON.parse(ev.data)); else scheduleRefresh(); });
  es.addEventListener("resync", scheduleRefresh);
  es.onerror = () => { live.className = "live off"; text.textContent = "Reconnecting…"; live.title = "Lost the live stream; retrying"; };
}

// ---------- Overview ----------
async function viewOverview() {
  setTitle("Overview");
  const draw = async () => {
    const o = await api("GET", "/api/v1/overview");
    const states = [...o.state_order.filter((s) => o.states[s] > 0 || ["discovered", "accepted", "available", "allocated"].includes(s)), "cordoned"];
    const stats = h("div", { class: "stats", id: "state-counts" },
      h("a", { class: "stat", href: "/servers", "data-nav": "" }, h("div", { class: "n", "data-count": "total" }, o.servers), h("div", { class: "l" }, "Servers")),
      states.map((s) => h("a", { class: `stat s-${s} ${o.states[s] ? "" : "zero"}`, href: `/servers?state=${s}`, "data-nav": "" },
        h("div", { class: "n", "data-count": s }, o.states[s] || 0), h("div", { class: "l" }, s))));
    const classes = h("section", { class: "panel flush", "aria-labelledby": "h-classes" }, h("h2", { id: "h-classes" }, "Server classes"),
      o.classes.length === 0 ? h("p", { class: "empty" }, "No ServerClasses yet. ", link("/classes", "Create one")) :
        h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Class"), h("th", { class: "num" }, "Available"), h("th", { class: "num" }, "In use"), h("th", { class: "hide-sm" }, "Usage"))),
          h("tbody", {}, o.classes.map((c) => {
            const total = c.available + c.in_use;
            const bar = h("div", { class: "bar", role: "img", "aria-label": `${c.in_use} of ${total} in use` }, h("span", { class: "u" }), h("span", { class: "a" }));
            if (total) { bar.children[0].style.width = `${(100 * c.in_use) / total}%`; bar.children[1].style.width = `${(100 * c.available) / total}%`; }
            return h("tr", {}, h("td", { class: "name-cell" }, link(`/classes/${encodeURIComponent(c.name)}`, c.name)), h("td", { class: "num" }, c.available), h("td", { class: "num" }, c.in_use), h("td", { class: "hide-sm" }, bar));
          })))));
    const events = h("section", { class: "panel", "aria-labelledby": "h-events" }, h("h2", { id: "h-events" }, "Recent events"),
      o.events.length === 0 ? h("p", { class: "muted" }, "No changes since the box started. New servers and edits appear here live.") :
        h("ol", { class: "timeline", id: "events" }, o.events.map((e) => h("li", {},
          h("time", { datetime: new Date(e.at * 1000).toISOString(), title: new Date(e.at * 1000).toLocaleString() }, fmtAgo(e.at)),
          h("span", { class: "what" }, eventText(e))))));
    const rogue = (o.rogue_dhcp || []).length === 0 ? null : h("div", { class: "notice danger", role: "alert", id: "rogue-dhcp" },
      h("strong", {}, "Rogue DHCP server on the provisioning network. "),
      "Machines may boot from it. Offers answering the box's probe came from: ",
      o.rogue_dhcp.map((r, i) => [i ? "; " : "", h("span", { class: "mono" }, `${r.mac} (${r.source_ip}${r.server_id && r.server_id !== r.source_ip ? `, server id ${r.server_id}` : ""}, offered ${r.offered})`), ` since ${fmtAgo(r.first_seen)}`]),
      ". If it is the site's server (proxy mode), name it in dhcp.expected_servers.");
    setMain(
      rogue,
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Overview"), h("p", { class: "sub" }, `${o.servers} servers · ${o.objects.ServerClass || 0} classes · ${o.objects.Environment || 0} environments · store revision ${o.revision}`))),
      stats, h("div", { class: "grid cols-2" }, classes, events));
  };
  current.refresh = () => draw().catch(showError);
  await draw();
}
function eventText(e) {
  const path = { Server: "/servers/", ServerClass: "/classes/", Environment: "/environments/" }[e.kind];
  const name = path && e.op !== "delete" ? link(path + encodeURIComponent(e.name), e.name) : h("span", { class: "mono" }, e.name);
  if (e.op === "delete") return [`${e.kind} `, name, " deleted"];
  return [`${e.kind} `, name, e.detail ? [" → ", h("strong", {}, e.detail)] : " updated"];
}

// ---------- Servers table ----------
const SERVER_COLS = [
  ["name", "Server", ""], ["state", "State", ""], ["class", "Class", "hide-sm"], ["cpus", "CPU", "num hide-sm"],
  ["memory", "Memory", "num hide-sm"], ["storage", "Storage", "num hide-sm"], ["", "Labels", "hide-sm"], ["", "Power", "hide-sm"],
];
async function viewServers() {
  setTitle("Servers");
  const params = () => new URLSearchParams(location.search);
  const p0 = params();
  const q = h("input", { id: "f-q", type: "search", value: p0.get("q") || "", placeholder: "Name, hostname, vendor, 8 cpu…", autocomplete: "off" });
  const state = h("select", { id: "f-state" }, h("option", { value: "" }, "Any state"));
  const cls = h("select", { id: "f-class" }, h("option", { value: "" }, "Any class"), h("option", { value: "-" }, "In no class"));
  const label = h("input", { id: "f-label", value: p0.get("label") || "", placeholder: "rack=a1", autocomplete: "off" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter servers" },
    h("div", { class: "q" }, h("label", { for: "f-q" }, "Search"), q),
    h("div", {}, h("label", { for: "f-state" }, "State"), state),
    h("div", {}, h("label", { for: "f-class" }, "Class"), cls),
    h("div", {}, h("label", { for: "f-label" }, "Label"), label),
    h("div", {}, h("button", { class: "btn", type: "button", onclick: () => update({ q: "", state: "", class: "", label: "", offset: "" }) }, "Clear")));
  const table = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  const summary = h("p", { class: "sub", id: "servers-summary", "aria-live": "polite" });
  setMain(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Servers"), summary)), h("section", { class: "panel flush" }, form, table, pager));

  function update(changes) {
    const p = params();
    for (const [k, v] of Object.entries(changes)) { if (v === "" || v === undefined) p.delete(k); else p.set(k, v); }
    if (!("offset" in changes)) p.delete("offset");
    history.replaceState({}, "", `/servers${p.toString() ? "?" + p : ""}`);
    draw().catch(showError);
  }
  let typing = 0;
  q.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => update({ q: q.value.trim() }), 250); });
  label.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => update({ label: label.value.trim() }), 300); });
  state.addEventListener("change", () => update({ state: state.value }));
  cls.addEventListener("change", () => update({ class: cls.value }));
  form.addEventListener("submit", (e) => e.preventDefault());

  let filled = false;
  async function draw() {
    const p = params();
    const data = await api("GET", `/api/v1/servers?${p}`);
    const pg = data.page;
    if (!filled) {
      filled = true;
      for (const s of [...data.states, "cordoned"]) state.append(h("option", { value: s }, s));
      for (const c of data.classes) cls.append(h("option", { value: c }, c));
      state.value = p.get("state") || ""; cls.value = p.get("class") || "";
    }
    const sort = p.get("sort") || "name", desc = p.get("order") === "desc";
    const head = h("tr", {}, SERVER_COLS.map(([key, title, klass]) => {
      if (!key) return h("th", { class: klass, scope: "col" }, title);
      const active = sort === key;
      return h("th", { class: klass, scope: "col", "aria-sort": active ? (desc ? "descending" : "ascending") : null },
        h("button", { class: "sort", type: "button", onclick: () => update({ sort: key, order: active && !desc ? "desc" : "", offset: p.get("offset") || "" }) },
          title, h("span", { class: "arrow", "aria-hidden": "true" }, active && desc ? "▼" : "▲")));
    }));
    const body = h("tbody", {}, pg.rows.map((r) => h("tr", { "data-server": r.name },
      h("td", { class: "name-cell" }, link(`/servers/${encodeURIComponent(r.name)}`, r.hostname || r.name), r.hostname ? h("span", { class: "mono" }, r.name) : null, r.hardware ? h("span", { class: "muted show-sm small" }, r.hardware) : null),
      h("td", {}, badge(r.state), r.cordoned ? [" ", badge("cordoned")] : null, junkFlag(r)),
      h("td", { class: "hide-sm" }, r.classes.length ? r.classes.map((c) => h("span", { class: "chip" }, c)) : h("span", { class: "muted" }, "—")),
      h("td", { class: "num hide-sm", title: r.cpus ? `${r.cpus} sockets, ${r.cores} cores` : null }, r.cpus ? `${r.cpus} × ${r.cores ? `${r.cores}c` : "CPU"}` : "—"),
      h("td", { class: "num hide-sm" }, fmtMiB(r.memory_mib)),
      h("td", { class: "num hide-sm" }, r.disks ? `${r.disks} · ${fmtBytes(r.storage_bytes)}` : "—"),
      h("td", { class: "hide-sm" }, Object.entries(r.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))),
      h("td", { class: "hide-sm" }, badge(r.power)))));
    table.replaceChildren(pg.rows.length ? h("table", { id: "servers-table" }, h("caption", { class: "sr" }, "Servers"), h("thead", {}, head), body)
      : h("p", { class: "empty" }, pg.total ? "No server matches these filters." : "No servers yet. They appear here as soon as they PXE boot and register (or are applied with appliance ctl apply)."));
    const from = pg.matched ? pg.offset + 1 : 0, to = pg.offset + pg.rows.length;
    summary.textContent = `${pg.total} servers${pg.matched !== pg.total ? ` · ${pg.matched} match` : ""}`;
    pager.replaceChildren(h("span", { class: "info" }, `Showing ${from}–${to} of ${pg.matched}`),
      h("button", { class: "btn small", type: "button", disabled: pg.offset === 0, onclick: () => update({ offset: String(Math.max(0, pg.offset - pg.limit)), sort: p.get("sort") || "", order: p.get("order") || "" }) }, "← Previous"),
      h("button", { class: "btn small", type: "button", disabled: to >= pg.matched, onclick: () => update({ offset: String(pg.offset + pg.limit), sort: p.get("sort") || "", order: p.get("order") || "" }) }, "Next →"));
  }
  current.refresh = () => draw().catch(showError);
  await draw();
}

// ---------- Server detail ----------
const ACTIONS = [
  ["accept", "Accept", "Accept this server? The box may then wipe it and allocate it to clusters.", "primary"],
  ["cordon", "Cordon", "Cordon this server? It will not be picked for new allocations.", ""],
  ["uncordon", "Uncordon", "Uncordon this server? It becomes allocatable again.", ""],
  ["power-on", "Power on", "Power this server on through its BMC?", ""],
  ["power-off", "Power off", "Power this server off through its BMC? Anything running on it stops.", "danger"],
  ["power-cycle", "Power cycle", "Power cycle this server through its BMC?", "danger"],
  ["pxe-once", "PXE boot once", "Make this server PXE boot on its next start?", ""],
  ["wipe", "Wipe disks", "Wipe every disk of this server? Data on them is destroyed. It is unavailable until its agent has wiped it; a server with a BMC is PXE booted and power cycled into the agent.", "danger"],
];
// The server's Talos log lines (SideroLink), live: SSE /api/v1/servers/<name>/logs. The
// panel is built once per visit and kept across redraws; the stream closes on navigation.
function logsPanel(name) {
  const lines = h("pre", { class: "code logs", id: "server-logs", tabindex: "0", "aria-live": "off" });
  const status = h("span", { class: "muted", id: "logs-status" }, "connecting…");
  const panel = h("section", { class: "panel span-all", "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs" }, "Logs (SideroLink) ", status), lines);
  const MAX = 2000;
  let count = 0;
  const es = new EventSource(`/api/v1/servers/${encodeURIComponent(name)}/logs`);
  es.onopen = () => { status.textContent = count ? "live" : "live, no lines yet"; };
  es.addEventListener("line", (ev) => {
    const l = JSON.parse(ev.data);
    const atEnd = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
    const row = document.createElement("div");
    row.className = `log-line lvl-${l["talos-level"] || "none"}`;
    row.textContent = `${l["talos-time"] || new Date(l.received).toISOString()} ${(l["talos-level"] || "-").padEnd(7)} ${l.msg}`;
    lines.appendChild(row);
    if (++count > MAX) lines.removeChild(lines.firstChild);
    status.textContent = "live";
    if (atEnd) lines.scrollTop = lines.scrollHeight;
  });
  es.onerror = () => { status.textContent = "reconnecting…"; };
  return { panel, close: () => es.close() };
}
// The server's boot timeline: GET /api/v1/servers/<name>/timeline, read on every redraw.
const STEP_LABELS = {
  "dhcp-offer": "DHCP offer", "dhcp-ack": "DHCP ack", "tftp": "TFTP file", "boot-script": "/boot.ipxe",
  "ipxe": "/ipxe decision", "boot-from-disk": "Boot from disk", "kernel": "Kernel fetch", "initrd": "Initrd fetch",
  "registered": "Agent registered", "wiped": "Wiped", "siderolink-up": "SideroLink up",
  "config-fetched": "Config fetched", "installed": "Install done",
};
function timelinePanel(t) {
  const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
  const transfer = (e) => e.bytes == null ? "" : ` (${fmtBytes(e.bytes)}${e.durationMs == null ? "" : ` in ${secs(e.durationMs)}`})`;
  const sums = [
    t.timeToRegisteredMs != null ? ["Time to registered", secs(t.timeToRegisteredMs)] : null,
    t.timeToInstalledMs != null ? ["Time to installed", secs(t.timeToInstalledMs)] : null,
    t.firstDiskBootAt != null ? ["First boot from disk", new Date(t.firstDiskBootAt).toLocaleString()] : null,
  ].filter(Boolean);
  return h("section", { class: "panel span-all", "aria-labelledby": "h-boot" }, h("h2", { id: "h-boot" }, "Boot timeline"),
    sums.length ? h("dl", { class: "kv" }, sums.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])) : null,
    t.events.length ? h("div", { class: "table-wrap" }, h("table", { id: "boot-timeline" },
      h("thead", {}, h("tr", {}, ["Time", "Step", "Outcome", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, t.events.map((e) => h("tr", { "data-step": e.step, "data-outcome": e.outcome },
        h("td", {}, h("time", { datetime: new Date(e.at).toISOString() }, new Date(e.at).toLocaleTimeString())),
        h("td", {}, STEP_LABELS[e.step] || e.step), h("td", {}, badge(e.outcome)),
        h("td", {}, `${e.detail || ""}${transfer(e)}`, e.mac || e.ip ? h("span", { class: "muted mono" }, ` ${[e.mac, e.ip].filter(Boolean).join(" ")}`) : null))))))
      : h("p", { class: "muted" }, "No boot steps recorded for this server yet."));
}
async function viewServer([name]) {
  setTitle(name);
  const logs = logsPanel(name);
  current.cleanup = logs.close;
  const draw = async () => {
    const d = await api("GET", `/api/v1/servers/${encodeURIComponent(name)}`);
    const tl = await api("GET", `/api/v1/servers/${encodeURIComponent(name)}/timeline`).catch(() => ({ events: [] }));
    const r = d.row, o = d.object, hw = (o.spec && o.spec.hardware) || {};
    const caps = d.capabilities;
    const actionBtn = ([key, label, question, style]) => {
      if (key === "accept" && r.accepted) return null;
      if (key === "cordon" && r.cordoned) return null;
      if (key === "uncordon" && !r.cordoned) return null;
      const cap = caps[key] || { enabled: false, reason: "not supported" };
      const btn = h("button", { class: `btn ${style}`, type: "button", "data-action": key, disabled: !cap.enabled, title: cap.enabled ? null : cap.reason, "aria-describedby": cap.enabled ? null : "actions-note" }, label);
      btn.addEventListener("click", async () => {
        if (!(await confirmAction(`${label}: ${r.hostname || r.name}`, question, label, style === "danger"))) return;
        btn.disabled = true;
        try { await api("POST", `/api/v1/servers/${encodeURIComponent(name)}/actions/${key}`); toast(`${label}: done`); }
        catch (e) { toast(`${label} failed: ${e.message}`, "error"); btn.disabled = false; }
      });
      return btn;
    };
    const del = h("button", { class: "btn danger", type: "button", "data-action": "delete" }, "Delete");
    del.addEventListener("click", async () => {
      if (!(await confirmAction(`Delete ${r.hostname || r.name}`, "Forget this server? If it PXE boots again it registers as a new, unaccepted server.", "Delete", true))) return;
      try { await api("DELETE", `/api/v1/servers/${encodeURIComponent(name)}`); toast("Server deleted"); navigate("/servers", true); }
      catch (e) { toast(`Delete failed: ${e.message}`, "error"); }
    });
    const disabled = ACTIONS.filter(([k]) => caps[k] && !caps[k].enabled);
    const kv = (pairs) => h("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === "" || v === undefined || v === null ? h("span", { class: "muted" }, "—") : v)]));
    const sys = hw.system || {}, cpu = hw.compute || {}, mem = hw.memory || {}, sto = hw.storage || {}, net = hw.network || {};
    const st = o.status || {};
    const bmc = o.spec.bmc;
    const addresses = st.addresses || [];
    const env = o.spec.environmentRef ? o.spec.environmentRef.name : "";
    const overviewPanel = h("section", { class: "panel", "aria-labelledby": "h-ov" }, h("h2", { id: "h-ov" }, "Summary"), kv([
      ["State", h("span", { id: "server-state" }, badge(r.state), r.cordoned ? [" ", badge("cordoned")] : null)],
      ["UUID", h("span", { class: "mono" }, r.name)], ["Hostname", r.hostname],
      ["Accepted", r.accepted ? "yes" : "no"], ["Allocated", r.in_use ? "yes" : "no"], ["Clean", r.clean ? "yes" : "no"],
      ["Classes", r.classes.length ? r.classes.map((c) => [link(`/classes/${encodeURIComponent(c)}`, c), " "]) : ""],
      ["Environment", env ? link(`/environments/${encodeURIComponent(env)}`, env) : h("span", { class: "muted" }, "from its class, or the default")],
      ["Labels", Object.keys(r.labels).length ? Object.entries(r.labels).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)) : ""],
      ["Addresses", addresses.length ? addresses.map((a) => h("div", { class: "mono" }, `${a.address || a}${a.type ? ` (${a.type})` : ""}`)) : ""],
    ]));
    const powerPanel = h("section", { class: "panel", "aria-labelledby": "h-pw" }, h("h2", { id: "h-pw" }, "Power and BMC"), kv([
      ["Power", badge(r.power)],
      ["BMC", bmc ? h("span", { class: "mono" }, `${bmc.endpoint || "?"}:${bmc.port || 623} (${bmc.interface || "lanplus"})`) : h("span", { class: "muted" }, "none reported")],
      ["BMC condition", (st.conditions || []).filter((c) => /bmc|power/i.test(c.type || "")).map((c) => h("div", {}, `${c.type}: ${c.status}${c.reason ? ` (${c.reason})` : ""}${c.message ? ` — ${c.message}` : ""}`))],
    ]));
    const hwPanel = h("section", { class: "panel span-all", "aria-labelledby": "h-hw" }, h("h2", { id: "h-hw" }, "Hardware"),
      Object.keys(hw).length === 0 ? h("p", { class: "muted" }, "No inventory reported yet; the agent reports it when the server PXE boots.") : [
        kv([["System", [sys.manufacturer, sys.productName].filter(Boolean).join(" ")], ["Serial", sys.serialNumber ? h("span", { class: "mono" }, sys.serialNumber) : ""],
          ["CPU", r.cpus ? `${r.cpus} socket${r.cpus > 1 ? "s" : ""}${cpu.totalCoreCount ? `, ${cpu.totalCoreCount} cores` : ""}${cpu.totalThreadCount ? `, ${cpu.totalThreadCount} threads` : ""}` : ""],
          ["Memory", r.memory_mib ? `${fmtMiB(r.memory_mib)}${mem.moduleCount ? ` in ${mem.moduleCount} modules` : ""}` : ""],
          ["Storage", r.disks ? `${r.disks} disk${r.disks > 1 ? "s" : ""}, ${fmtBytes(r.storage_bytes)}` : ""], ["Network", r.nics ? `${r.nics} interface${r.nics > 1 ? "s" : ""}` : ""],
          ["Firmware", r.firmware ? h("span", { id: "server-firmware" }, r.firmware.toUpperCase()) : ""],
          ["Secure Boot", r.secure_boot ? h("span", { id: "server-secure-boot" }, badge(r.secure_boot)) : ""]]),
        miniTable("Processors", ["Model", "Cores", "Threads", "MHz"], (cpu.processors || []).map((p) => [p.productName || p.manufacturer, p.coreCount, p.threadCount, p.speed])),
        miniTable("Memory modules", ["Part", "Type", "Size", "Speed"], (mem.modules || []).map((m) => [m.productName || m.manufacturer, m.type, m.size ? fmtMiB(m.size) : "", m.speed])),
        miniTable("Disks", ["Device", "Type", "Size", "Model", "WWID"], (sto.devices || []).map((x) => [x.deviceName || x.name, x.type, fmtBytes(x.size), x.productName, x.wwid])),
        miniTable("Network interfaces", ["Name", "MAC", "MTU", "Addresses"], (net.interfaces || []).map((x) => [x.name, x.mac, x.mtu, (x.addresses || []).join(", ")])),
      ]);
    const when = (at) => h("time", { datetime: new Date(at * 1000).toISOString(), title: new Date(at * 1000).toLocaleString() }, fmtAgo(at));
    const history = h("section", { class: "panel span-all", "aria-labelledby": "h-hist" }, h("h2", { id: "h-hist" }, "Lifecycle history"),
      d.lifecycle.length ? h("ol", { class: "timeline", id: "lifecycle" }, d.lifecycle.map((e) => h("li", {}, when(e.at),
        h("span", { class: "what" }, h("strong", {}, e.event), " ", e.from ? [badge(e.from), " → "] : null, badge(e.to), e.message ? h("span", { class: "muted" }, ` ${e.message}`) : null))))
        : d.history.length ? h("ol", { class: "timeline", id: "history" }, d.history.map((e) => h("li", {}, when(e.at),
          h("span", { class: "what" }, e.op === "delete" ? "deleted" : e.detail ? ["→ ", h("strong", {}, e.detail)] : "updated", h("span", { class: "muted" }, ` (rev ${e.revision})`)))))
          : h("p", { class: "muted" }, "No lifecycle events recorded for this server yet."),
      (st.conditions || []).length ? miniTable("Conditions", ["Type", "Status", "Reason", "Since"], st.conditions.map((c) => [c.type, c.status, c.reason || c.message, c.lastTransitionTime])) : null);
    setMain(
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, link("/servers", "Servers"), " / ", r.hostname || r.name),
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, r.hostname || r.name), h("p", { class: "sub" }, [sys.manufacturer, sys.productName].filter(Boolean).join(" ") || "Server", ` · revision ${r.revision}`)),
        h("div", { class: "actions actionbar", role: "group", "aria-label": "Server actions" }, ACTIONS.map(actionBtn), h("span", { class: "sep", "aria-hidden": "true" }), del)),
      disabled.length ? h("div", { class: "notice", id: "actions-note" }, groupReasons(disabled, caps)) : null,
      h("div", { class: "grid detail" }, overviewPanel, powerPanel, hwPanel, history, timelinePanel(tl), logs.panel),
      h("section", { class: "panel", "aria-labelledby": "h-yaml" }, h("details", {}, h("summary", { id: "h-yaml" }, "Full object (YAML)"), h("pre", { class: "code" }, d.yaml))));
  };
  current.onChange = (c) => { if (c.kind === "Server" && c.name === name) { if (c.op === "delete") { toast("This server was deleted"); navigate("/servers", true); } else scheduleRefresh(); } };
  current.refresh = () => draw().catch(showError);
  await draw();
}
function groupReasons(disabled, caps) {
  const by = new Map();
  for (const [k, label] of disabled) { const r = caps[k].reason; by.set(r, [...(by.get(r) || []), label]); }
  return [...by].map(([reason, labels]) => h("div", {}, h("strong", {}, labels.join(", ")), ` — ${reason}.`));
}
function miniTable(title, cols, rows) {
  if (!rows.length) return null;
  return h("div", { class: "table-wrap" }, h("table", {}, h("caption", { class: "sr" }, title),
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((v) => h("td", {}, v === undefined || v === null || v === "" ? "—" : String(v))))))));
}

// ---------- ServerClasses and Environments ----------
const KINDS = {
  serverclasses: { title: "Server classes", one: "ServerClass", page: "/classes", template: "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: my-class\nspec:\n  qualifiers: {}\n" },
  environments: { title: "Environments", one: "Environment", page: "/environments", template: "apiVersion: metal.sidero.dev/v1alpha2\nkind: Environment\nmetadata:\n  name: my-env\nspec:\n  kernel:\n    url: https://example.com/vmlinuz\n    args: [console=ttyS0]\n  initrd:\n    url: https://example.com/initramfs.xz\n" },
};
async function viewList(kind, [_, creating]) {
  const K = KINDS[kind];
  setTitle(K.title);
  const draw = async () => {
    const d = await api("GET", `/api/v1/${kind}`);
    const head = kind === "serverclasses" ? ["Name", "Available", "In use", "Environment"] : ["Name", "Kernel", "Assets"];
    const rows = d.items.map((i) => kind === "serverclasses"
      ? h("tr", {}, h("td", { class: "name-cell" }, link(`${K.page}/${encodeURIComponent(i.name)}`, i.name)), h("td", { class: "num" }, i.available), h("td", { class: "num" }, i.in_use), h("td", {}, i.environment || h("span", { class: "muted" }, "default")))
      : h("tr", {}, h("td", { class: "name-cell" }, link(`${K.page}/${encodeURIComponent(i.name)}`, i.name)), h("td", { class: "mono" }, i.kernel || "—"), h("td", {}, i.assets.length ? i.assets.map((a) => [assetBadge(a), " "]) : h("span", { class: "muted" }, "—"))));
    setMain(
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, K.title), h("p", { class: "sub" }, `${d.items.length} defined`)),
        h("div", { class: "actions" }, h("button", { class: "btn primary", type: "button", onclick: () => editor(kind, null, K.template) }, `New ${K.one}`))),
      h("section", { class: "panel flush" }, d.items.length ? h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, head.map((c, i) => h("th", { scope: "col", class: i && kind === "serverclasses" && i < 3 ? "num" : "" }, c)))), h("tbody", {}, rows)))
        : h("p", { class: "empty" }, `No ${K.title.toLowerCase()} yet.`)));
  };
  current.refresh = () => draw().catch(showError);
  await draw();
}
const ASSET_BADGE = { ready: "available", failed: "failed", pending: "wiping", "not downloaded": "unknown" };
function assetBadge(a) { return h("span", { class: `badge b-${ASSET_BADGE[a.status] || "unknown"}`, title: a.message || null }, `${a.asset}: ${a.status}`); }
function assetTable(assets) {
  return h("div", { class: "table-wrap" }, h("table", { id: "assets" }, h("caption", { class: "sr" }, "Boot assets"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Asset"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "URL"))),
    h("tbody", {}, assets.map((a) => h("tr", {}, h("td", {}, a.asset), h("td", {}, assetBadge(a)), h("td", { class: "mono url" }, a.url))))));
}

async function viewObject(kind, [name]) {
  const K = KINDS[kind];
  setTitle(name);
  const d = await api("GET", `/api/v1/${kind}/${encodeURIComponent(name)}`);
  editor(kind, name, d.yaml, d.summary);
}

function editor(kind, name, yaml, summary) {
  const K = KINDS[kind];
  const creating = name === null;
  const ta = h("textarea", { id: "yaml", spellcheck: "false", autocapitalize: "off", "aria-describedby": "yaml-help yaml-error", rows: Math.max(16, yaml.split("\n").length + 2) });
  ta.value = yaml;
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const wrap = h("div", { class: "editor" }, gutter, ta);
  const err = h("div", { class: "field-error", id: "yaml-error", role: "alert", hidden: true });
  const save = h("button", { class: "btn primary", type: "submit", id: "save" }, creating ? "Create" : "Save");
  let errLine = 0;
  const lines = () => {
    const n = ta.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h("span", { class: i + 1 === errLine ? "err" : "", "data-line": i + 1 }, i + 1)));
    gutter.scrollTop = ta.scrollTop;
  };
  ta.addEventListener("input", () => { current.dirty = true; lines(); });
  ta.addEventListener("scroll", () => { gutter.scrollTop = ta.scrollTop; });
  ta.addEventListener("keydown", (e) => { // Tab inserts two spaces; Escape then Tab leaves the editor.
    if (e.key === "Tab" && !e.shiftKey && !ta.dataset.escaped) { e.preventDefault(); ta.setRangeText("  ", ta.selectionStart, ta.selectionEnd, "end"); lines(); }
    ta.dataset.escaped = e.key === "Escape" ? "1" : "";
  });
  const goto = (line) => {
    const all = ta.value.split("\n"); let pos = 0;
    for (let i = 0; i < line - 1 && i < all.length; i++) pos += all[i].length + 1;
    ta.focus(); ta.setSelectionRange(pos, pos + (all[line - 1] || "").length);
  };
  const form = h("form", { id: "editor-form", "aria-label": `${K.one} YAML` },
    h("label", { for: "yaml" }, `${K.one} as YAML`), wrap,
    h("p", { class: "help", id: "yaml-help" }, "Validated on the box before anything is written. Tab indents; press Escape then Tab to leave the editor."),
    err, h("div", { class: "row", style: null }, save, h("button", { class: "btn", type: "button", onclick: () => { current.dirty = false; navigate(K.page); } }, "Cancel"),
      creating ? null : h("button", { class: "btn danger", type: "button", onclick: remove }, "Delete")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    save.disabled = true; err.hidden = true; errLine = 0; wrap.classList.remove("invalid"); ta.removeAttribute("aria-invalid");
    try {
      const r = creating ? await api("POST", `/api/v1/${kind}`, { yaml: ta.value }) : await api("PUT", `/api/v1/${kind}/${encodeURIComponent(name)}`, { yaml: ta.value });
      current.dirty = false;
      toast(`${K.one} ${r.name}: ${r.result}`);
      if (creating) navigate(`${K.page}/${encodeURIComponent(r.name)}`, true); else render(false);
    } catch (ex) {
      const b = ex.body || {};
      errLine = b.line || 0;
      err.replaceChildren(...[errLine ? h("button", { class: "btn small danger", type: "button", onclick: () => goto(errLine) }, `Line ${errLine}`) : null, " ",
        b.field ? h("span", { class: "where", "data-field": b.field }, b.field) : null, b.field ? ": " : null, b.message || ex.message].filter((x) => x !== null));
      err.hidden = false; wrap.classList.add("invalid"); ta.setAttribute("aria-invalid", "true");
      lines();
      if (errLine) goto(errLine);
    } finally { save.disabled = false; }
  });
  async function remove() {
    if (!(await confirmAction(`Delete ${name}`, `Delete ${K.one} ${name}?`, "Delete", true))) return;
    try { await api("DELETE", `/api/v1/${kind}/${encodeURIComponent(name)}`); current.dirty = false; toast("Deleted"); navigate(K.page, true); }
    catch (e) { toast(`Delete failed: ${e.message}`, "error"); }
  }
  const side = summary ? h("section", { class: "panel", "aria-labelledby": "h-sum" }, h("h2", { id: "h-sum" }, "Status"), kind === "serverclasses"
    ? h("dl", { class: "kv" }, h("dt", {}, "Available"), h("dd", {}, summary.available), h("dt", {}, "In use"), h("dd", {}, summary.in_use), h("dt", {}, "Environment"), h("dd", {}, summary.environment || "default"))
    : [summary.assets.length ? assetTable(summary.assets) : h("p", { class: "muted" }, "No kernel or initrd URLs."),
      h("p", { class: "help" }, "Download status comes from the Environment's status conditions on the box.")]) : null;
  setMain(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, link(K.page, K.title), " / ", creating ? "new" : name),
    h("div", { class: "page-head" }, h("h1", {}, creating ? `New ${K.one}` : name)),
    h("div", { class: "grid" }, side, h("section", { class: "panel" }, form)));
  current.dirty = false;
  current.onChange = (c) => { if (!creating && c.kind === K.one && c.name === name && !current.dirty) scheduleRefresh(); };
  current.refresh = () => render(false);
  lines();
}

// ---------- Settings ----------
async function viewSettings() {
  setTitle("Settings");
  const draw = async () => {
    const [s, sys, tc] = await Promise.all([api("GET", "/api/v1/settings"), api("GET", "/api/v1/system"), api("GET", "/api/v1/talosconfig")]);
    const n = s.network, d = s.dhcp;
    const show = (v) => (v === undefined || v === null || v === "" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
    const kv = (pairs) => h("dl", { class: "kv" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v instanceof Node ? v : show(v))]));
    const modeText = { server: "DHCP server (owns the network)", proxy: "proxyDHCP beside an existing DHCP server", off: "DHCP is disabled" }[d.mode] || d.mode;
    const boot = d.boot || {};
    setMain(
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Settings"), h("p", { class: "sub" }, "What the box is running with"))),
      h("p", { class: "notice" }, s.editable_reason, "."),
      h("div", { class: "grid cols-2" },
        h("section", { class: "panel", "aria-labelledby": "h-dhcp" }, h("h2", { id: "h-dhcp" }, "DHCP"), kv([
          ["Mode", h("span", { id: "dhcp-mode", "data-mode": d.mode }, badge(d.mode === "off" ? "off" : "on"), " ", modeText)],
          ["Ports", `udp/${d.listen_port}${d.mode === "proxy" ? `, udp/${d.proxy_port}` : ""}`],
          ["Lease time", `${d.lease_time_secs} s`], ["Active leases", d.active_leases], ["Reservations", d.reservations],
          ["Boot files", h("span", { class: "mono" }, `BIOS ${boot.bios} · UEFI ${boot.uefi_x64} · ARM64 ${boot.uefi_arm64} · iPXE ${boot.ipxe_script}`)],
        ])),
        h("section", { class: "panel", "aria-labelledby": "h-net" }, h("h2", { id: "h-net" }, "Network"), kv([
          ["Provisioning interface", n.interface], ["HTTP + gRPC", n.http_listen],
          ["TFTP", n.tftp ? (n.tftp.enabled ? `on, ${n.tftp.listen}, root ${n.tftp.root}` : "off") : "—"],
          ["Logged in with", session.method === "token" ? "admin token" : "console password"], ["Version", session.version]]))),
      h("section", { class: "panel", "aria-labelledby": "h-system" }, h("h2", { id: "h-system" }, "System and update"), kv([
        ["Running", `${show(sys.image_version)} (appliance ${sys.version})`],
        ["Booted slot", h("span", { id: "slot" }, show(sys.slot))], ["Other slot", show(sys.other_slot)],
        ["Last update", h("span", { id: "last-update" }, sys.update_pending ? "being applied…" : show(sys.last_update))]]),
        sys.updates ? h("form", { id: "update-form", class: "row" },
          h("label", {}, "Signed update bundle ", h("input", { type: "file", id: "bundle", accept: ".bundle", required: "" })),
          h("button", { class: "btn danger", type: "submit" }, "Verify, write the other slot and reboot"))
          : h("p", { class: "notice" }, "This box takes no updates (no update key in its image).")),
      h("section", { class: "panel", "aria-labelledby": "h-talos" }, h("h2", { id: "h-talos" }, "Reset without BMC (Talos)"),
        h("p", {}, "Released servers without a BMC are reset through the Talos machine API over SideroLink with their cluster's talosconfig (the `default` one serves clusters without their own). Stored sealed; never shown again."),
        kv([["Clusters with a talosconfig", h("span", { id: "talos-clusters" }, tc.clusters.length ? tc.clusters.join(", ") : "none")]]),
        h("form", { id: "talos-form", class: "row" },
          h("label", {}, "Cluster ", h("input", { type: "text", id: "talos-cluster", placeholder: "default" })),
          h("label", {}, "talosconfig ", h("input", { type: "file", id: "talos-file", required: "" })),
          h("button", { class: "btn", type: "submit" }, "Store talosconfig"))),
      h("section", { class: "panel flush", "aria-labelledby": "h-pools" }, h("h2", { id: "h-pools" }, "Address pools"),
        d.pools.length ? h("div", { class: "table-wrap" }, h("table", { id: "pools" }, h("thead", {}, h("tr", {}, ["Range", "Netmask", "Router", "DNS", "Domain", "In use"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, d.pools.map((p) => h("tr", {}, h("td", { class: "mono" }, p.range), h("td", { class: "mono" }, p.netmask), h("td", { class: "mono" }, show(p.router)),
            h("td", { class: "mono" }, p.dns.join(", ") || "—"), h("td", {}, show(p.domain)), h("td", { class: "num" }, `${p.in_use} / ${p.size}`))))))
          : h("p", { class: "empty" }, d.mode === "server" ? "No pools configured: add [[dhcp.pools]] to the config." : "No pools: the box does not hand out addresses in this mode.")),
      d.leases.length ? h("section", { class: "panel flush", "aria-labelledby": "h-leases" }, h("h2", { id: "h-leases" }, "Active leases"),
        h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["Address", "MAC", "Hostname", "Expires in"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, d.leases.map((l) => h("tr", {}, h("td", { class: "mono" }, l.ip), h("td", { class: "mono" }, l.mac), h("td", {}, show(l.hostname)), h("td", { class: "num" }, `${Math.round(l.expires_in / 60)} min`))))))) : null,
      h("section", { class: "panel", "aria-labelledby": "h-eff" }, h("details", {}, h("summary", { id: "h-eff" }, "Effective configuration (read-only TOML)"), h("pre", { class: "code", tabindex: "0" }, s.effective_toml))));
  };
  current.refresh = () => draw().catch(showError);
  await draw();
  const tform = document.getElementById("talos-form");
  if (tform) tform.addEventListener("submit", (ev) => { ev.preventDefault(); setTalosconfig().catch(showError); });
  const form = document.getElementById("update-form");
  if (form) form.addEventListener("submit", (ev) => { ev.preventDefault(); uploadBundle().catch(showError); });
}

// The talosconfig goes up once; the box checks it and never shows it back.
async function setTalosconfig() {
  const file = document.getElementById("talos-file").files[0];
  if (!file) return;
  const cluster = document.getElementById("talos-cluster").value.trim();
  const r = await api("POST", "/api/v1/talosconfig", { cluster, talosconfig: await file.text() });
  toast(`talosconfig for cluster ${r.cluster} stored (context ${r.context}).`);
  current.refresh();
}

// The bundle goes up as the raw body; the box checks it in full before answering.
async function uploadBundle() {
  const file = document.getElementById("bundle").files[0];
  if (!file) return;
  if (!(await confirmAction("Update the box?", `Write ${file.name} to the other slot and reboot into it. If it does not come up healthy the box returns to this slot by itself.`, "Update and reboot", true))) return;
  toast("Uploading and verifying…");
  const r = await fetch("/api/v1/update", { method: "POST", credentials: "same-origin", body: file,
    headers: { "x-csrf-token": session.csrf, "content-type": "application/octet-stream" } });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data);
  toast(`Version ${data.version} verified: the box writes the other slot and reboots.`);
}

// ---------- Start ----------
document.getElementById("logout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/logout"); } catch (e) { /* already logged out */ }
  location.assign("/login");
});
(async () => {
  try { session = await api("GET", "/api/v1/session"); } catch (e) { return; }
  connectEvents();
  render(false);
})();
