// rtdash dashboard: envelopes {channel, seq, data} over /ws, snapshot first, then live updates.
// Reconnects with capped exponential backoff and full jitter; ignores any envelope whose seq is
// not newer than the last one it applied on that channel (a new connection starts afresh).
// Everything from the server is written with textContent or SVG attributes, never parsed as
// HTML: search terms are whatever shoppers typed.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const body = document.body;
  const timezone = body.dataset.timezone || "UTC";
  // Minutes are keyed in the server's time zone; use the server's clock too (a wrong PC clock must
  // not shift the charts).
  const skewMs = (Number(body.dataset.serverTime) || Date.now()) - Date.now();
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;
  const TITLE = document.title;

  const state = {
    seq: {},
    orders: { today: null, date: null, minutes: {} },
    traffic: { date: null, minutes: {} },
    routes: { date: null, minutes: {} },
  };
  let attempt = 0;
  let retryTimer = null;

  // --- formatting -------------------------------------------------------------------------

  const grouped = new Intl.NumberFormat("en-US");
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function count(value) {
    return Number.isFinite(value) ? grouped.format(value) : "–";
  }

  function formatYuan(cents) {
    // Integer cents to "¥1,234.50" without floating-point rounding.
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(Math.trunc(cents));
    const fen = String(abs % 100).padStart(2, "0");
    return sign + "¥" + grouped.format(Math.floor(abs / 100)) + "." + fen;
  }

  function formatMs(value) {
    if (!Number.isFinite(value)) return "–";
    return (value < 10 ? value.toFixed(1) : grouped.format(Math.round(value))) + " ms";
  }

  function percent(part, whole) {
    if (!whole) return "–";
    const p = (100 * part) / whole;
    return (p === 0 ? "0" : p < 0.1 ? "<0.1" : p < 10 ? p.toFixed(1) : Math.round(p)) + "%";
  }

  let zoneParts;
  try {
    zoneParts = new Intl.DateTimeFormat("en-CA", {
      timeZone: timezone, year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  } catch (e) {
    zoneParts = new Intl.DateTimeFormat("en-CA", {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  }

  function zoned(ms) {
    // {date: "YYYY-MM-DD", minute: "HH:MM"} of an instant, in the dashboard's time zone.
    const p = {};
    for (const part of zoneParts.formatToParts(new Date(ms))) p[part.type] = part.value;
    return { date: `${p.year}-${p.month}-${p.day}`, minute: `${p.hour}:${p.minute}` };
  }

  function clock() {
    return zoned(Date.now() + skewMs);
  }

  function zonedMinute(iso) {
    // "HH:MM" of an ISO-8601 instant in the dashboard's time zone ("" when unreadable).
    const ms = Date.parse(iso);
    return Number.isFinite(ms) ? zoned(ms).minute : "";
  }

  function minuteIndex(label) {
    const m = /^(\d\d):(\d\d)$/.exec(label || "");
    return m ? Number(m[1]) * 60 + Number(m[2]) : -1;
  }

  function minuteLabel(index) {
    return String(Math.floor(index / 60)).padStart(2, "0") + ":" + String(index % 60).padStart(2, "0");
  }

  function latestMinute(minutes) {
    let latest = -1;
    for (const key of Object.keys(minutes)) latest = Math.max(latest, minuteIndex(key));
    return latest;
  }

  function setText(id, text, flash) {
    const node = $(id);
    if (node.textContent === text) return;
    node.textContent = text;
    if (!flash) return;
    node.classList.add("bump");
    setTimeout(() => node.classList.remove("bump"), 700);
  }

  function html(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // --- connection state -------------------------------------------------------------------

  function setConnection(kind, text) {
    $("conn").className = "conn " + kind;
    $("conn-state").textContent = text;
  }

  // --- per-minute channels: the snapshot has the whole day, a live message changed minutes --

  function mergeDay(target, data, mergeMinute) {
    if (target.date !== data.date) target.minutes = {}; // a new day replaces the old one
    target.date = data.date;
    for (const [minute, value] of Object.entries(data.minutes || {})) {
      target.minutes[minute] = mergeMinute ? mergeMinute(target.minutes[minute], value) : value;
    }
  }

  function lastHour(date, minutes) {
    // The 60 minutes ending now, or, when the data's day is not the clock's (a job counting in
    // event time around midnight), ending at the data's latest minute.
    const now = clock();
    if (date === null || date === now.date) {
      const base = Date.now() + skewMs;
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

  // --- charts -----------------------------------------------------------------------------

  function niceMax(value) {
    if (value <= 4) return 4;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  function drawChart(target, slots, series) {
    // Bars of series.bar per slot, optionally a line (series.line) and red error marks
    // (series.alarm), all on one axis; a tooltip per slot.
    const W = 720, H = 240, left = 40, right = 8, top = 12, bottom = 26;
    const max = niceMax(Math.max(0, ...slots.map((s) => Math.max(s.bar, s.line || 0))));
    const plotW = W - left - right, plotH = H - top - bottom;
    const step = plotW / slots.length;
    const y = (v) => top + plotH - (v / max) * plotH;

    const nodes = [];
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      nodes.push(svg("line", { class: g ? "grid" : "axis", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      const label = Number.isInteger(v) ? v : v.toFixed(1);
      nodes.push(svg("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, label));
    }
    slots.forEach((s, i) => {
      const x = left + i * step;
      const h = Math.max(s.bar ? 2 : 1, (s.bar / max) * plotH);
      const bar = svg("rect", { class: s.bar ? "bar" : "bar empty", x: x + 1.5, y: top + plotH - h,
                                width: Math.max(1, step - 3), height: h, rx: 2 });
      bar.appendChild(svg("title", {}, s.tooltip));
      nodes.push(bar);
      if (s.alarm) {
        const e = Math.max(3, (s.alarm / max) * plotH);
        const mark = svg("rect", { class: "alarm", x: x + 1.5, y: top + plotH - e, width: Math.max(1, step - 3),
                                   height: e, rx: 1 });
        mark.appendChild(svg("title", {}, s.tooltip));
        nodes.push(mark);
      }
      if (i % 10 === 0 || i === slots.length - 1) {
        const last = i === slots.length - 1;
        nodes.push(svg("text", { x: last ? x + step : x + step / 2, y: H - 8, "text-anchor": last ? "end" : "middle" },
                       s.label));
      }
    });
    if (series && series.line) {
      const points = slots.map((s, i) => `${(left + i * step + step / 2).toFixed(1)},${y(s.line || 0).toFixed(1)}`);
      nodes.push(svg("polyline", { class: "line", points: points.join(" ") }));
    }
    $(target).replaceChildren(...nodes);
  }

  // --- orders -----------------------------------------------------------------------------

  function renderOrdersToday(data) {
    state.orders.today = data;
    setText("orders-count", grouped.format(data.count), true);
    setText("orders-amount", formatYuan(data.amount_cents), true);
    setText("orders-average", data.count ? formatYuan(Math.round(data.amount_cents / data.count)) : "–", false);
    $("orders-date").textContent = data.date;
    $("orders-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderOrdersPerMinute(data) {
    mergeDay(state.orders, data);
    renderOrdersChart();
  }

  function renderOrdersChart() {
    const { date, minutes } = state.orders;
    const slots = lastHour(date, minutes).map((s) => {
      const m = s.key !== null ? minutes[s.key] : undefined;
      const n = m ? m.count : 0, cents = m ? m.amount_cents : 0;
      return { label: s.label, bar: n, cents, tooltip: `${s.label}  ${n} orders  ${formatYuan(cents)}` };
    });
    drawChart("per-minute", slots);
    if (date !== null) {
      setText("orders-hour", grouped.format(slots.reduce((a, s) => a + s.bar, 0)), true);
      $("orders-hour-amount").textContent = formatYuan(slots.reduce((a, s) => a + s.cents, 0)) + " paid";
    }
  }

  // --- traffic ----------------------------------------------------------------------------

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
  }

  function renderTrafficPerMinute(data) {
    mergeDay(state.traffic, data);
    renderTrafficChart();
  }

  function renderTrafficChart() {
    const { date, minutes } = state.traffic;
    const slots = lastHour(date, minutes).map((s) => {
      const m = (s.key !== null ? minutes[s.key] : undefined) || {};
      const views = m.page_views || 0, visitors = m.visitors || 0, requests = m.requests || 0, errors = m.errors || 0;
      return { label: s.label, bar: views, line: visitors, alarm: errors,
               tooltip: `${s.label}  ${views} page views  ${visitors} visitors  ${requests} requests  ${errors} 5xx` };
    });
    drawChart("traffic-per-minute", slots, { line: true });
    if (date !== null) {
      setText("traffic-hour-views", grouped.format(slots.reduce((a, s) => a + s.bar, 0)), false);
      setText("traffic-hour-errors", grouped.format(slots.reduce((a, s) => a + s.alarm, 0)), false);
    }
  }

  // --- rankings ---------------------------------------------------------------------------

  function renderRanked(id, rows, emptyText) {
    // rows: [{label, sub?, count}] in rank order (the job ranks them).
    const list = $(id);
    if (!rows.length) {
      list.replaceChildren(html("li", "empty", emptyText));
      return;
    }
    const previous = new Map([...list.querySelectorAll("li.item")].map((li) => [li.dataset.key, li.dataset.count]));
    const top = Math.max(1, ...rows.map((r) => r.count));
    const items = rows.map((row, i) => {
      const li = html("li", "item");
      li.dataset.key = row.label;
      li.dataset.count = String(row.count);
      if (previous.size && previous.get(row.label) !== String(row.count)) li.classList.add("changed");
      const name = html("span", "name");
      name.appendChild(html("span", "label", row.label));
      if (row.sub) name.appendChild(html("span", "sub", row.sub));
      const track = html("span", "track");
      const fill = html("span", "fill");
      fill.style.width = ((100 * row.count) / top).toFixed(1) + "%"; // CSSOM, allowed by the CSP
      track.appendChild(fill);
      li.append(html("span", "rank", String(i + 1)), name, html("span", "count", count(row.count)), track);
      return li;
    });
    list.replaceChildren(...items);
  }

  function termRows(terms) {
    return (Array.isArray(terms) ? terms : []).map((t) => ({ label: String(t.term), count: Number(t.count) }));
  }

  function renderTermsToday(data) {
    renderRanked("terms-today", termRows(data.terms), "No searches yet today");
  }

  function renderTermsRecent(data) {
    renderRanked("terms-recent", termRows(data.terms), "No searches in the last 10 minutes");
    const from = zonedMinute(data.window_start), to = zonedMinute(data.window_end);
    $("terms-recent-window").textContent = from && to ? `${from}–${to}` : "\u00a0";
  }

  function renderProductsToday(data) {
    const rows = (Array.isArray(data.products) ? data.products : []).map((p) => (
      p.name ? { label: String(p.name), sub: String(p.product_id), count: Number(p.count) }
             : { label: String(p.product_id), count: Number(p.count) }));
    renderRanked("products-today", rows, "No product searched yet today");
  }

  // --- route health -----------------------------------------------------------------------

  function renderRoutesPerMinute(data) {
    // A live message may carry only the routes of a minute that changed: merge route by route.
    mergeDay(state.routes, data, (old, value) => Object.assign({}, old || {}, value));
    renderRoutes();
  }

  function sparkline(series) {
    const W = 120, H = 26, step = W / series.length;
    const max = Math.max(1, ...series.map((s) => s.requests));
    const chart = svg("svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" });
    series.forEach((s, i) => {
      const h = s.requests ? Math.max(1.5, (s.requests / max) * (H - 2)) : 0.75;
      chart.appendChild(svg("rect", { class: s.errors ? "bad" : s.requests ? "ok" : "none", x: i * step + 0.5,
                                      y: H - h, width: Math.max(1, step - 1), height: h }));
    });
    return chart;
  }

  function renderRoutes() {
    // Per route: the latest minute of the day (the job's event-time clock) and the 5 and 30
    // minutes ending at it.
    const { date, minutes } = state.routes;
    const tbody = $("routes-body");
    const latest = latestMinute(minutes);
    if (date === null || latest < 0) {
      const row = html("tr", "empty-row");
      const cell = html("td", "", "No requests yet today");
      cell.colSpan = 10;
      row.appendChild(cell);
      tbody.replaceChildren(row);
      $("routes-asof").textContent = date ? date : "\u00a0";
      return;
    }
    const names = new Set();
    for (let i = Math.max(0, latest - 29); i <= latest; i++) {
      for (const route of Object.keys(minutes[minuteLabel(i)] || {})) names.add(route);
    }
    const rows = [...names].sort().map((route) => {
      const at = (i) => (i >= 0 && (minutes[minuteLabel(i)] || {})[route]) || null;
      const now = at(latest) || {};
      let requests5 = 0, errors5 = 0;
      for (let i = latest - 4; i <= latest; i++) {
        const m = at(i);
        if (m) { requests5 += m.requests || 0; errors5 += m.errors || 0; }
      }
      const series = [];
      for (let i = latest - 29; i <= latest; i++) {
        const m = at(i) || {};
        series.push({ requests: m.requests || 0, errors: m.errors || 0 });
      }
      const rate = requests5 ? errors5 / requests5 : 0;
      const health = !requests5 ? ["idle", "idle"] : rate >= 0.05 ? ["bad", "failing"]
        : errors5 ? ["warn", "errors"] : ["ok", "healthy"];

      const tr = html("tr");
      tr.dataset.route = route;
      const name = html("th", "route", route);
      name.scope = "row";
      const pill = html("span", "pill " + health[0], health[1]);
      const status = html("td", "status");
      status.appendChild(pill);
      const cells = [
        ["requests", count(now.requests || 0)], ["errors", count(now.errors || 0)],
        ["p50", formatMs(now.p50_ms)], ["p95", formatMs(now.p95_ms)],
        ["requests-5m", count(requests5)], ["errors-5m", count(errors5)], ["error-rate", percent(errors5, requests5)],
      ].map(([key, text]) => {
        const td = html("td", "num " + key, text);
        if ((key === "errors" || key === "errors-5m") && text !== "0") td.classList.add("bad");
        return td;
      });
      const trend = html("td", "trend");
      trend.appendChild(sparkline(series));
      tr.append(name, status, ...cells, trend);
      return tr;
    });
    tbody.replaceChildren(...rows);
    const now = clock();
    const behind = now.date === date ? minuteIndex(now.minute) - latest : 0;
    $("routes-asof").textContent = `latest minute ${minuteLabel(latest)}` +
      (behind >= 2 ? ` · no requests for ${behind} minutes` : "");
  }

  // --- alerts -----------------------------------------------------------------------------

  function alertLine(alert) {
    const li = html("li", "alert-item");
    li.appendChild(html("span", "alert-message", String(alert.message || alert.rule)));
    const since = zonedMinute(alert.since);
    const facts = [String(alert.rule)];
    if (since) facts.push("since " + since);
    if (Number.isFinite(alert.value)) {
      facts.push("now " + decimal.format(alert.value) +
                 (Number.isFinite(alert.baseline) ? " vs " + decimal.format(alert.baseline) + " before" : ""));
    }
    li.appendChild(html("span", "alert-meta", facts.join(" · ")));
    return li;
  }

  function renderAlerts(data) {
    const alerts = Array.isArray(data.alerts) ? data.alerts : [];
    const firing = alerts.filter((a) => a && a.state === "firing");
    const pending = alerts.filter((a) => a && a.state === "pending");
    const banner = $("alert-banner");
    banner.hidden = firing.length === 0;
    $("alert-title").textContent = firing.length === 1 ? "Alert firing" : `${firing.length} alerts firing`;
    $("alert-list").replaceChildren(...firing.map(alertLine));
    const chip = $("alerts-pending");
    chip.hidden = pending.length === 0;
    chip.textContent = `${pending.length} pending`;
    chip.title = pending.map((a) => String(a.message || a.rule)).join("\n");
    document.title = (firing.length ? "(!) " : "") + TITLE;
  }

  // --- envelopes --------------------------------------------------------------------------

  const renderers = {
    "orders.today": renderOrdersToday,
    "orders.per_minute": renderOrdersPerMinute,
    "traffic.today": renderTrafficToday,
    "traffic.per_minute": renderTrafficPerMinute,
    "search.terms.today": renderTermsToday,
    "search.terms.recent": renderTermsRecent,
    "search.products.today": renderProductsToday,
    "routes.per_minute": renderRoutesPerMinute,
    "alerts": renderAlerts,
  };

  function onEnvelope(env) {
    if (!env || typeof env.channel !== "string" || !Number.isInteger(env.seq)) return;
    if (!env.data || typeof env.data !== "object") return;
    const last = state.seq[env.channel];
    if (last !== undefined && env.seq <= last) return; // stale or repeated
    state.seq[env.channel] = env.seq;
    const render = renderers[env.channel];
    if (render) render(env.data);
  }

  // --- connection -------------------------------------------------------------------------

  function scheduleReconnect(reason) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = Math.max(250, Math.random() * ceiling); // full jitter: clients do not reconnect in lockstep
    attempt += 1;
    setConnection("reconnecting", `reconnecting in ${Math.ceil(delay / 1000)} s` + (reason ? ` (${reason})` : ""));
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, delay);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    let ws;
    try {
      ws = new WebSocket(scheme + location.host + "/ws");
    } catch (e) {
      scheduleReconnect("");
      return;
    }
    setConnection(attempt ? "reconnecting" : "connecting", attempt ? "reconnecting…" : "connecting");
    ws.onopen = () => {
      state.seq = {}; // a new connection starts from fresh snapshots
      setConnection("live", "live");
    };
    ws.onmessage = (event) => {
      attempt = 0; // the server is really serving us: the next drop starts from a short delay
      try { onEnvelope(JSON.parse(event.data)); } catch (e) { console.warn("bad message", e); }
    };
    ws.onclose = (event) => {
      scheduleReconnect(event.code === 1013 ? "too slow" : "");
    };
  }

  function tick() {
    // Slide the hour windows along the clock when nothing arrives (drawing only, no request).
    renderOrdersChart();
    renderTrafficChart();
    if (state.routes.date !== null) renderRoutes();
  }

  tick();
  setInterval(tick, 15000);
  connect();
})();
