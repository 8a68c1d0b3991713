// The dashboard: polls the JSON API every 2 s, keeps a short history per queue for the charts and the
// rates (from successive counter reads), and sends actions as JSON POSTs with the CSRF token of the
// session (ADR 16). Everything shown from the server is set as text, never parsed as HTML.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90; // points per queue: 3 minutes at one read every 2 s

const state = {
  session: null,           // {user, admin, token}
  history: new Map(),      // queue name -> [{t, produced, completed, ready, leased, scheduled}]
  rows: [],                // the last /api/queues answer's queues
  route: { page: "overview", name: "" },
  itemsAfter: [],          // the stack of `after` ids of the pages seen, for "First page"
  charts: {},
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const $ = (selector) => document.querySelector(selector);
const q = (name) => encodeURIComponent(name);

async function api(path, options) {
  const response = await fetch("/api/" + path, Object.assign({ credentials: "same-origin" }, options));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.message || response.status + " " + response.statusText);
  return body;
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Querator-Token": state.session.token },
    body: JSON.stringify(body || {}),
  });
}

// -- numbers --------------------------------------------------------------------------------------------

function remember(time, rows) {
  const seen = new Set();
  for (const row of rows) {
    seen.add(row.name);
    const points = state.history.get(row.name) || [];
    points.push({ t: time / 1000, produced: row.produced, completed: row.completed,
      ready: row.ready, leased: row.leased, scheduled: row.scheduled });
    if (points.length > HISTORY) points.shift();
    state.history.set(row.name, points);
  }
  for (const name of [...state.history.keys()]) if (!seen.has(name)) state.history.delete(name);
}

// Items per second between the last two reads; null until there are two (a counter that went down means
// the queue was deleted and created again: no rate for that step).
function rate(points, field, at) {
  const i = at === undefined ? points.length - 1 : at;
  if (i < 1) return null;
  const dt = points[i].t - points[i - 1].t;
  const dv = points[i][field] - points[i - 1][field];
  return dt > 0 && dv >= 0 ? dv / dt : null;
}

function series(names) {
  // Sums over `names`, aligned on the reads (every queue is read in the same poll).
  const lists = names.map((n) => state.history.get(n) || []);
  const length = Math.max(0, ...lists.map((l) => l.length));
  const out = { t: [], produced: [], completed: [], ready: [], leased: [], scheduled: [] };
  for (let k = 0; k < length; k++) {
    let t = null;
    const sum = { produced: 0, completed: 0, ready: 0, leased: 0, scheduled: 0 };
    let rated = false;
    for (const list of lists) {
      const i = list.length - length + k;
      if (i < 0) continue;
      t = list[i].t;
      for (const f of ["ready", "leased", "scheduled"]) sum[f] += list[i][f];
      for (const f of ["produced", "completed"]) {
        const r = rate(list, f, i);
        if (r !== null) { sum[f] += r; rated = true; }
      }
    }
    out.t.push(t);
    out.produced.push(rated ? sum.produced : null);
    out.completed.push(rated ? sum.completed : null);
    for (const f of ["ready", "leased", "scheduled"]) out[f].push(sum[f]);
  }
  return out;
}

function fmt(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n === "string") return n;
  return Number.isInteger(n) ? n.toLocaleString("en") : n.toFixed(1);
}

function age(ms) {
  if (!ms) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 7200000) return Math.round(ms / 60000) + " min";
  return (ms / 3600000).toFixed(1) + " h";
}

const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "");

// -- charts ---------------------------------------------------------------------------------------------

function chart(id, labels, colors) {
  const target = document.getElementById(id);
  const width = Math.max(300, target.clientWidth || 500);
  const options = {
    width, height: 200,
    legend: { live: false },
    cursor: { show: false },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, (max || 0) * 1.1)] } },
    series: [{}, ...labels.map((label, i) => ({ label, stroke: colors[i], width: 2, spanGaps: true }))],
    axes: [{}, { size: 60 }],
  };
  const plot = new uPlot(options, [[], ...labels.map(() => [])], target);
  return plot;
}

function ensureCharts(prefix) {
  if (state.charts[prefix]) return state.charts[prefix];
  state.charts[prefix] = {
    throughput: chart(prefix + "chart-throughput", ["produced/s", "completed/s"], ["#2563eb", "#16a34a"]),
    depth: chart(prefix + "chart-depth", ["ready", "leased", "scheduled"], ["#2563eb", "#d97706", "#7c3aed"]),
  };
  return state.charts[prefix];
}

function drawCharts(prefix, names) {
  const charts = ensureCharts(prefix);
  const s = series(names);
  charts.throughput.setData([s.t, s.produced, s.completed]);
  charts.depth.setData([s.t, s.ready, s.leased, s.scheduled]);
}

// -- overview -------------------------------------------------------------------------------------------

function renderOverview() {
  const body = $("#queues tbody");
  body.replaceChildren();
  const deadQueues = new Set(state.rows.map((r) => r.dead_queue).filter(Boolean));
  for (const row of state.rows) {
    const points = state.history.get(row.name) || [];
    const name = el("td", {}, el("a", { href: "#/queue/" + q(row.name), text: row.name }));
    if (row.paused) name.append(" ", el("span", { class: "badge", text: "paused" }));
    if (deadQueues.has(row.name)) name.append(" ", el("span", { class: "badge dead", text: "dead queue" }));
    const toggle = row.paused
      ? el("button", { "data-action": "resume", text: "Resume" })
      : el("button", { "data-action": "pause", text: "Pause" });
    toggle.addEventListener("click", () => act(row.name, toggle.dataset.action));
    body.append(el("tr", { "data-queue": row.name },
      name,
      el("td", { class: "num ready", text: fmt(row.ready) }),
      el("td", { class: "num leased", text: fmt(row.leased) }),
      el("td", { class: "num scheduled", text: fmt(row.scheduled) }),
      el("td", { class: "num dead", text: fmt(row.dead_lettered), title: "items dead-lettered from this queue" }),
      el("td", { class: "num produced-rate", text: fmt(rate(points, "produced")) }),
      el("td", { class: "num completed-rate", text: fmt(rate(points, "completed")) }),
      el("td", { class: "num", text: age(row.oldest_ready_age) }),
      el("td", {}, toggle)));
  }
  $("#no-queues").hidden = state.rows.length > 0;
  drawCharts("", state.rows.map((r) => r.name));
}

// -- one queue ------------------------------------------------------------------------------------------

async function renderQueue(full) {
  const name = state.route.name;
  let detail;
  try {
    detail = await api("queues/" + q(name));
  } catch (error) {
    message(error.message, true);
    return;
  }
  const { info, stats } = detail;
  $("#q-name").textContent = info.name;
  $("#q-paused").hidden = !info.paused;
  const facts = [`${info.partitions} partition${info.partitions === 1 ? "" : "s"}`,
    `lease timeout ${info.lease_timeout} ms`, `max attempts ${info.max_attempts || "unlimited"}`];
  if (info.dead_queue) facts.push(`dead queue ${info.dead_queue}`);
  if (detail.dead_queue_of.length) facts.push(`dead queue of ${detail.dead_queue_of.join(", ")}`);
  $("#q-info").textContent = facts.join(" · ");
  $("#q-actions [data-action=pause]").disabled = info.paused;
  $("#q-actions [data-action=resume]").disabled = !info.paused;
  const cards = [["ready", stats.ready], ["leased", stats.leased], ["scheduled", stats.scheduled],
    ["produced", stats.produced], ["completed", stats.completed], ["retried", stats.retried],
    ["lease expired", stats.lease_expired], ["dead-lettered", stats.dead_lettered],
    ["deduplicated", stats.deduplicated], ["oldest ready", age(stats.oldest_ready_age)],
    ["waiting consumers", stats.waiting_consumers]];
  $("#q-stats").replaceChildren(...cards.map(([label, value]) => el("div", { class: "card", "data-stat": label },
    el("div", { class: "label", text: label }), el("div", { class: "value", text: fmt(value) }))));
  $("#partitions tbody").replaceChildren(...stats.partitions.map((p) => el("tr", {},
    el("td", { text: String(p.partition) }), el("td", { class: "num", text: fmt(p.ready) }),
    el("td", { class: "num", text: fmt(p.leased) }), el("td", { class: "num", text: fmt(p.scheduled) }),
    el("td", { class: "num", text: fmt(p.total) }))));
  if (full) {
    const partitions = $("#items-partition");
    partitions.replaceChildren(el("option", { value: "", text: "all" }),
      ...stats.partitions.map((p) => el("option", { value: String(p.partition), text: String(p.partition) })));
    const targets = $("#redrive-to");
    targets.replaceChildren(el("option", { value: "", text: "their source queues" }),
      ...state.rows.filter((r) => r.name !== name).map((r) => el("option", { value: r.name, text: r.name })));
    await loadItems();
  }
  drawCharts("q-", [name]);
}

async function loadItems() {
  const name = state.route.name;
  const after = state.itemsAfter[state.itemsAfter.length - 1] || "";
  const params = new URLSearchParams({ limit: $("#items-limit").value, after, partition: $("#items-partition").value });
  let page;
  try {
    page = await api("queues/" + q(name) + "/items?" + params);
  } catch (error) {
    message(error.message, true);
    return;
  }
  $("#items tbody").replaceChildren(...page.items.map((item) => {
    const remove = el("button", { "data-action": "remove", class: "danger", text: "Remove" });
    remove.addEventListener("click", () => act(name, "remove", { ids: [item.id] }, `Remove item ${item.id}?`));
    return el("tr", { "data-item": item.id },
      el("td", { class: "mono", text: item.id }), el("td", { text: item.state }),
      el("td", { class: "num", text: String(item.attempts) }), el("td", { class: "when", text: when(item.created_at) }),
      el("td", { text: item.kind }),
      el("td", { class: "mono payload", text: item.payload, title: `${item.payload_bytes} bytes` }),
      el("td", { text: item.reason }), el("td", { text: item.source_queue }),
      el("td", { class: "mono", text: item.source_id }), el("td", { text: item.dead_reason }),
      el("td", {}, remove));
  }));
  $("#no-items").hidden = page.items.length > 0;
  $("#items-next").disabled = !page.next;
  $("#items-next").dataset.next = page.next || "";
  $("#items-first").disabled = state.itemsAfter.length === 0;
}

// -- actions --------------------------------------------------------------------------------------------

function message(text, error) {
  const node = $("#q-message");
  node.textContent = text;
  node.classList.toggle("error", Boolean(error));
}

async function act(name, action, body, question) {
  if (question && !window.confirm(question)) return;
  try {
    const result = await post("queues/" + q(name) + "/" + action, body);
    const done = { pause: "paused", resume: "resumed" }[action]
      || (action === "redrive" ? `${result.moved} items redriven` : `${result.removed} items removed`);
    message(`${name}: ${done}`, false);
  } catch (error) {
    message(`${name}: ${action} failed: ${error.message}`, true);
  }
  await refresh(true);
}

function wireActions() {
  const name = () => state.route.name;
  $("#q-actions [data-action=pause]").addEventListener("click", () => act(name(), "pause"));
  $("#q-actions [data-action=resume]").addEventListener("click", () => act(name(), "resume"));
  $("#q-actions [data-action=clear]").addEventListener("click", () => {
    const all = $("#clear-all").checked;
    act(name(), "clear", { all }, `Remove every ${all ? "" : "ready and scheduled "}item of ${name()}?`);
  });
  $("#q-actions [data-action=redrive]").addEventListener("click", () => {
    const to = $("#redrive-to").value;
    const limit = Number($("#redrive-limit").value) || 1000;
    act(name(), "redrive", to ? { to, limit } : { limit },
      `Redrive up to ${limit} ready items of ${name()} to ${to || "their source queues"}?`);
  });
  $("#items-next").addEventListener("click", () => { state.itemsAfter.push($("#items-next").dataset.next); loadItems(); });
  $("#items-first").addEventListener("click", () => { state.itemsAfter = []; loadItems(); });
  for (const id of ["#items-partition", "#items-limit"]) {
    $(id).addEventListener("change", () => { state.itemsAfter = []; loadItems(); });
  }
}

// -- polling and routing --------------------------------------------------------------------------------

async function refresh(full) {
  try {
    const answer = await api("queues");
    state.rows = answer.queues;
    remember(answer.time, answer.queues);
    const status = $("#status");
    status.textContent = "updated " + new Date(answer.time).toLocaleTimeString("en-GB");
    status.classList.remove("error");
  } catch (error) {
    $("#status").textContent = "cannot read the server: " + error.message;
    $("#status").classList.add("error");
    return;
  }
  if (state.route.page === "overview") renderOverview();
  else await renderQueue(full);
}

function route() {
  const match = /^#\/queue\/(.+)$/.exec(location.hash);
  state.route = match ? { page: "queue", name: decodeURIComponent(match[1]) } : { page: "overview", name: "" };
  state.itemsAfter = [];
  $("#overview").hidden = state.route.page !== "overview";
  $("#queue").hidden = state.route.page !== "queue";
  if (state.route.page === "queue") {
    message("", false);
    // The queue's charts are made for each queue page, with the width the page has now.
    for (const plot of Object.values(state.charts["q-"] || {})) plot.destroy();
    delete state.charts["q-"];
  }
  refresh(true);
}

async function start() {
  state.session = await api("session");
  $("#user").textContent = "user " + state.session.user + (state.session.admin ? " (admin)" : "");
  document.body.classList.toggle("readonly", !state.session.admin);
  wireActions();
  window.addEventListener("hashchange", route);
  route();
  setInterval(() => refresh(false), POLL_MS);
}

start().catch((error) => {
  $("#status").textContent = "cannot start: " + error.message;
  $("#status").classList.add("error");
});
