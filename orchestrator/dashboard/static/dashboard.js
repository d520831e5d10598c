// The orchestrator dashboard: polls /api/state every second and /api/history
// every two, and redraws in place (no reload). Everything shown is text
// (textContent), never markup: dead letters carry whatever producers wrote.
"use strict";

const STATE_EVERY_MS = 1000;
const HISTORY_EVERY_MS = 2000;
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const CHARTS = ["backlog", "spawns", "exits", "recovered"];
window.orchCharts = {};  // figure -> {queues, data, plot}: what is drawn (tests read it)

const $ = (id) => document.getElementById(id);

function cell(text, cls, field) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : String(text);
  if (cls) td.className = cls;
  if (field) td.dataset.field = field;
  return td;
}

function num(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : n;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)}m`;
  return `${(seconds / 3600).toFixed(1)}h`;
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString("en-GB") : "–";
}

function fill(tableId, rows, toCells, keyOf, emptyText) {
  const body = $(tableId).tBodies[0];
  const fresh = rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.key = keyOf(row);
    toCells(row).forEach((td) => tr.appendChild(td));
    return tr;
  });
  if (!fresh.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(emptyText);
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    tr.appendChild(td);
    fresh.push(tr);
  }
  body.replaceChildren(...fresh);
}

function renderQueues(queues) {
  fill("queues", queues, (q) => [
    cell(q.name, "", "name"),
    cell(q.label, "", "label"),
    cell(`${q.live}/${q.max}`, "num", "workers"),
    cell(q.busy, "num", "busy"),
    cell(`${num(q.backlog)}${q.backlog_exact ? "" : "+"}`, "num", "backlog"),
    cell(num(q.pending), "num", "pending"),
    cell(age(q.oldest_age_s), "num", "oldest"),
    cell(num(q.dead_letters), q.dead_letters ? "num bad" : "num", "dead_letters"),
    cell(q.backoff.join("; "), q.backoff.length ? "bad" : "", "backoff"),
  ], (q) => q.name, "no spawner is alive");
}

function renderHosts(hosts) {
  fill("hosts", hosts, (h) => [
    cell(h.host, "", "host"),
    cell(`${h.heartbeat_age_s.toFixed(1)}s ago`, "num", "heartbeat"),
    cell(h.pid, "num", "pid"),
    cell(clock(h.started_at), "", "started"),
    cell(h.workers, "num", "workers"),
    cell(h.queues.join(", "), "wrap", "queues"),
    cell(h.redis_ok ? "ok" : "unreachable", h.redis_ok ? "ok" : "bad", "redis"),
  ], (h) => h.host, "no spawner is alive: no host heartbeat in Redis");
}

function renderWorkers(workers) {
  fill("workers", workers, (w) => [
    cell(w.host, "", "host"),
    cell(w.worker_id, "", "worker_id"),
    cell(w.queue, "", "queue"),
    cell(w.pid, "num", "pid"),
    cell(age(w.runtime_s), "num", "runtime"),
    cell(age(w.deadline_in_s), "num", "deadline"),
  ], (w) => `${w.host}/${w.worker_id}`, "no workers");
}

function renderDeadLetters(rows, actions) {
  $("token-box").hidden = !actions;
  document.querySelector("#dead-letters th.actions").hidden = !actions;
  fill("dead-letters", rows, (d) => {
    const cells = [
      cell(d.queue, "", "queue"),
      cell(d.id, "", "id"),
      cell(clock(d.failed_at), "", "failed_at"),
      cell(d.attempts, "num", "attempts"),
      cell(d.error, "wrap bad", "error"),
      cell(d.preview, "wrap", "preview"),
    ];
    if (actions) {
      const td = document.createElement("td");
      for (const action of ["retry", "purge"]) {
        const b = document.createElement("button");
        b.textContent = action;
        b.dataset.action = action;
        b.addEventListener("click", () => act(d.queue, action, [d.id]));
        td.appendChild(b);
      }
      cells.push(td);
    }
    return cells;
  }, (d) => `${d.queue}/${d.id}`, "no dead letters");
}

async function act(queue, action, ids) {
  const token = $("token").value;
  sessionStorage.setItem("orch-token", token);
  const res = await fetch(`/api/dead-letters/${encodeURIComponent(queue)}/${action}`, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Orch-Token": token},
    body: JSON.stringify({ids}),
  });
  const body = await res.json();
  $("action-result").textContent = res.ok ? `${action}: ${body.count} done` : body.error;
}

function renderApps(apps) {
  const holder = $("apps");
  const boxes = apps.map((app) => {
    const section = document.createElement("section");
    section.dataset.app = app.key;
    const h2 = document.createElement("h2");
    h2.textContent = app.title;
    section.appendChild(h2);
    if (app.error) {
      const p = document.createElement("p");
      p.className = "bad";
      p.textContent = `could not read: ${app.error}`;
      section.appendChild(p);
    }
    const table = document.createElement("table");
    table.id = `app-${app.key}`;
    const head = table.createTHead().insertRow();
    const withBars = app.rows.some((r) => r.progress !== null);
    const first = app.rows.length ? app.rows[0].cells : [];
    for (const [j, heading] of [...app.columns, ...(withBars ? ["progress"] : [])].entries()) {
      const th = document.createElement("th");
      th.textContent = heading;
      if (typeof first[j] === "number") th.className = "num";
      head.appendChild(th);
    }
    table.appendChild(document.createElement("tbody"));
    section.appendChild(table);
    return [section, table, withBars];
  });
  holder.replaceChildren(...boxes.map(([section]) => section));
  apps.forEach((app, i) => {
    const [, table, withBars] = boxes[i];
    fill(table.id, app.rows, (row) => {
      const cells = row.cells.map((v, j) => cell(num(v), typeof v === "number" ? "num" : "",
        app.columns[j]));
      if (withBars) {
        const td = document.createElement("td");
        if (row.progress !== null) {
          const bar = document.createElement("progress");
          bar.max = 1;
          bar.value = row.progress;
          bar.dataset.progress = String(row.progress);
          td.appendChild(bar);
          td.appendChild(document.createTextNode(` ${(row.progress * 100).toFixed(1)}%`));
        }
        cells.push(td);
      }
      return cells;
    }, (row) => String(row.cells[0]), "none");
  });
}

function renderBanner(s) {
  const banner = $("banner");
  document.body.classList.toggle("stale", !s.redis.ok);
  banner.hidden = s.redis.ok;
  if (!s.redis.ok) {
    banner.textContent = `Redis unreachable at ${s.redis.url} since ${clock(s.redis.down_since)}`
      + ` (${s.redis.error}); showing what was read at ${clock(s.redis.read_at)}.`
      + " Retrying every second.";
  }
}

function render(s) {
  $("redis-url").textContent = s.redis.url;
  $("updated").textContent = `updated ${clock(s.at)}`;
  $("mode").textContent = s.actions ? "actions allowed" : "read-only";
  renderBanner(s);
  renderQueues(s.queues);
  renderHosts(s.hosts);
  renderWorkers(s.workers);
  renderDeadLetters(s.dead_letters, s.actions);
  renderApps(s.apps || []);
}

function unreachable(error) {
  const banner = $("banner");
  banner.hidden = false;
  banner.textContent = `The dashboard server does not answer (${error}); retrying.`;
  document.body.classList.add("stale");
}

function drawChart(figure, history) {
  const series = history.series[figure] || {};
  const queues = Object.keys(series);
  const data = [history.t, ...queues.map((q) => series[q])];
  const holder = $(`chart-${figure}`);
  let chart = window.orchCharts[figure];
  if (chart && chart.queues.join("\n") !== queues.join("\n")) {
    chart.plot.destroy();
    chart = null;
  }
  if (!chart) {
    const bars = figure !== "backlog" && uPlot.paths.bars ? uPlot.paths.bars({size: [0.8]}) : null;
    const opts = {
      width: Math.max(320, holder.clientWidth || 420),
      height: 200,
      // Always the last hour, however few buckets there are yet.
      scales: {x: {time: true, range: () => [Date.now() / 1000 - 3600, Date.now() / 1000]}},
      series: [{}, ...queues.map((q, i) => ({
        label: q,
        stroke: COLORS[i % COLORS.length],
        fill: bars ? COLORS[i % COLORS.length] + "88" : undefined,
        paths: bars || undefined,
        points: {show: history.t.length < 60},
        spanGaps: false,
      }))],
    };
    holder.replaceChildren();
    chart = {queues, plot: new uPlot(opts, data, holder)};
    window.orchCharts[figure] = chart;
  } else {
    chart.plot.setData(data);
  }
  chart.data = data;
}

function renderHistory(history) {
  $("history-note").textContent = history.t.length
    ? `(${history.t.length} buckets of ${history.bucket_s}s)`
    : "(no history yet: spawners record it while a dashboard runs, or always with"
      + " spawner.history: true)";
  for (const figure of CHARTS) drawChart(figure, history);
}

function every(ms, url, onData) {
  const loop = async () => {
    try {
      const res = await fetch(url, {cache: "no-store"});
      onData(await res.json());
    } catch (error) {
      unreachable(error);
    } finally {
      setTimeout(loop, ms);
    }
  };
  loop();
}

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = sessionStorage.getItem("orch-token") || "";
  every(STATE_EVERY_MS, "/api/state", render);
  every(HISTORY_EVERY_MS, "/api/history", renderHistory);
});
