// The cancelpool dashboard. Every job-provided text goes through textContent (never
// innerHTML), so a job named or reporting "<img src=x onerror=alert(1)>" shows those
// characters. The page loads a page of rows from /api/jobs, then applies the changes
// the event stream /api/events pushes; it never reloads the table on a timer.
"use strict";

const PAGE = 50;
const UNFINISHED = new Set(["queued", "running"]);
const state = { status: "", pattern: "", cursor: null, next: null, history: [], rows: new Map() };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function say(text) { document.getElementById("message").textContent = text || ""; }

async function api(path, options) {
  const init = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function matchesFilter(row) {
  if (state.status && row.status !== state.status) return false;
  if (state.pattern) {
    // The server matches for the listing; the stream's new rows use the same glob.
    const glob = new RegExp("^" + state.pattern.replace(/[.+^${}()|\\]/g, "\\$&")
      .replace(/\*/g, ".*").replace(/\?/g, ".") + "$");
    if (!row.name || !glob.test(row.name)) return false;
  }
  return true;
}

function renderRow(row) {
  const tr = el("tr", { "data-job-id": String(row.id), "data-status": row.status });
  const link = el("a", { class: "job", tabindex: "0", text: String(row.id) });
  link.addEventListener("click", () => showDetail(row.id));
  const label = el("td", {}, el("div", { text: row.name || "" }), el("small", { text: row.task }));
  const bar = el("progress", { max: String(row.total || 1), value: String(row.done || 0) });
  if (row.total === null) bar.removeAttribute("value");
  let status = row.status + (row.forced ? " (forced)" : "");
  if (row.cancel_requested && UNFINISHED.has(row.status)) status += " (cancelling)";
  const actions = el("td");
  if (UNFINISHED.has(row.status)) {
    const button = el("button", { type: "button", class: "cancel", text: "Cancel" });
    button.addEventListener("click", () => cancelJob(row.id, button));
    actions.append(button);
  }
  tr.append(
    el("td", {}, link), label,
    el("td", { class: "status status-" + row.status, text: status }),
    el("td", {}, row.status === "running" || row.done !== null ? bar : null),
    el("td", { class: "msg", text: row.progress_message || "" }),
    el("td", { class: "outcome", text: row.summary || "" }),
    actions,
  );
  return tr;
}

function upsert(row, fromStream) {
  const body = document.querySelector("#jobs tbody");
  const old = body.querySelector(`tr[data-job-id="${row.id}"]`);
  if (old) { old.replaceWith(renderRow(row)); return; }
  // A new job shows on the first page when it passes the filter; older pages stay put.
  if (!fromStream || state.cursor !== null || !matchesFilter(row)) return;
  const first = body.firstElementChild;
  if (first && Number(first.dataset.jobId) > row.id) return;
  body.prepend(renderRow(row));
  while (body.children.length > PAGE) body.lastElementChild.remove();
}

async function loadPage() {
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (state.status) query.append("status", state.status);
  if (state.pattern) query.set("pattern", state.pattern);
  if (state.cursor !== null) query.set("cursor", String(state.cursor));
  try {
    const data = await api("/api/jobs?" + query);
    const body = document.querySelector("#jobs tbody");
    body.replaceChildren(...data.jobs.map(renderRow));
    state.next = data.next_cursor;
    document.getElementById("older").disabled = data.next_cursor === null;
    say("");
  } catch (error) { say(error.message); }
}

async function cancelJob(id, button) {
  button.disabled = true;
  try { await api(`/api/jobs/${id}/cancel`, { body: {} }); }
  catch (error) { say(error.message); button.disabled = false; }
}

async function cancelMatching() {
  const pattern = document.getElementById("cancel-pattern").value.trim();
  if (!pattern) { say("give a name pattern to cancel, such as user_42_*"); return; }
  if (!window.confirm(`Cancel every unfinished job whose name matches ${pattern}?`)) return;
  try {
    const out = await api("/api/cancel", { body: { pattern } });
    say(`cancelled ${out.cancelled.length} queued, stopping ${out.requested.length} running`);
  } catch (error) { say(error.message); }
}

function field(list, name, value, pre) {
  if (value === null || value === undefined || value === "") return;
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  list.append(el("dt", { text: name }), el("dd", {}, el(pre ? "pre" : "span", { text })));
}

function tree(items) {
  return items.map((child) => el("li", {},
    el("span", { text: `${child.id} ${child.name || child.task} ${child.status}` }),
    child.children.length ? el("ul", {}, ...tree(child.children)) : null));
}

async function showDetail(id) {
  try {
    const job = await api(`/api/jobs/${id}`);
    const box = document.getElementById("detail");
    document.getElementById("detail-title").textContent = `Job ${job.id}: ${job.name || job.task}`;
    const list = document.getElementById("detail-fields");
    list.replaceChildren();
    field(list, "task", job.task);
    field(list, "status", job.status + (job.forced ? " (forced stop)" : ""));
    field(list, "arguments", { args: job.args, kwargs: job.kwargs }, true);
    field(list, "progress", job.progress_message);
    field(list, "result", job.status === "completed" ? job.result : null, true);
    field(list, "partial result", job.partial_result, true);
    field(list, "error", job.error, true);
    field(list, "traceback", job.traceback, true);
    field(list, "cancel", job.cancel_requested ? `${job.cancel_reason || ""} ${job.cancel_message || ""}` : null);
    document.getElementById("detail-history").replaceChildren(...job.progress_history.map((p) =>
      el("li", { text: `${new Date(p.at * 1000).toLocaleTimeString()} ${p.done ?? ""}/${p.total ?? ""} ${p.message || ""}` })));
    const children = tree(job.children);
    if (job.children_truncated) children.push(el("li", { text: "(more not shown)" }));
    document.getElementById("detail-children").replaceChildren(...children);
    box.hidden = false;
  } catch (error) { say(error.message); }
}

function showCounts(counts) {
  const box = document.getElementById("counts");
  box.replaceChildren(...Object.entries(counts).map(([k, v]) =>
    el("span", { class: "count status-" + k, text: `${k} ${v}  ` })));
}

function drawChart(stats) {
  // Finished jobs per 10 s (bars) and the mean cancel latency in them (line), last 5 min.
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  const now = Date.now() / 1000, span = 300, step = 10, n = span / step;
  const buckets = Array.from({ length: n }, () => ({ count: 0, lat: [] }));
  for (const point of stats.finished) {
    const i = Math.floor((point.at - (now - span)) / step);
    if (i < 0 || i >= n) continue;
    buckets[i].count += 1;
    if (point.cancel_latency !== null) buckets[i].lat.push(point.cancel_latency);
  }
  const most = Math.max(1, ...buckets.map((b) => b.count));
  const slowest = Math.max(0.001, ...buckets.flatMap((b) => b.lat));
  const shapes = [];
  let line = "";
  buckets.forEach((b, i) => {
    const x = 40 + i * (540 / n), h = (b.count / most) * 120;
    const rect = document.createElementNS(ns, "rect");
    for (const [k, v] of Object.entries({ x, y: 140 - h, width: 540 / n - 2, height: h, class: "bar" }))
      rect.setAttribute(k, String(v));
    shapes.push(rect);
    if (b.lat.length) {
      const mean = b.lat.reduce((a, c) => a + c, 0) / b.lat.length;
      line += `${line ? "L" : "M"}${x + 540 / n / 2},${140 - (mean / slowest) * 120}`;
    }
  });
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", line || "M0,0");
  path.setAttribute("class", "lat");
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "2"); label.setAttribute("y", "12");
  label.textContent = `max ${most} jobs/10s, cancel latency up to ${(slowest * 1000).toFixed(0)} ms`;
  svg.replaceChildren(...shapes, path, label);
}

async function loadStats() {
  try {
    const stats = await api("/api/stats");
    showCounts(stats.jobs);
    drawChart(stats);
    document.getElementById("servers").textContent = stats.servers.length
      ? `servers: ${stats.servers.map((s) => `${s.id} (pid ${s.pid}, ${s.workers} workers, allow ${s.allow.join(" ")})`).join("; ")}`
      : "no server running";
  } catch (error) { say(error.message); }
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  let statsDue = 0;
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "on"; loadPage(); });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "off"; });
  source.addEventListener("update", (event) => {
    const message = JSON.parse(event.data);
    for (const row of message.jobs) upsert(row, true);
    if (message.stats) showCounts(message.stats);
    if (message.jobs.some((row) => !UNFINISHED.has(row.status)) && Date.now() > statsDue) {
      statsDue = Date.now() + 2000;  // the chart needs no more than a redraw every 2 s
      loadStats();
    }
  });
}

function start() {
  document.getElementById("apply").addEventListener("click", () => {
    state.status = document.getElementById("status").value;
    state.pattern = document.getElementById("pattern").value.trim();
    state.cursor = null; state.history = [];
    loadPage();
  });
  document.getElementById("older").addEventListener("click", () => {
    if (state.next === null) return;
    state.history.push(state.cursor); state.cursor = state.next; loadPage();
  });
  document.getElementById("newest").addEventListener("click", () => {
    state.cursor = null; state.history = []; loadPage();
  });
  document.getElementById("cancel-matching").addEventListener("click", cancelMatching);
  document.getElementById("detail-close").addEventListener("click", () => {
    document.getElementById("detail").hidden = true;
  });
  loadPage();
  loadStats();
  connect();
}

document.addEventListener("DOMContentLoaded", start);
