// ConductLoop phone page: plain ES2020 module (strict by itself), no framework, no build step.

const $ = (id) => document.getElementById(id);
const FINAL = new Set(["done", "failed", "stopped", "lost"]);
const RANK = { waiting: 0, running: 1, paused: 2, queued: 3 };
const MAX_AGENTS = 200, MAX_EVENTS = 50;

// The page's mirror of the hub's view.
const agents = new Map(); // agent_id -> row
const pending = new Map(); // request_id -> request
let lastId = 0;
let ws = null, backoff = 500, signedOut = false, cmdSeq = 0;
const cmds = new Map(); // command id -> {op, rid}
const busy = new Set(); // request ids with a decision in flight
let detail = null; // {id, events, loaded, drawn}
let frame = 0, uid = 0, toastTimer = 0;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}
function setText(e, t) {
  t = t == null ? "" : String(t);
  if (e.textContent !== t) e.textContent = t;
}
function show(e, on) {
  if (e.hidden === on) e.hidden = !on;
}
function money(x) {
  x = Number(x) || 0;
  return "$" + (Math.abs(x) >= 1
    ? x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })
    : x.toFixed(4));
}
function clip(s, n) {
  s = typeof s === "string" ? s : JSON.stringify(s) ?? "";
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}
const live = (a) => !FINAL.has(a.state);
const nameOf = (id) => (agents.get(id) || {}).name || id || "hub";
const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };

function toast(msg) {
  $("toast").textContent = msg;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { $("toast").textContent = ""; }, 4000);
}

function gate(title, text, extra) {
  detail = null;
  for (const id of ["boot", "main", "detail", "offline"]) $(id).hidden = true;
  if ($("confirm").open) $("confirm").close();
  setText($("gate-h"), title);
  setText($("gate-t"), text.charAt(0).toUpperCase() + text.slice(1));
  setText($("gate-x"), extra);
  show($("gate-x"), !!extra);
  $("gate").hidden = false;
  document.title = "ConductLoop";
}

function signOut() {
  signedOut = true;
  if (ws) { ws.onclose = null; ws.close(); ws = null; }
  gate("Signed out", "This phone is not paired. To pair it, scan a new QR code from loop.phone() in your notebook.");
}

function loadSnapshot(s) {
  agents.clear();
  pending.clear();
  for (const a of s.agents || []) agents.set(a.agent_id, a);
  for (const r of s.pending || []) pending.set(r.id, r);
  if (typeof s.last_id === "number") lastId = s.last_id;
  schedule();
}

function apply(ev) {
  const d = ev.data || {}, a = agents.get(ev.agent_id);
  switch (ev.kind) {
    case "agent.started":
      agents.set(ev.agent_id, {
        agent_id: ev.agent_id, name: d.name, parent: d.parent, model: d.model, state: "queued",
        activity: "", cost_usd: 0, input_tokens: 0, output_tokens: 0, started: ev.ts,
      });
      break;
    case "request.opened":
      pending.set(d.request_id, {
        id: d.request_id, agent_id: ev.agent_id, kind: d.kind, prompt: d.prompt,
        choices: d.choices, details: d.details, opened: ev.ts,
      });
      break;
    case "request.decided": {
      // decided elsewhere: hold the card (disabled) so nothing jumps under a thumb
      const r = pending.get(d.request_id);
      if (!r || busy.has(r.id)) { pending.delete(d.request_id); break; }
      r.decided = (d.decision || "decided") + " by " + (d.by || "someone");
      setTimeout(() => { pending.delete(r.id); schedule(); }, 3000);
      break;
    }
    case "agent.state":
      if (!a) break;
      a.state = d.state;
      if (FINAL.has(d.state)) { a.ended = ev.ts; a.stalled = false; a.tool = null; }
      break;
    case "usage":
      if (!a) break;
      if (d.cost_usd != null) a.cost_usd = (a.cost_usd || 0) + d.cost_usd;
      a.input_tokens = (a.input_tokens || 0) + (d.input_tokens || 0);
      a.output_tokens = (a.output_tokens || 0) + (d.output_tokens || 0);
      break;
    case "agent.status": if (a) a.activity = d.text || ""; break;
    case "tool.started": if (a) a.tool = d.tool || null; break;
    case "tool.finished": if (a) a.tool = null; break;
    case "agent.stalled": if (a) a.stalled = !!d.stalled; break;
    case "agent.error": if (a) a.error = (d.type ? d.type + ": " : "") + (d.message || ""); break;
  }
  if (detail && ev.agent_id === detail.id) {
    detail.events.push(ev);
    if (detail.events.length > MAX_EVENTS) detail.events.shift();
  }
}

function applyAll(events) {
  for (const ev of events || []) {
    if (typeof ev.id === "number") {
      if (ev.id <= lastId) continue; // a catch-up may repeat what we have
      lastId = ev.id;
    }
    apply(ev);
  }
  schedule();
}

async function getJSON(url, opts) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store", ...opts });
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON */ }
  return { status: r.status, body };
}

async function pair(code) {
  let res;
  try {
    res = await getJSON("/pair", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      referrerPolicy: "same-origin", // so the Origin header is sent, not "null"
      body: JSON.stringify({ code, name: "" }),
    });
  } catch (e) {
    gate("Not paired", "Could not reach your computer. Is the phone on the same network?");
    return false;
  }
  if (res.status === 200) return true;
  const err = (res.body && res.body.error) || {};
  gate("Not paired", err.message || "Pairing failed. Make a new QR code with loop.phone().",
    err.retry_after ? "Try again in " + Math.ceil(err.retry_after) + " s." : "");
  return false;
}

const nextDelay = () => { const d = backoff; backoff = Math.min(backoff * 2, 5000); return d; };

async function loadState() {
  let res;
  try { res = await getJSON("/api/state"); } catch (e) { res = { status: 0 }; }
  if (res.status === 401) return signOut();
  if (res.status !== 200 || !res.body) {
    $("offline").hidden = false;
    setTimeout(loadState, nextDelay());
    return;
  }
  loadSnapshot(res.body.snapshot || {});
  $("boot").hidden = true;
  if (!detail) $("main").hidden = false;
  connect();
}

function connect() {
  if (signedOut) return;
  let opened = false;
  const sock = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws = sock;
  sock.onopen = () => {
    opened = true;
    backoff = 500;
    $("offline").hidden = true;
    sock.send(JSON.stringify({ type: "subscribe", after: lastId }));
  };
  sock.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    if (msg.type === "events") applyAll(msg.events);
    else if (msg.type === "snapshot") loadSnapshot(msg);
    else if (msg.type === "reply") replied(msg.id, msg.ok, msg.result, msg.error);
    else if (msg.type === "error") {
      if (cmds.has(msg.id)) replied(msg.id, false, null, msg);
      else toast(msg.message || "Error");
    }
  };
  sock.onclose = (e) => {
    if (ws !== sock) return;
    ws = null;
    for (const id of [...cmds.keys()]) replied(id, false, null, { message: "connection lost; it may not have been applied" });
    if (e.code === 4001) return signOut();
    $("offline").hidden = false;
    const delay = nextDelay(), again = () => setTimeout(connect, delay);
    if (opened) return again();
    // Never connected: maybe this phone was unpaired meanwhile.
    getJSON("/api/state").then((r) => (r.status === 401 ? signOut() : again()), again);
  };
}

const DONE = {
  approve: "Approved", reject: "Rejected", answer: "Answer sent", pause: "Paused",
  resume: "Resumed", stop: "Stopping", redirect: "Instruction sent",
};

function send(command, rid) {
  if (!ws || ws.readyState !== 1) { toast("Offline — try again when reconnected"); return false; }
  const id = "c" + ++cmdSeq;
  cmds.set(id, { op: command.op, rid });
  if (rid) busy.add(rid);
  ws.send(JSON.stringify({ type: "command", id, command }));
  schedule();
  return true;
}

function replied(id, ok, result, error) {
  const c = cmds.get(id);
  if (!c) return;
  cmds.delete(id);
  busy.delete(c.rid);
  if (!ok) toast("Could not " + c.op.replace("_", " ") + ": " + ((error && (error.message || error.code)) || "failed"));
  else if (c.op === "stop_all") toast("Stopping " + (Number(result) || 0) + (result === 1 ? " agent" : " agents"));
  else if (result === false) toast("Already decided elsewhere");
  else toast(DONE[c.op] || "Done");
  schedule();
}

// Keep `parent`'s children in the order of `keys`, reusing elements (keeps focus and input).
function sync(parent, keys, cache, make, update) {
  const seen = new Set();
  let prev = null;
  for (const k of keys) {
    let e = cache.get(k);
    if (!e) cache.set(k, (e = make(k)));
    update(e, k);
    seen.add(k);
    const want = prev ? prev.nextSibling : parent.firstChild;
    if (want !== e) parent.insertBefore(e, want);
    prev = e;
  }
  for (const [k, e] of cache) if (!seen.has(k)) { e.remove(); cache.delete(k); }
}

function button(parent, label, cls, fn, type) {
  const b = el("button", "btn " + cls, label);
  b.type = type || "button";
  if (fn) b.addEventListener("click", fn);
  parent.append(b);
  return b;
}

function requestCard(r) {
  const card = el("article", "card req"), head = el("p", "req-head"), who = el("strong", "who");
  head.append(who, el("span", "tag", r.kind));
  card.append(head, el("p", "prompt", r.prompt || ""));
  const det = r.details && typeof r.details === "object" ? Object.entries(r.details) : [];
  if (det.length) {
    const dl = el("dl", "details");
    for (const [k, v] of det.slice(0, 8)) dl.append(el("dt", "", k), el("dd", "", clip(v, 160)));
    card.append(dl);
  }
  const act = el("div", "controls");
  let note;
  const decide = (op, text) => () => {
    const c = { op, request_id: r.id }, n = note && note.value.trim();
    if (text != null) c.text = text;
    else if (n) c.note = n;
    return send(c, r.id);
  };
  if (r.kind === "question" && r.choices && r.choices.length) {
    for (const c of r.choices) button(act, String(c), "primary", decide("answer", String(c)));
  } else if (r.kind === "question") {
    const f = el("form", "answer"), lab = el("label", "", "Answer"), inp = el("input"), row = el("div", "inline");
    inp.id = lab.htmlFor = "ans-" + ++uid;
    inp.type = "text";
    inp.autocomplete = "off";
    row.append(inp);
    button(row, "Send", "primary", null, "submit");
    f.append(lab, row);
    f.addEventListener("submit", (e) => {
      e.preventDefault();
      const text = inp.value.trim();
      if (!text) return inp.focus();
      if (decide("answer", text)()) inp.value = "";
    });
    card.append(f);
  } else {
    note = el("input", "note-in");
    note.setAttribute("aria-label", "Note");
    note.placeholder = "Note for the agent (optional)";
    card.append(note);
    button(act, "Approve", "primary", decide("approve"));
  }
  button(act, "Reject", "", decide("reject"));
  card.append(act);
  card._who = who;
  return card;
}

function updateCard(card, r) {
  setText(card._who, nameOf(r.agent_id));
  if (r.decided && !card._note) card.append((card._note = el("p", "note", r.decided)));
  const b = busy.has(r.id) || !!r.decided;
  if (card._busy !== b) {
    card._busy = b;
    card.classList.toggle("busy", b);
    for (const x of card.querySelectorAll("button")) x.disabled = b;
  }
}

function agentItem(id) {
  const li = el("li", "agent"), top = el("div", "a-top"), meta = el("div", "meta");
  const b = el("button", "a-name"), cost = el("span", "cost");
  const st = el("span"), stalled = el("span", "stalled", "stalled"), act = el("span", "activity");
  b.type = "button";
  b.addEventListener("click", () => openDetail(id));
  meta.id = "am-" + ++uid;
  b.setAttribute("aria-describedby", meta.id);
  top.append(b, cost);
  meta.append(st, stalled, act);
  li.append(top, meta);
  li._ = { b, cost, st, stalled, act };
  return li;
}

function stateTag(e, state) {
  const cls = "st st-" + state;
  if (e.className !== cls) e.className = cls;
  setText(e, state);
}

function activityOf(a) {
  if (a.state === "failed" && a.error) return a.error;
  const t = a.tool ? "⚙ " + a.tool : "";
  return a.activity && t ? a.activity + " · " + t : a.activity || t;
}

function updateItem(li, id) {
  const a = agents.get(id), x = li._;
  setText(x.b, a.name || id);
  setText(x.cost, money(a.cost_usd));
  stateTag(x.st, a.state);
  show(x.stalled, !!a.stalled && live(a));
  setText(x.act, activityOf(a));
  li.classList.toggle("ended", !live(a));
}

// Live agents first (those waiting for a human on top), then ended ones, newest first.
function byOrder(p, q) {
  const lp = live(p), lq = live(q);
  if (lp !== lq) return lp ? -1 : 1;
  if (!lp) return (q.ended || 0) - (p.ended || 0);
  return (RANK[p.state] ?? 4) - (RANK[q.state] ?? 4) || q.stalled - p.stalled || (p.started || 0) - (q.started || 0);
}

const cardCache = new Map(), itemCache = new Map();

function render() {
  frame = 0;
  if (!$("gate").hidden) return;
  const reqs = [...pending.values()].sort((p, q) => (p.opened || 0) - (q.opened || 0));
  const open = reqs.filter((r) => !r.decided).length;
  document.title = open ? "(" + open + ") ConductLoop" : "ConductLoop";
  if (detail) return renderDetail();
  if ($("main").hidden) return;

  const byId = new Map(reqs.map((r) => [r.id, r]));
  sync($("needs-list"), [...byId.keys()], cardCache, (k) => requestCard(byId.get(k)), (e, k) => updateCard(e, byId.get(k)));
  show($("needs-none"), !reqs.length);
  show($("needs-n"), open > 0);
  setText($("needs-n"), open);

  const all = [...agents.values()];
  let total = 0, nLive = 0;
  for (const a of all) { total += Number(a.cost_usd) || 0; nLive += live(a); }
  setText($("spend"), "Spend " + money(total));
  setText($("live-n"), all.length ? nLive + " live" : "");
  all.sort(byOrder);
  sync($("agents"), all.slice(0, MAX_AGENTS).map((a) => a.agent_id), itemCache, agentItem, updateItem);
  show($("agents-none"), !all.length);
  show($("more"), all.length > MAX_AGENTS);
  setText($("more"), "+" + (all.length - MAX_AGENTS) + " more");
}

// One short line per event; kinds without a special form list their values.
function summary(ev) {
  const d = ev.data || {}, by = d.by ? " (" + d.by + ")" : "";
  switch (ev.kind) {
    case "agent.state": return d.state + (d.reason ? ": " + d.reason : "");
    case "agent.status": case "instruction": return d.text + by;
    case "tool.started": return d.tool + " " + clip(d.args || "", 80);
    case "tool.finished":
      return d.tool + (d.ok === false ? " failed " + (d.error || "") : " ok") +
        (d.duration_s != null ? " in " + Number(d.duration_s).toFixed(1) + " s" : "");
    case "usage":
      return d.model + " " + d.input_tokens + "→" + d.output_tokens + " tok " +
        (d.cost_usd != null ? money(d.cost_usd) : "(unpriced)");
    case "request.opened": return d.kind + ": " + d.prompt;
    case "request.decided": return d.decision + (d.text || d.note ? ": " + (d.text || d.note) : "") + by;
    case "agent.error": return d.type + ": " + d.message;
  }
  return Object.entries(d).filter(([k, v]) => v != null && v !== "" && k !== "traceback")
    .map(([, v]) => (typeof v === "string" ? v : JSON.stringify(v))).join(" · ");
}

async function openDetail(id) {
  const mine = (detail = { id, events: [], loaded: false, drawn: "" });
  $("d-text").value = "";
  $("d-events").textContent = "";
  $("main").hidden = true;
  $("detail").hidden = false;
  history.pushState({ detail: id }, "", "/");
  render();
  window.scrollTo(0, 0);
  $("d-name").focus();
  let res;
  try { res = await getJSON("/api/events?agent_id=" + encodeURIComponent(id)); } catch (e) { res = { status: 0 }; }
  if (detail !== mine) return;
  if (res.status === 401) return signOut();
  if (res.status === 200 && res.body) {
    const have = new Set(mine.events.map((e) => e.id));
    const old = (res.body.events || []).filter((e) => !have.has(e.id));
    mine.events = old.concat(mine.events).sort((p, q) => (p.id || 0) - (q.id || 0)).slice(-MAX_EVENTS);
  } else toast("Could not load events");
  mine.loaded = true;
  schedule();
}

function closeDetail(fromHistory) {
  if (!detail) return;
  const id = detail.id;
  detail = null;
  $("detail").hidden = true;
  $("main").hidden = false;
  render();
  const li = itemCache.get(id);
  if (li) li._.b.focus();
  if (!fromHistory) history.back();
}

function renderDetail() {
  const a = agents.get(detail.id);
  if (!a) return;
  const isLive = live(a);
  setText($("d-name"), a.name || a.agent_id);
  stateTag($("d-state"), a.state);
  show($("d-stalled"), !!a.stalled && isLive);
  setText($("d-cost"), money(a.cost_usd));
  setText($("d-activity"), a.activity);
  setText($("d-info"), [a.model, (a.input_tokens || 0) + " in / " + (a.output_tokens || 0) + " out tokens",
    a.tool && "tool: " + a.tool, a.parent && "from " + nameOf(a.parent)].filter(Boolean).join(" · "));
  show($("d-error"), !!a.error);
  setText($("d-error"), a.error);

  show($("d-pause"), isLive && a.state !== "paused");
  show($("d-resume"), a.state === "paused");
  show($("d-stop"), isLive);
  show($("d-controls"), isLive);
  show($("d-redirect"), isLive);
  show($("d-loading"), !detail.loaded);

  const evs = detail.events, tip = detail.loaded + ":" + evs.length + ":" + (evs.length && evs[evs.length - 1].id);
  if (detail.drawn === tip) return;
  detail.drawn = tip;
  const items = evs.map((ev) => {
    const li = el("li", "ev k-" + String(ev.kind).replace(/\W/g, "-"));
    li.append(el("time", "t", new Date(ev.ts * 1000).toLocaleTimeString("en-GB")), el("b", "k", ev.kind), el("span", "s", clip(summary(ev), 200)));
    return li;
  }).reverse();
  if (!evs.length && detail.loaded) items.push(el("li", "ev muted", "No events yet"));
  $("d-events").replaceChildren(...items);
}

function agentOp(op) {
  return () => detail && send({ op, agent_id: detail.id });
}

function wire() {
  $("back").addEventListener("click", () => closeDetail(false));
  window.addEventListener("popstate", () => closeDetail(true));
  $("d-pause").addEventListener("click", agentOp("pause"));
  $("d-resume").addEventListener("click", agentOp("resume"));
  $("d-stop").addEventListener("click", agentOp("stop"));
  $("d-redirect").addEventListener("submit", (e) => {
    e.preventDefault();
    const inp = $("d-text"), text = inp.value.trim();
    if (!detail || !text) return inp.focus();
    if (send({ op: "redirect", agent_id: detail.id, text })) inp.value = "";
  });
  const dlg = $("confirm");
  $("stopall").addEventListener("click", () => {
    const n = [...agents.values()].filter(live).length;
    setText($("confirm-t"), n
      ? "This stops " + (n === 1 ? "the 1 live agent" : "all " + n + " live agents") + ". Each stops at its next checkpoint."
      : "No agents are running right now.");
    dlg.showModal();
    $("confirm-no").focus();
  });
  $("confirm-no").addEventListener("click", () => dlg.close());
  $("confirm-yes").addEventListener("click", () => {
    dlg.close();
    send({ op: "stop_all" });
  });
}

async function start() {
  wire();
  const m = /^#pair=(.+)$/.exec(location.hash);
  if (m) {
    // Drop the one-time secret from the address bar and history at once.
    history.replaceState(null, "", "/");
    let code = m[1];
    try { code = decodeURIComponent(code); } catch (e) { /* use as is */ }
    if (!(await pair(code))) return;
  }
  loadState();
}

start();
