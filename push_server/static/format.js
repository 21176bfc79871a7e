// Formatting and the dashboard's clock: numbers, yuan from integer cents, minutes in the server's time zone.
// Minutes are keyed in the server's time zone; the server's clock is used too (a wrong PC clock must not shift
// the charts), from the page's data-server-time.

export const $ = (id) => document.getElementById(id);
export const timezone = document.body.dataset.timezone || "UTC";

function clientTimeAtRender() {
  // The browser's clock when the server wrote data-server-time: midway between sending the page's request and
  // receiving its first byte (the Navigation Timing entry), else now.
  try {
    const nav = performance.getEntriesByType("navigation")[0];
    if (nav && nav.responseStart > 0) return performance.timeOrigin + (nav.requestStart + nav.responseStart) / 2;
  } catch (e) { /* no Navigation Timing */ }
  return Date.now();
}

const skewMs = (Number(document.body.dataset.serverTime) || clientTimeAtRender()) - clientTimeAtRender();

export const grouped = new Intl.NumberFormat("en-US");
export const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

export function count(value) {
  return Number.isFinite(value) ? grouped.format(value) : "–";
}

export function formatYuan(cents) {
  // Integer cents to "¥1,234.50" without floating-point rounding.
  const sign = cents < 0 ? "-" : "";
  const abs = Math.abs(Math.trunc(cents));
  const fen = String(abs % 100).padStart(2, "0");
  return sign + "¥" + grouped.format(Math.floor(abs / 100)) + "." + fen;
}

export function formatMs(value) {
  if (!Number.isFinite(value)) return "–";
  return (value < 10 ? value.toFixed(1) : grouped.format(Math.round(value))) + " ms";
}

export function percent(part, whole) {
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

export function zoned(ms) {
  // {date: "YYYY-MM-DD", minute: "HH:MM"} of an instant, in the dashboard's time zone.
  const p = {};
  for (const part of zoneParts.formatToParts(new Date(ms))) p[part.type] = part.value;
  return { date: `${p.year}-${p.month}-${p.day}`, minute: `${p.hour}:${p.minute}` };
}

export function serverNow() {
  return Date.now() + skewMs;
}

export function clock() {
  return zoned(serverNow());
}

export function zonedMinute(iso) {
  // "HH:MM" of an ISO-8601 instant in the dashboard's time zone ("" when unreadable).
  const ms = Date.parse(iso);
  return Number.isFinite(ms) ? zoned(ms).minute : "";
}

export function minuteIndex(label) {
  const m = /^(\d\d):(\d\d)$/.exec(label || "");
  return m ? Number(m[1]) * 60 + Number(m[2]) : -1;
}

export function minuteLabel(index) {
  return String(Math.floor(index / 60)).padStart(2, "0") + ":" + String(index % 60).padStart(2, "0");
}

export function latestMinute(minutes) {
  let latest = -1;
  for (const key of Object.keys(minutes)) latest = Math.max(latest, minuteIndex(key));
  return latest;
}

export function previousDay(date) {
  // "YYYY-MM-DD" of the calendar day before `date`.
  const d = new Date(date + "T12:00:00Z");
  d.setUTCDate(d.getUTCDate() - 1);
  return d.toISOString().slice(0, 10);
}

export function setText(id, text, flash) {
  const node = $(id);
  if (node.textContent === text) return;
  node.textContent = text;
  if (!flash) return;
  node.classList.add("bump");
  setTimeout(() => node.classList.remove("bump"), 700);
}

export function html(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
