// rtdash dashboard: snapshot first, then live envelopes {channel, seq, data}.
// Reconnects with capped exponential backoff and jitter; ignores envelopes
// that are not newer than what it has (seq per channel).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const yuan = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const state = { seq: {}, today: null, minutes: {}, date: null };
  let attempt = 0;

  function setConnection(live, text) {
    $("conn").className = "conn " + (live ? "live" : "connecting");
    $("conn-state").textContent = text;
  }

  function bump(el, text) {
    if (el.textContent === text) return;
    el.textContent = text;
    el.classList.add("bump");
    setTimeout(() => el.classList.remove("bump"), 600);
  }

  function formatAmount(cents) {
    return "¥" + yuan.format(Math.floor(cents / 100) + (cents % 100) / 100);
  }

  function renderToday(data) {
    state.today = data;
    bump($("orders-count"), data.count.toLocaleString("en-US"));
    bump($("orders-amount"), formatAmount(data.amount_cents));
    $("orders-date").textContent = "on " + data.date;
    $("orders-average").textContent = data.count ? "average " + formatAmount(Math.round(data.amount_cents / data.count)) : "\u00a0";
    $("orders-updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  function minuteKey(d) {
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  function renderMinutes() {
    const svg = $("per-minute");
    const now = new Date();
    const keys = [];
    for (let i = 59; i >= 0; i--) keys.push(minuteKey(new Date(now.getTime() - i * 60000)));
    // The job's minutes are in the dashboard's configured zone; fall back to the newest minutes it sent.
    const known = Object.keys(state.minutes).sort();
    const useKnown = known.length && !keys.some((k) => k in state.minutes);
    const shown = useKnown ? known.slice(-60) : keys;
    const counts = shown.map((k) => (state.minutes[k] ? state.minutes[k].count : 0));
    const max = Math.max(1, ...counts);
    const w = 600 / shown.length;
    let out = "";
    for (let g = 1; g <= 3; g++) out += `<line class="grid" x1="0" x2="600" y1="${g * 40}" y2="${g * 40}"/>`;
    counts.forEach((c, i) => {
      const h = (c / max) * 150;
      out += `<rect class="bar" x="${i * w + 1}" y="${160 - h}" width="${Math.max(1, w - 2)}" height="${h}"><title>${shown[i]}: ${c}</title></rect>`;
    });
    svg.innerHTML = out;
    $("axis-start").textContent = shown[0] || "";
    $("axis-end").textContent = (shown[shown.length - 1] || "") + " · max " + max + "/min";
    const last = shown[shown.length - 1];
    $("orders-last-minute").textContent = state.minutes[last] ? state.minutes[last].count : 0;
  }

  function renderPerMinute(data) {
    if (state.date !== data.date) state.minutes = {};
    state.date = data.date;
    Object.assign(state.minutes, data.minutes);
    renderMinutes();
  }

  const renderers = { "orders.today": renderToday, "orders.per_minute": renderPerMinute };

  function onEnvelope(env) {
    if (!env || typeof env.channel !== "string" || typeof env.seq !== "number") return;
    const last = state.seq[env.channel];
    if (last !== undefined && env.seq <= last) return; // stale or repeated
    state.seq[env.channel] = env.seq;
    const render = renderers[env.channel];
    if (render) render(env.data);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    ws.onopen = () => {
      attempt = 0;
      state.seq = {}; // a new connection starts from fresh snapshots
      setConnection(true, "live");
    };
    ws.onmessage = (event) => {
      try { onEnvelope(JSON.parse(event.data)); } catch (e) { console.warn("bad message", e); }
    };
    ws.onclose = () => {
      const delay = Math.min(30000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
      attempt += 1;
      setConnection(false, "reconnecting in " + Math.ceil(delay / 1000) + " s");
      setTimeout(connect, delay);
    };
  }

  setInterval(renderMinutes, 15000); // slide the hour window even when no order arrives
  connect();
})();
