// rtdash dashboard: envelopes {channel, seq, data} over /ws?token=..., a snapshot per channel first, then live
// updates. Reconnects by itself with capped exponential backoff and full jitter. Per channel it remembers the
// last (epoch, seq) it applied; a snapshot replaces what the page had (so after a reconnect or a Redis restart
// the page equals a fresh one), a live or replayed message is applied only if it is newer, in order.
import { $, clock, count, decimal, formatYuan, grouped, latestMinute, minuteLabel, percent, serverNow, setText,
         zoned } from "./format.js";
import { forgetToken, showAccess, socketUrl, takeToken } from "./access.js";
import { MinuteChart } from "./charts.js";
import { recordKpi, recordLatency, renderDeltas, renderLatency, saveKpis } from "./kpis.js";
import { mergeDay, renderAlerts, renderProductsToday, renderRoutes, renderRoutesPerMinute, renderTermsRecent,
         renderTermsToday, routes } from "./panels.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
const REPLAY_MS = 1000;
// Close code after which reconnecting with the same token cannot help: it expired on the open connection.
const CLOSE_TOKEN_EXPIRED = 4001;

const state = {
  position: {},        // channel -> {epoch, seq} last applied
  seen: new Set(),     // channels that got a message on the current connection
  replaying: new Set(), // channels whose missed messages are still being replayed (not live: no latency sample)
  orders: { date: null, minutes: {} },
  traffic: { date: null, minutes: {} },
};
let attempt = 0;
let retryTimer = null;
let token = null;
let socket = null;
let ordersChart = null;
let trafficChart = null;

function setConnection(kind, text) {
  $("conn").className = "conn " + kind;
  $("conn-state").textContent = text;
}

// --- the hour shown ---------------------------------------------------------------------------

function lastHour(date, minutes) {
  // The 60 minutes ending now, or, when the data's day is not the clock's (a job counting in event time around
  // midnight), ending at the data's latest minute.
  const now = clock();
  if (date === null || date === now.date) {
    const base = serverNow();
    const slots = [];
    for (let i = 59; i >= 0; i--) {
      const at = zoned(base - i * 60000);
      slots.push({ label: at.minute, key: at.date === date ? at.minute : null });
    }
    return slots;
  }
  const end = Math.max(latestMinute(minutes), 59);
  const slots = [];
  for (let i = end - 59; i <= end; i++) slots.push({ label: minuteLabel(i), key: minuteLabel(i) });
  return slots;
}

// --- orders -----------------------------------------------------------------------------------

function renderOrdersToday(data, live) {
  setText("orders-count", grouped.format(data.count), true);
  setText("orders-amount", formatYuan(data.amount_cents), true);
  setText("orders-average", data.count ? formatYuan(Math.round(data.amount_cents / data.count)) : "–", false);
  $("orders-date").textContent = data.date;
  $("orders-updated").textContent = "updated " + new Date().toLocaleTimeString();
  recordKpi("orders-count", data.date, data.count);
  recordKpi("orders-amount", data.date, data.amount_cents);
  if (live && data.last_recorded_at) recordLatency(data.last_recorded_at);
}

function renderOrdersPerMinute(data, live, fresh) {
  mergeDay(state.orders, data, fresh);
  renderOrdersChart();
}

function renderOrdersChart() {
  const { date, minutes } = state.orders;
  const slots = lastHour(date, minutes).map((s) => (s.key !== null && minutes[s.key]) || {});
  const labels = lastHour(date, minutes).map((s) => s.label);
  if (ordersChart) ordersChart.update(labels, [slots.map((m) => m.count || 0)]);
  if (date !== null) {
    setText("orders-hour", grouped.format(slots.reduce((a, m) => a + (m.count || 0), 0)), true);
    $("orders-hour-amount").textContent = formatYuan(slots.reduce((a, m) => a + (m.amount_cents || 0), 0)) + " paid";
  }
}

// --- traffic ----------------------------------------------------------------------------------

function renderTrafficToday(data) {
  setText("traffic-page-views", count(data.page_views), true);
  setText("traffic-visitors", count(data.visitors), true);
  setText("traffic-logged-in", count(data.logged_in_users), true);
  setText("traffic-searches", count(data.searches), true);
  $("traffic-date").textContent = data.date;
  $("traffic-bots").textContent = `${count(data.bot_requests)} bot requests not counted`;
  $("traffic-views-per-visitor").textContent = data.visitors
    ? `${decimal.format(data.page_views / data.visitors)} page views each` : "unique, since midnight";
  $("traffic-search-share").textContent = data.page_views
    ? `${percent(data.searches, data.page_views)} of page views` : "\u00a0";
  for (const [name, key] of [["traffic-page-views", "page_views"], ["traffic-visitors", "visitors"],
                             ["traffic-logged-in", "logged_in_users"], ["traffic-searches", "searches"]]) {
    recordKpi(name, data.date, data[key]);
  }
}

function renderTrafficPerMinute(data, live, fresh) {
  mergeDay(state.traffic, data, fresh);
  renderTrafficChart();
}

function renderTrafficChart() {
  const { date, minutes } = state.traffic;
  const hour = lastHour(date, minutes);
  const slots = hour.map((s) => (s.key !== null && minutes[s.key]) || {});
  const views = slots.map((m) => m.page_views || 0), errors = slots.map((m) => m.errors || 0);
  if (trafficChart) trafficChart.update(hour.map((s) => s.label), [views, slots.map((m) => m.visitors || 0), errors]);
  if (date !== null) {
    setText("traffic-hour-views", grouped.format(views.reduce((a, v) => a + v, 0)), false);
    setText("traffic-hour-errors", grouped.format(errors.reduce((a, v) => a + v, 0)), false);
  }
}

// --- envelopes --------------------------------------------------------------------------------

const renderers = {
  "orders.today": renderOrdersToday,
  "orders.per_minute": renderOrdersPerMinute,
  "traffic.today": renderTrafficToday,
  "traffic.per_minute": renderTrafficPerMinute,
  "search.terms.today": renderTermsToday,
  "search.terms.recent": renderTermsRecent,
  "search.products.today": renderProductsToday,
  "routes.per_minute": (data, live, fresh) => renderRoutesPerMinute(data, fresh),
  "alerts": renderAlerts,
};

function isSnapshot(env) {
  // A snapshot holds the channel's whole state. Envelopes with an epoch say so ("snapshot": true); before epochs
  // existed, the first message of a channel on a connection was its snapshot.
  if (env.epoch !== undefined) return env.snapshot === true;
  return !state.seen.has(env.channel);
}

function onEnvelope(env) {
  if (!env || typeof env.channel !== "string" || !Number.isInteger(env.seq)) return;
  if (!env.data || typeof env.data !== "object") return;
  const fresh = isSnapshot(env);
  const epoch = typeof env.epoch === "string" && env.epoch ? env.epoch : null;
  const last = state.position[env.channel];
  state.seen.add(env.channel);
  if (!fresh && last && last.epoch !== epoch) {
    // A change on top of another stream's state would mix two streams: start this channel over from its snapshot
    // (the server normally closes with 1012 first).
    delete state.position[env.channel];
    if (socket) socket.close(1000, "stream changed");
    return;
  }
  // Stale or repeated. (A seq may skip ahead: a slow connection gets queued changes merged into one.)
  if (!fresh && last && env.seq <= last.seq) return;
  state.position[env.channel] = { epoch, seq: env.seq };
  const live = !fresh && !state.replaying.has(env.channel);
  const render = renderers[env.channel];
  if (render) render(env.data, live, fresh);
}

function resumePositions() {
  // Where the page is in each channel that has epochs: the server replays what came after, in order, or sends
  // a snapshot marked as such when its history no longer reaches back or the epoch changed. Channels without
  // epochs (or never seen) start from their snapshot.
  const since = {};
  for (const [channel, pos] of Object.entries(state.position)) {
    if (pos.epoch !== null) since[channel] = { epoch: pos.epoch, seq: pos.seq };
  }
  return Object.keys(since).length ? since : null;
}

// --- connection -------------------------------------------------------------------------------

function scheduleReconnect(reason) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  const delay = Math.max(250, Math.random() * ceiling); // full jitter: clients do not reconnect in lockstep
  attempt += 1;
  setConnection("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s` + (reason ? ` (${reason})` : ""));
  clearTimeout(retryTimer);
  retryTimer = setTimeout(connect, delay);
}

function refused(reason, keep) {
  if (!keep) forgetToken();
  clearTimeout(retryTimer);
  showAccess(reason);
}

async function checkToken() {
  // {reason, keep}: why the server refuses the token (/auth/check: 401 with {error, detail}; 403 for this
  // address, where the token stays), or null when it accepts it or cannot be asked (the page tries again later).
  try {
    const reply = await fetch("/auth/check", { cache: "no-store", headers: { Authorization: "Bearer " + token } });
    if (reply.status === 403) {
      return { reason: "The server refuses this address: open the dashboard at the address its link names.",
               keep: true };
    }
    if (reply.status !== 401) return null;
    let why = "";
    try { why = String((await reply.json()).error || ""); } catch (e) { /* no reason given */ }
    return { reason: `The server refused the access token${why ? " (" + why + ")" : ""}.`, keep: false };
  } catch (e) {
    return null;
  }
}

function connect() {
  let ws;
  const since = resumePositions();
  try {
    ws = socket = new WebSocket(socketUrl(token, since));
  } catch (e) {
    scheduleReconnect("");
    return;
  }
  setConnection(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "connecting");
  let opened = false;
  ws.onopen = () => {
    opened = true;
    state.seen = new Set();
    if (since) {
      // What the server replays comes first; count no latency for it.
      state.replaying = new Set(Object.keys(since));
      setTimeout(() => state.replaying.clear(), REPLAY_MS);
    }
    setConnection("live", "live");
  };
  ws.onmessage = (event) => {
    attempt = 0; // the server is really serving us: the next drop starts from a short delay
    try { onEnvelope(JSON.parse(event.data)); } catch (e) { console.warn("bad message", e); }
  };
  ws.onclose = (event) => {
    if (event.code === CLOSE_TOKEN_EXPIRED) {
      refused(`The server ended the session (${event.reason || "token expired"}).`);
      return;
    }
    if (!opened) {
      // Refused before the upgrade (or the server is away): a browser does not see why; ask /auth/check.
      checkToken().then((why) => (why ? refused(why.reason, why.keep) : scheduleReconnect("")));
      return;
    }
    // 1003: the server could not read what the page sent (its resume positions among it): start afresh.
    if (event.code === 1003) state.position = {};
    scheduleReconnect(event.code === 1013 ? "too slow" : "");
  };
}

function tick() {
  // Slide the hour windows along the clock when nothing arrives (drawing only, no request).
  renderOrdersChart();
  renderTrafficChart();
  if (routes.date !== null) renderRoutes();
  renderLatency();
  renderDeltas();
  saveKpis();
}

token = takeToken();
if (!token) {
  showAccess("This dashboard needs an access token.");
} else {
  ordersChart = new MinuteChart("per-minute", [{ label: "orders", kind: "bars", color: "#4f46e5" }]);
  trafficChart = new MinuteChart("traffic-per-minute", [
    { label: "page views", kind: "bars", color: "#4f46e5" }, { label: "visitors", kind: "line", color: "#0891b2" },
    { label: "5xx", kind: "marks", color: "#dc2626" }]);
  tick();
  setInterval(tick, 5000);
  addEventListener("pagehide", saveKpis);
  connect();
}
