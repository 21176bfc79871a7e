// Getting in: the access token arrives in the URL's fragment (#token=..., never sent to any server in a
// request line or a Referer), is kept in this tab's sessionStorage and removed from the address bar at once;
// /ws gets it as its `token` query parameter. Without a token, or once the server refused it, the page shows
// how to get one instead of figures.
import { $ } from "./format.js";

const KEY = "rtdash.token";

function stored() {
  try { return sessionStorage.getItem(KEY); } catch (e) { return null; }
}

export function takeToken() {
  // The fragment's token (kept for the session, then taken out of the address bar) or the session's one.
  const hash = location.hash.replace(/^#/, "");
  const params = new URLSearchParams(hash);
  const fresh = params.get("token");
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  if (fresh) {
    try { sessionStorage.setItem(KEY, fresh); } catch (e) { /* private mode: this page load only */ }
    return fresh;
  }
  return stored();
}

export function forgetToken() {
  try { sessionStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
}

export function socketUrl(token, since) {
  // /ws with the token, and the page's position per channel when it resumes ({channel: {epoch, seq}}).
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  return scheme + location.host + "/ws?token=" + encodeURIComponent(token) +
    (since ? "&since=" + encodeURIComponent(JSON.stringify(since)) : "");
}

export function showAccess(reason) {
  // The explanation instead of the figures (none are kept on the page).
  $("access-reason").textContent = reason;
  $("access-example").textContent = location.origin + "/#token=<the token>";
  $("access").hidden = false;
  $("conn").className = "conn reconnecting";
  $("conn-state").textContent = "signed out";
  $("dashboard").hidden = true;
  document.body.classList.add("locked");
}
