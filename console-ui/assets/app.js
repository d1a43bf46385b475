// Serv console: a page over the admin API. Signing in trades the admin token for a session token
// that expires (POST /v1/sessions); every read and action is a /v1 call with it, and the live views
// follow /v1/events (Server-Sent Events). The admin token itself is never stored.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "serv-session-token";
const EXPIRES_KEY = "serv-session-expires";
const PAGES = ["overview", "actors", "actor", "buckets", "topics", "routes", "modules", "audit"];
const COLUMNS = [
  ["key", "Key"], ["kind", "Kind"], ["node", "Node"], ["status", "Status"], ["state", "State", "wide"],
  ["mailbox_depth", "Mailbox", "num"], ["handled", "Handled", "num"], ["restarts", "Restarts", "num"],
  ["last_error", "Last error", "wide"], ["uptime_ms", "Uptime", "num"],
];
const view = { actors: [], members: [], sort: "key", descending: false, feed: null, rates: new Map() };
const TITLES = { overview: "overview", actors: "actors", actor: "actor", buckets: "buckets", topics: "topics", routes: "routes", modules: "modules", audit: "audit log" };

/** A 401: `code` says whether the session expired (TokenExpired) or the token is wrong. */
class Refused extends Error {
  constructor(code) { super(code === "TokenExpired" ? "the session expired" : "the token was refused"); this.code = code; }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function refusal(response) {
  const body = await response.json().catch(() => ({}));
  return new Refused(body.code);
}

async function api(path, post) {
  let response;
  const headers = { Authorization: `Bearer ${token()}` };
  const init = post === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(post) };
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new Error(`cannot reach the admin API (${error.message}); the node may be down`);
  }
  if (response.status === 401) throw await refusal(response);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: ${body.error || response.statusText} (${body.code || response.status})`);
  return body;
}

function banner(message) {
  $("banner").textContent = message || "";
  $("banner").hidden = !message;
}

function failed(error) {
  if (error instanceof Refused && error.code === "TokenExpired") {
    return logout("Your session expired. Sign in again with the admin token.");
  }
  if (error instanceof Refused) return logout("The session was refused (was the admin token changed?). Sign in again.");
  banner(`${error.message}. Retrying.`);
}

function logout(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(EXPIRES_KEY);
  stopFeed();
  banner("");
  $("login-error").textContent = message || "";
  show();
}

function show() {
  const loggedIn = Boolean(token());
  $("nav").hidden = !loggedIn;
  $("login").hidden = loggedIn;
  const page = PAGES.find((p) => location.hash === `#/${p}` || location.hash.startsWith(`#/${p}/`)) || "overview";
  for (const p of PAGES) {
    $(p).hidden = !loggedIn || p !== page;
    const link = $(`nav-${p}`);
    if (!link) continue;
    if (p === page) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (!loggedIn) { $("token").focus(); return; }
  const expires = Number(sessionStorage.getItem(EXPIRES_KEY));
  $("session").textContent = expires ? `session ends ${new Date(expires).toLocaleTimeString()}` : "";
  document.title = `Serv console: ${TITLES[page]}`;
  if (page === "overview") { loadOverview().catch(failed); reload("series", loadSeries); }
  if (page === "actor") renderActor();
  if (page === "topics") loadTopics().catch(failed);
  if (page === "routes") loadRoutes().catch(failed);
  if (page === "modules") loadModules().catch(failed);
  if (page === "audit") loadAudit().catch(failed);
  if (page === "buckets") loadBuckets().catch(failed);
  startFeed();
}

// ----- cluster overview -----

const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#d1242f", "#57606a"];
const colorOf = (id, ids) => PALETTE[ids.indexOf(id) % PALETTE.length];
const short = (id) => (id || "").slice(0, 8);

function renderMembers() {
  const body = $("members").tBodies[0];
  body.replaceChildren(...view.members.map((m) => row([
    [short(m.id), { title: m.id }], [m.state, { className: `state-${m.state}` }], [m.version || "?"],
    [m.uptime_ms == null ? (m.state === "down" ? "down" : "?") : uptime(m.uptime_ms), {
      className: "num", title: m.started_ms ? `started ${new Date(m.started_ms).toISOString()}` : "",
    }],
    ...nodeUsage(m.id).map((usage, i) => [usage, {
      className: i === 0 && nodeRefusing(m.id) ? "num refusing" : "num", dataset: ["memory", "disk"][i],
    }]),
    [m.mesh_addr], [m.s3_addr || "?"], [m.stomp_addr || "?"], [m.admin_addr || "?"],
  ], { "data-node": m.id, "data-state": m.state })));
}

async function loadOverview() {
  const [members, ring, partitions] = await Promise.all([api("/v1/cluster/members"), api("/v1/cluster/ring"),
    api("/v1/cluster/partitions")]);
  banner("");
  view.members = members.members;
  renderMembers();
  renderPartitions(partitions);
  $("ring-state").textContent = `${ring.nodes.length} node(s) on the ring; ${ring.settled ? "settled" : "still moving entities"}.`;
  drawRing(ring.nodes);
}

async function loadPartitions() {
  renderPartitions(await api("/v1/cluster/partitions"));
}

// Why a partition is under-replicated, from one of its shortfalls.
function shortfall(s) {
  const nodes = (ids) => ids.map(short).join(", ");
  if (s.reason === "no_leader") return "no leader";
  if (s.reason === "too_few_voters") return `${s.alive} of ${s.wanted} replicas alive${s.down.length ? ` (${nodes(s.down)} down)` : ""}`;
  if (s.reason === "lagging") return `${nodes(s.voters)} far behind the leader`;
  return s.reason;
}

// Leaders per member (those leading none show 0) and the under-replicated partitions, as the
// node this page talks to sees them.
function renderPartitions({ count, node, partitions }) {
  const led = new Map(view.members.map((m) => [m.id, 0]));
  for (const p of partitions) if (p.leader) led.set(p.leader, (led.get(p.leader) || 0) + 1);
  $("leaders").tBodies[0].replaceChildren(...[...led].map(([id, n]) => row([
    [short(id), { title: id }], [String(n), { className: "num", dataset: "led" }],
  ], { "data-node": id })));
  const under = partitions.filter((p) => p.under_replicated);
  $("under-replicated").tBodies[0].replaceChildren(...under.map((p) => row([
    [String(p.partition), { className: "num" }], [p.replicas.map(short).join(", "), { title: p.replicas.join(", ") }],
    [p.leader ? short(p.leader) : "none", { title: p.leader || "" }], [p.shortfalls.map(shortfall).join("; "), { dataset: "why" }],
  ], { "data-partition": p.partition })));
  $("under-replicated-empty").hidden = under.length > 0;
  // A node that holds no replica of a partition knows neither its leader nor its replicas.
  const unheld = partitions.filter((p) => p.role === "none").length;
  const state = $("partitions-state");
  state.textContent = `${count} partitions as node ${short(node)} sees them, ${under.length} under-replicated` +
    (unheld ? `; ${unheld} not held by this node, whose leaders it does not know.` : ".");
  state.dataset.count = count;
  state.dataset.under = under.length;
}

const RING_SPAN = 2 ** 64;

function drawRing(nodes, mark) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "-110 -110 220 220");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `hash ring of ${nodes.length} nodes`);
  const ids = nodes.map((n) => n.id);
  const points = nodes.flatMap((n) => n.tokens.map((t) => ({ at: Number(t) / RING_SPAN, id: n.id }))).sort((a, b) => a.at - b.at);
  const xy = (f, r) => [r * Math.sin(2 * Math.PI * f), -r * Math.cos(2 * Math.PI * f)];
  points.forEach((p, i) => {
    // A key belongs to the first token at or after it: the arc before each token is its node's.
    const from = i === 0 ? points[points.length - 1].at - 1 : points[i - 1].at;
    const [x0, y0] = xy(from, 90), [x1, y1] = xy(p.at, 90);
    const arc = document.createElementNS(ns, "path");
    arc.setAttribute("d", `M ${x0} ${y0} A 90 90 0 ${p.at - from > 0.5 ? 1 : 0} 1 ${x1} ${y1}`);
    arc.setAttribute("stroke", colorOf(p.id, ids));
    arc.setAttribute("stroke-width", "14");
    arc.setAttribute("fill", "none");
    svg.append(arc);
  });
  if (mark) {
    const [x, y] = xy(mark.at, 90);
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", "6");
    dot.setAttribute("fill", "#000"); dot.setAttribute("id", "ring-mark");
    svg.append(dot);
  }
  const legend = document.createElement("ul");
  legend.className = "legend";
  for (const id of ids) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorOf(id, ids);
    item.append(swatch, `${short(id)} (${nodes.find((n) => n.id === id).tokens.length} tokens)`);
    legend.append(item);
  }
  $("ring").replaceChildren(svg, legend);
  view.ringNodes = nodes;
}

async function findOwner(event) {
  event.preventDefault();
  const key = $("owner-key").value.trim();
  try {
    const answer = await api(`/v1/cluster/ring/owner?key=${encodeURIComponent(key)}`);
    // The entity runs on its partition's leader; during an election, its first replica.
    const owner = answer.leader || answer.preference_list[0];
    $("owner-result").textContent = `${answer.key} is in partition ${answer.partition}, served by ${short(owner)}`;
    $("owner-result").dataset.owner = owner;
    if (view.ringNodes) drawRing(view.ringNodes, { at: Number(answer.point) / RING_SPAN });
  } catch (error) {
    if (error instanceof Refused) return failed(error);
    $("owner-result").textContent = error.message;
  }
}

// ----- actors -----

function uptime(ms) {
  if (ms == null) return "";
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

function renderActorHead() {
  const head = $("actor-table").tHead.rows[0];
  head.replaceChildren(...COLUMNS.map(([field, label, cls]) => {
    const th = document.createElement("th");
    th.scope = "col";
    if (cls === "wide") th.className = "wide";
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label + (view.sort === field ? (view.descending ? " ▼" : " ▲") : "");
    button.addEventListener("click", () => {
      view.descending = view.sort === field ? !view.descending : false;
      view.sort = field;
      renderActorHead();
      renderActors();
    });
    th.setAttribute("aria-sort", view.sort === field ? (view.descending ? "descending" : "ascending") : "none");
    th.append(button);
    return th;
  }));
}

function fillSelect(select, values) {
  const current = select.value;
  select.replaceChildren(new Option("all", ""), ...values.map((v) => new Option(v.length > 16 ? short(v) : v, v)));
  select.value = values.includes(current) ? current : "";
}

function renderActors() {
  const kinds = [...new Set(view.actors.map((a) => a.kind))].sort();
  const nodes = [...new Set(view.actors.map((a) => a.node))].sort();
  fillSelect($("filter-kind"), kinds);
  fillSelect($("filter-node"), nodes);
  const kind = $("filter-kind").value, node = $("filter-node").value, text = $("filter-text").value.toLowerCase();
  const shown = view.actors
    .filter((a) => (!kind || a.kind === kind) && (!node || a.node === node))
    .filter((a) => !text || [a.key, a.state, a.last_error].some((v) => (v || "").toLowerCase().includes(text)))
    .sort((a, b) => {
      const [x, y] = [a[view.sort], b[view.sort]];
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
      return view.descending ? -order : order;
    });
  $("actor-table").tBodies[0].replaceChildren(...shown.map((a) => linkKey(a, row(COLUMNS.map(([field, , cls]) => {
    const value = field === "uptime_ms" ? uptime(a[field]) : field === "node" ? short(a.node) : a[field] ?? "";
    const cell = { className: [cls || "", field === "status" ? `status-${a.status}` : ""].join(" ").trim() };
    if (field === "node") cell.title = a.node;
    if (field !== "key" && field !== "node") cell.dataset = field;
    return [String(value), cell];
  }), { "data-key": a.key, "data-node": a.node }))));
  $("actor-count").textContent = `${shown.length} of ${view.actors.length} actors`;
  $("actors-empty").hidden = shown.length > 0;
}

// The key cell of an actor row becomes a link to its page.
function linkKey(actor, tr) {
  const cell = tr.cells[0];
  const link = document.createElement("a");
  link.href = `#/actor/${encodeURIComponent(actor.node)}/${encodeURIComponent(actor.key)}`;
  link.textContent = cell.textContent;
  cell.replaceChildren(link);
  return tr;
}

function renderActor() {
  // #/actor/NODE/KEY, each part URI-encoded (a key's slashes too).
  const [, , node, key] = location.hash.split("/").map(decodeURIComponent);
  const actor = view.actors.find((a) => a.node === node && a.key === key);
  $("actor-title").textContent = `${key} on ${short(node)}`;
  $("actor-gone").hidden = Boolean(actor) || !view.loaded;
  const entity = Boolean(actor) && ["bucket", "topic", "group", "route"].includes(actor.kind);
  for (const button of [$("restart"), $("passivate")]) {
    button.hidden = !entity;
    button.dataset.key = key;
  }
  const fields = $("actor-fields");
  if (!actor) { fields.replaceChildren(); return; }
  fields.replaceChildren(...COLUMNS.flatMap(([field, label]) => {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.dataset.field = field;
    dd.textContent = field === "uptime_ms" ? uptime(actor[field]) : String(actor[field] ?? "none");
    return [dt, dd];
  }));
}

const ACTIONS = {
  restart: { done: "Restarted", ask: "It finishes what it was sent, then starts again from its stored state." },
  passivate: { done: "Passivated", ask: "It finishes what it was sent and stops; its next message starts it again." },
};

// Restart or passivate the actor whose page is open, after a confirmation.
async function act(action) {
  const key = $(action).dataset.key;
  await confirmed(`${action[0].toUpperCase()}${action.slice(1)} ${key}? ${ACTIONS[action].ask}`, "action-result",
    () => api(`/v1/actors/${action}`, { key }), () => `${ACTIONS[action].done} ${key}`);
}

// An audited action: asks `question`; once confirmed, runs `call` and says in `resultId` how it
// ended (`done(answer)` on success). True if it was done.
async function confirmed(question, resultId, call, done) {
  if (!confirm(question)) return false;
  $(resultId).textContent = "Working…";
  try {
    $(resultId).textContent = `${done(await call())}; the audit log has the entry.`;
    return true;
  } catch (error) {
    if (error instanceof Refused) failed(error);
    else $(resultId).textContent = `Not done: ${error.message}`;
    return false;
  }
}

async function loadBuckets() {
  const { buckets, unreachable } = await api("/v1/buckets");
  missing("buckets-missing", unreachable, "buckets");
  banner("");
  $("bucket-table").tBodies[0].replaceChildren(...buckets.map((b) => row([
    [b.name], [String(b.objects), { className: "num", dataset: "objects" }], [String(b.bytes), { className: "num", dataset: "bytes" }],
    [b.versioning], [new Date(b.created_ms).toLocaleString()], [b.owner],
  ], { "data-bucket": b.name })));
  $("buckets-empty").hidden = buckets.length > 0;
}

async function loadAudit() {
  const { entries, unreachable } = await api("/v1/audit");
  banner("");
  $("audit-table").tBodies[0].replaceChildren(...entries.map((e) => row([
    [new Date(e.at_ms).toLocaleString()], [short(e.node), { title: e.node }], [e.actor, { dataset: "actor" }],
    [e.action], [e.target], [e.outcome, { dataset: "outcome" }], [e.trace_id, { className: "wide" }],
  ], { "data-target": e.target, "data-action": e.action, "data-node": e.node })));
  $("audit-empty").hidden = entries.length > 0;
  missing("audit-missing", unreachable, "entries");
}

// ----- topics and groups -----

// "lag=3 cursor=5 ..." into { lag: "3", cursor: "5", ... }.
function summary(state) {
  return Object.fromEntries((state || "").split(" ").map((pair) => pair.split("=")).filter((kv) => kv.length === 2));
}

async function loadTopics() {
  const { topics, unreachable } = await api("/v1/topics");
  missing("topics-missing", unreachable, "topics");
  banner("");
  $("topic-table").tBodies[0].replaceChildren(...topics.map((t) => {
    const history = sample(`topic:${t.name}`, t.messages);
    const tr = row([[t.name], [String(t.messages), { className: "num", dataset: "messages" }],
      [String(t.bytes), { className: "num" }], [history[history.length - 1].rate.toFixed(1), { className: "num", dataset: "rate" }], [""], [""]],
      { "data-topic": t.name });
    tr.cells[4].append(sparkline(history.map((h) => h.rate)));
    if (t.name.endsWith(".dlq") && t.messages > 0) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "requeue";
      button.textContent = `Requeue ${t.messages}`;
      button.addEventListener("click", () => requeue(t.name, t.messages));
      tr.cells[5].append(button);
    }
    return tr;
  }));
  $("topics-empty").hidden = topics.length > 0;
  renderGroups();
}

// Moves a dead-letter topic's messages back to where they came from, after a confirmation.
async function requeue(dlq, count) {
  const done = await confirmed(`Requeue the ${count} message(s) of ${dlq} to the destination each came from?`,
    "topics-result", () => api("/v1/dlq/requeue", { dlq }), (answer) => `Requeued ${answer.requeued} message(s) from ${dlq}`);
  if (done) loadTopics().catch(failed);
}

function renderGroups() {
  const groups = view.actors.filter((a) => a.kind === "group");
  $("group-table").tBodies[0].replaceChildren(...groups.map((g) => {
    const s = summary(g.state);
    return row([[g.key.replace(/^group\//, "")], [short(g.node), { title: g.node }], [s.lag ?? "?", { className: "num", dataset: "lag" }],
      [s.members ?? "?", { className: "num" }], [s.in_flight ?? "?", { className: "num" }],
      [s.dead_lettered ?? "?", { className: "num" }], [(s.out_rate || "").replace("/s", ""), { className: "num" }]],
    { "data-group": g.key });
  }));
}

// Says which nodes a cluster-wide listing could not ask, so that it does not look complete.
function missing(id, nodes, what) {
  $(id).textContent = nodes && nodes.length
    ? `Node(s) ${nodes.map(short).join(", ")} are down or did not answer: their ${what} are missing until they are back.`
    : "";
}

// Adds a sample of a growing counter and returns the last minute of samples, each with its rate
// per second since the one before.
function sample(key, count) {
  const now = Date.now();
  const history = view.rates.get(key) || [];
  const last = history[history.length - 1];
  const rate = last ? Math.max(0, (count - last.count) / ((now - last.at) / 1000)) : 0;
  history.push({ at: now, count, rate });
  view.rates.set(key, history.slice(-60));
  return view.rates.get(key);
}

// Runs `load` for a live page unless its last run is still going (each is a cluster fan-out).
const loading = new Set();
function reload(name, load) {
  if (loading.has(name)) return;
  loading.add(name);
  load().catch(failed).finally(() => loading.delete(name));
}

// ----- gateway routes -----

async function loadRoutes() {
  const { routes, unreachable } = await api("/v1/routes");
  banner("");
  $("route-table").tBodies[0].replaceChildren(...routes.map((r) => {
    const c = r.config;
    const history = sample(`route:${r.name}`, r.stats.requests);
    const breakers = Object.values(r.stats.breaker);
    const open = breakers.filter((b) => b !== "closed").length;
    const circuit = breakers.length === 0 ? "no traffic" : open === 0 ? "closed" : `open on ${open} of ${breakers.length}`;
    const match = `${c.host || "*"}${c.path_prefix}${c.methods.length ? ` (${c.methods.join(", ")})` : ""}`;
    const target = c.topic ? `publishes to ${c.topic}` : c.upstreams.join(" ");
    const tr = row([[r.name], [match], [target, { className: "wide" }],
      [r.enabled ? "enabled" : "disabled", { className: r.enabled ? "status-running" : "status-failed", dataset: "enabled" }],
      [circuit, { className: open ? "status-failed" : "", dataset: "circuit" }],
      [String(r.stats.requests), { className: "num", dataset: "requests" }],
      [history[history.length - 1].rate.toFixed(1), { className: "num", dataset: "rate" }], ["", { className: "wide" }], [""]],
    { "data-route": r.name, "data-enabled": String(r.enabled) });
    tr.cells[7].append(sparkline(history.map((h) => h.rate), "requests"));
    const button = document.createElement("button");
    button.type = "button";
    button.className = "switch";
    button.textContent = r.enabled ? "Disable" : "Enable";
    button.addEventListener("click", () => switchRoute(r.name, !r.enabled));
    tr.cells[8].append(button);
    return tr;
  }));
  $("routes-empty").hidden = routes.length > 0;
  missing("routes-missing", unreachable, "routes and counters");
}

// Switches a route on or off for every node's gateway, after a confirmation.
async function switchRoute(name, enable) {
  const question = enable
    ? `Enable route ${name}? Every node's gateway sends its requests upstream again.`
    : `Disable route ${name}? Every node's gateway will answer its requests 503 RouteDisabled.`;
  const done = await confirmed(question, "routes-result",
    () => api(`/v1/routes/${encodeURIComponent(name)}/${enable ? "enable" : "disable"}`, {}),
    () => `${enable ? "Enabled" : "Disabled"} route ${name}`);
  if (done) loadRoutes().catch(failed);
}

// ----- WASM modules -----

async function loadModules() {
  const { modules, unreachable } = await api("/v1/modules");
  banner("");
  $("module-table").tBodies[0].replaceChildren(...modules.map((m) => {
    const history = sample(`module:${m.name}`, m.stats.calls);
    const tr = row([[m.name], [String(m.version), { className: "num", dataset: "version" }],
      [m.hash.slice(0, 12), { title: m.hash }], [String(m.size), { className: "num" }], [m.hooks.join(", ")],
      ["", { className: "wide", dataset: "attached" }],
      [String(m.stats.calls), { className: "num", dataset: "calls" }],
      [String(m.stats.failures), { className: m.stats.failures ? "num status-failed" : "num", dataset: "failures" }],
      [history[history.length - 1].rate.toFixed(1), { className: "num", dataset: "rate" }], ["", { className: "wide" }],
      [m.stats.last_error || "", { className: "wide", dataset: "error" }]],
    { "data-module": m.name });
    const where = tr.cells[5];
    if (m.attached.length === 0) where.textContent = "not attached";
    m.attached.forEach((a, i) => {
      const link = document.createElement("a");
      link.href = a.kind === "topic" ? "#/topics" : "#/routes";
      link.textContent = `${a.kind === "topic" ? "transform of" : "middleware of"} ${a.kind} ${a.name}`;
      link.dataset.attached = `${a.kind}:${a.name}`;
      if (i > 0) where.append(document.createTextNode(", "));
      where.append(link);
    });
    tr.cells[9].append(sparkline(history.map((h) => h.rate), "calls"));
    return tr;
  }));
  $("modules-empty").hidden = modules.length > 0;
  missing("modules-missing", unreachable, "modules and calls");
}

function sparkline(values, what = "messages") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 120 24");
  svg.setAttribute("width", "120");
  svg.setAttribute("height", "24");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${what} per second, last ${values.length} samples`);
  const peak = Math.max(1, ...values);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", values.map((v, i) => `${i * 2},${(22 - (20 * v) / peak).toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#0969da");
  svg.append(line);
  return svg;
}

function row(cells, attributes) {
  const tr = document.createElement("tr");
  for (const [name, value] of Object.entries(attributes || {})) tr.setAttribute(name, value);
  for (const [text, options] of cells) {
    const td = document.createElement("td");
    td.textContent = text;
    if (options?.className) td.className = options.className;
    if (options?.title) td.title = options.title;
    if (options?.dataset) td.dataset.field = options.dataset;
    tr.append(td);
  }
  return tr;
}

// ----- live feed -----

function stopFeed() {
  if (view.feed) view.feed.abort();
  view.feed = null;
  $("live").textContent = "";
}

function startFeed() {
  if (view.feed) return;
  const feed = new AbortController();
  view.feed = feed;
  follow(feed.signal).catch(() => {});
}

// Reads /v1/events (fetch, so the token goes in a header) and reconnects with a backoff.
async function follow(signal) {
  let backoff = 500;
  while (!signal.aborted) {
    try {
      const response = await fetch("/v1/events", { headers: { Authorization: `Bearer ${token()}` }, signal });
      if (response.status === 401) return failed(await refusal(response));
      if (!response.ok) throw new Error(`the live feed answered ${response.status}`);
      $("live").textContent = "live";
      banner("");
      backoff = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the live feed ended");
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      $("live").textContent = "reconnecting…";
      banner(`Live updates stopped: ${error.message}. The node may be down; reconnecting.`);
      await new Promise((resolve) => setTimeout(resolve, backoff));
      backoff = Math.min(backoff * 2, 5000);
    }
  }
}

function dispatch(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (!data) return;
  const body = JSON.parse(data);
  if (event === "actors") {
    view.actors = body.actors;
    view.loaded = true;
    if (!$("actors").hidden) renderActors();
    if (!$("actor").hidden) renderActor();
    if (!$("topics").hidden) reload("topics", loadTopics);
    if (!$("buckets").hidden) reload("buckets", loadBuckets);
    if (!$("routes").hidden) reload("routes", loadRoutes);
    if (!$("modules").hidden) reload("modules", loadModules);
  }
  if (event === "members") {
    view.members = body.members;
    if (!$("overview").hidden) { renderMembers(); reload("partitions", loadPartitions); }
  }
}

// ----- start -----

async function login(event) {
  event.preventDefault();
  const adminToken = $("token").value.trim();
  $("token").value = "";
  let response;
  try {
    response = await fetch("/v1/sessions", { method: "POST", headers: { Authorization: `Bearer ${adminToken}` } });
  } catch (error) {
    return logout(`Cannot reach the admin API (${error.message}); the node may be down.`);
  }
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 && body.code === "TokenExpired") {
    return logout("That is an expired session token: sign in with the admin token.");
  }
  if (response.status === 401) return logout("That token was refused: check it and try again.");
  if (response.status === 403) return logout("That is a session token: sign in with the admin token.");
  if (!response.ok) return logout(`Signing in failed: ${body.error || response.statusText}`);
  sessionStorage.setItem(TOKEN_KEY, body.token);
  sessionStorage.setItem(EXPIRES_KEY, String(body.expires_at_ms));
  $("login-error").textContent = "";
  if (!location.hash) location.hash = "#/overview";
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("owner-form").addEventListener("submit", findOwner);
  $("restart").addEventListener("click", () => act("restart"));
  $("passivate").addEventListener("click", () => act("passivate"));
  $("logout").addEventListener("click", () => logout(""));
  for (const id of ["filter-kind", "filter-node", "filter-text"]) $(id).addEventListener("input", renderActors);
  window.addEventListener("hashchange", show);
  renderActorHead();
  show();
});
