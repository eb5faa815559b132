// Aether dashboard: renders every state snapshot the server pushes on /api/events (server-sent events).
"use strict";

const $ = (selector) => document.querySelector(selector);

function colour(node) {
  let hash = 2166136261;
  for (const ch of node) { hash ^= ch.codePointAt(0); hash = Math.imul(hash, 16777619) >>> 0; }
  return `hsl(${hash % 360}, 62%, 58%)`;
}

function text(value) { return value === null || value === undefined ? "–" : String(value); }
function rate(value) { return value === null || value === undefined ? "–" : value.toFixed(1); }
function bytes(value) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (value >= 1024 && i < units.length - 1) { value /= 1024; i++; }
  return `${value.toFixed(i ? 1 : 0)} ${units[i]}`;
}
function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)}h`;
  return `${(seconds / 86400).toFixed(1)}d`;
}

function cell(row, value, cls) {
  const td = row.insertCell();
  td.textContent = value;
  td.title = String(value);
  if (cls) td.className = cls;
  return td;
}

function renderMembers(state) {
  const body = $("#members tbody");
  body.replaceChildren();
  const cluster = state.cluster;
  if (!cluster) return;
  for (const m of cluster.members) {
    const row = body.insertRow();
    const node = state.nodes[m.id] || {};
    row.dataset.node = m.id;
    if (m.id === cluster.leader.id) row.classList.add("leader");
    if (m.reachable === false) row.classList.add("unreachable");
    const first = cell(row, "");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(m.id);
    first.append(swatch, m.id);
    cell(row, m.reachable === false ? "unreachable" : m.status, "status");
    cell(row, m.address);
    cell(row, node.uptime_seconds === undefined ? "–" : duration(node.uptime_seconds), "num");
    cell(row, m.shards, "num");
    cell(row, m.live ? m.live.in_flight : m.in_flight, "num");
    cell(row, rate(node.requests_per_second), "num");
    cell(row, rate(node.appends_per_second), "num");
    cell(row, `${(m.event_loop_lag * 1000).toFixed(1)} ms`, "num");
  }
}

function renderGrid(state) {
  const grid = $("#shard-grid");
  const map = state.shard_map;
  if (!map) { grid.replaceChildren(); $("#shard-summary").textContent = "(none yet)"; return; }
  if (grid.children.length !== map.shard_count) {
    grid.replaceChildren();
    for (let s = 0; s < map.shard_count; s++) {
      const div = document.createElement("div");
      div.className = "cell";
      div.dataset.shard = String(s);
      div.textContent = String(s);
      grid.append(div);
    }
  }
  const moved = new Set(map.moved);
  const owners = new Map();
  map.owners.forEach((owner, s) => {
    const div = grid.children[s];
    const handoff = map.handoffs[String(s)];
    div.dataset.owner = owner;
    div.classList.toggle("unassigned", !owner);
    div.classList.toggle("handoff", handoff !== undefined);
    div.classList.toggle("moved", moved.has(s));
    div.style.backgroundColor = owner ? colour(owner) : "";
    div.title = `shard ${s}: ${owner || "unassigned"}${handoff ? ` → ${handoff}` : ""}`;
    if (owner) owners.set(owner, (owners.get(owner) || 0) + 1);
  });
  $("#shard-summary").textContent =
    `v${map.version}, term ${map.term}, ${map.shard_count} shards, ${Object.keys(map.handoffs).length} in handoff, ` +
    `${moved.size} moved recently`;
  const legend = $("#legend");
  legend.replaceChildren();
  for (const [owner, count] of [...owners.entries()].sort()) {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(owner);
    item.append(swatch, `${owner} (${count})`);
    legend.append(item);
  }
}

function renderStreams(state) {
  const body = $("#streams tbody");
  body.replaceChildren();
  for (const s of state.streams) {
    const row = body.insertRow();
    row.dataset.stream = s.name;
    cell(row, s.namespace === null ? "(none)" : s.namespace);
    cell(row, s.name);
    cell(row, s.partition === null ? "–" : s.partition, "num");
    cell(row, s.messages, "num");
    cell(row, bytes(s.bytes), "num");
    cell(row, rate(s.messages_per_second), "num");
    cell(row, text(s.leader));
  }
}

function renderProjections(state) {
  const body = $("#projections tbody");
  body.replaceChildren();
  for (const p of state.projections) {
    const row = body.insertRow();
    row.dataset.projection = p.name;
    cell(row, p.name);
    cell(row, p.stream);
    cell(row, p.position, "num");
    cell(row, text(p.lag), "num");
    cell(row, p.dead_letters, "num");
    cell(row, text(p.holder));
  }
}

function renderEvents(state) {
  const list = $("#events");
  list.replaceChildren();
  for (const e of state.events) {
    const li = document.createElement("li");
    li.className = e.kind;
    li.dataset.kind = e.kind;
    const time = document.createElement("time");
    time.textContent = e.at.slice(11, 19);
    li.append(time, e.text);
    list.append(li);
  }
}

function render(state) {
  const cluster = state.cluster;
  $("#cluster-name").textContent = state.cluster_name;
  $("#leader").textContent = cluster && cluster.leader.id ? cluster.leader.id : "none";
  $("#term").textContent = cluster ? String(cluster.leader.term) : "?";
  $("#map-version").textContent = cluster ? `v${cluster.map.version}` : "?";
  $("#member-count").textContent = cluster ? String(cluster.members.length) : "0";
  $("#updated").textContent = `updated ${state.generated_at.slice(11, 19)} UTC`;
  renderMembers(state);
  renderGrid(state);
  renderStreams(state);
  renderProjections(state);
  renderEvents(state);
  const problems = $("#problems");
  problems.replaceChildren(...state.problems.map((p) => { const li = document.createElement("li"); li.textContent = p; return li; }));
  $("#problems-section").hidden = state.problems.length === 0;
  document.body.dataset.version = String(Number(document.body.dataset.version) + 1);
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("state", (message) => render(JSON.parse(message.data)));
  source.onopen = () => { $("#connection").textContent = "live"; $("#connection").className = "online"; };
  source.onerror = () => { $("#connection").textContent = "reconnecting"; $("#connection").className = "offline"; };
}

connect();
