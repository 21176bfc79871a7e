// rtdash dashboard: envelopes {channel, seq, data} over /ws, snapshot first, then live updates.
// Reconnects with capped exponential backoff and full jitter; ignores any envelope whose seq is
// not newer than the last one it applied on that channel (a new connection starts afresh).
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const body = document.body;
  const timezone = body.dataset.timezone || "UTC";
  // Minutes are keyed in the server's time zone; use the server's clock too (a wrong PC clock must
  // not shift the chart).
  const skewMs = (Number(body.dataset.serverTime) || Date.now()) - Date.now();
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 30000;

  const state = { seq: {}, today: null, date: null, minutes: {} };
  let attempt = 0;
  let retryTimer = null;

  // --- formatting -------------------------------------------------------------------------

  const grouped = new Intl.NumberFormat("en-US");

  function formatYuan(cents) {
    // Integer cents to "¥1,234.50" without floating-point rounding.
    const sign = cents < 0 ? "-" : "";
    const abs = Math.abs(Math.trunc(cents));
    const fen = String(abs % 100).padStart(2, "0");
    return sign + "¥" + grouped.format(Math.floor(abs / 100)) + "." + fen;
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

  function setText(id, text, flash) {
    const el = $(id);
    if (el.textContent === text) return;
    el.textContent = text;
    if (!flash) return;
    el.classList.add("bump");
    setTimeout(() => el.classList.remove("bump"), 700);
  }

  // --- connection state -------------------------------------------------------------------

  function setConnection(kind, text) {
    $("conn").className = "conn " + kind;
    $("conn-state").textContent = text;
  }

  // --- channels ---------------------------------------------------------------------------

  function renderToday(data) {
    state.today = data;
    setText("orders-count", grouped.format(data.count), true);
    setText("orders-amount", formatYuan(data.amount_cents), true);
    setText("orders-average", data.count ? formatYuan(Math.round(data.amount_cents / data.count)) : "–", false);
    $("orders-date").textContent = data.date;
    $("orders-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function renderPerMinute(data) {
    // The snapshot carries every minute of the day, a live update only the minutes that changed.
    if (state.date !== data.date) state.minutes = {};
    state.date = data.date;
    Object.assign(state.minutes, data.minutes || {});
    renderChart();
  }

  const renderers = { "orders.today": renderToday, "orders.per_minute": renderPerMinute };

  function onEnvelope(env) {
    if (!env || typeof env.channel !== "string" || !Number.isInteger(env.seq) || typeof env.data !== "object") return;
    const last = state.seq[env.channel];
    if (last !== undefined && env.seq <= last) return; // stale or repeated
    state.seq[env.channel] = env.seq;
    const render = renderers[env.channel];
    if (render) render(env.data);
  }

  // --- chart ------------------------------------------------------------------------------

  function lastHour() {
    const now = Date.now() + skewMs;
    const slots = [];
    for (let i = 59; i >= 0; i--) slots.push(zoned(now - i * 60000));
    return slots;
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return 10 * magnitude;
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderChart() {
    const svg = $("per-minute");
    const W = 720, H = 240, left = 40, right = 8, top = 12, bottom = 26;
    const slots = lastHour().map((s) => {
      const m = s.date === state.date ? state.minutes[s.minute] : undefined;
      return { label: s.minute, count: m ? m.count : 0, cents: m ? m.amount_cents : 0 };
    });
    const max = niceMax(Math.max(0, ...slots.map((s) => s.count)));
    const plotW = W - left - right, plotH = H - top - bottom;
    const step = plotW / slots.length;
    const y = (v) => top + plotH - (v / max) * plotH;

    const nodes = [];
    for (let g = 0; g <= 4; g++) {
      const v = (max * g) / 4;
      nodes.push(el("line", { class: g ? "grid" : "axis", x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      nodes.push(el("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? v : v.toFixed(1)));
    }
    slots.forEach((s, i) => {
      const x = left + i * step;
      const h = Math.max(s.count ? 2 : 1, (s.count / max) * plotH);
      const bar = el("rect", { class: s.count ? "bar" : "bar empty", x: x + 1.5, y: top + plotH - h,
                               width: Math.max(1, step - 3), height: h, rx: 2 });
      bar.appendChild(el("title", {}, `${s.label}  ${s.count} orders  ${formatYuan(s.cents)}`));
      nodes.push(bar);
      if (i % 10 === 0 || i === slots.length - 1) {
        const last = i === slots.length - 1;
        nodes.push(el("text", { x: last ? x + step : x + step / 2, y: H - 8, "text-anchor": last ? "end" : "middle" },
                      s.label));
      }
    });
    svg.replaceChildren(...nodes);

    const hourCount = slots.reduce((a, s) => a + s.count, 0);
    const hourCents = slots.reduce((a, s) => a + s.cents, 0);
    if (state.date !== null) {
      setText("orders-hour", grouped.format(hourCount), true);
      $("orders-hour-amount").textContent = formatYuan(hourCents) + " paid";
    }
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

  renderChart();
  // Slide the hour window along the clock when no order arrives (drawing only, no request).
  setInterval(renderChart, 15000);
  connect();
})();
