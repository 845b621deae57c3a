// mailshift cockpit: a small single-page view over /api/v1/. No framework,
// no build step, no outside requests.
"use strict";

const STATES = ["none", "queued", "syncing", "cutover", "done", "failed", "rolled-back"];
const view = document.getElementById("view");
const statusLine = document.getElementById("status");
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("mailshift-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("mailshift-token", tokenInput.value));

let timer = null;

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function human(b) {
  b = Number(b || 0);
  if (b >= 1e9) return (b / 1e9).toFixed(2) + " GB";
  if (b >= 1e6) return (b / 1e6).toFixed(1) + " MB";
  if (b >= 1e3) return (b / 1e3).toFixed(1) + " kB";
  return b + " B";
}

function duration(s) {
  if (s === null || s === undefined) return "unknown";
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "";
}

async function api(path, opts) {
  const r = await fetch("/api/v1" + path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function bar(p) {
  if (!p || !p.bytes_total) return "";
  const pct = Math.min(100, Math.round(100 * p.bytes / p.bytes_total));
  return `<span class="bar"><span style="width:${pct}%"></span></span> ${pct}%`;
}

function chart(samples) {
  // Throughput between consecutive samples of the fleet's bytes moved.
  const pts = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i][0] - samples[i - 1][0];
    if (dt > 0) pts.push([samples[i][0], Math.max(0, samples[i][1] - samples[i - 1][1]) / dt]);
  }
  const w = 600, h = 120;
  if (pts.length < 2) return `<svg id="chart" width="${w}" height="${h}"><text x="10" y="60">collecting samples…</text></svg>`;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0] || t0 + 1;
  const max = Math.max(...pts.map(p => p[1]), 1);
  const line = pts.map(p => `${((p[0] - t0) / Math.max(1, t1 - t0) * (w - 20) + 10).toFixed(1)},${(h - 10 - p[1] / max * (h - 30)).toFixed(1)}`).join(" ");
  return `<svg id="chart" width="${w}" height="${h}"><polyline fill="none" stroke="#1d6fb8" stroke-width="2" points="${line}"/><text x="10" y="14" font-size="11">peak ${human(max)}/s</text></svg>`;
}

async function overview() {
  const o = await api("/overview");
  const cards = STATES.filter(s => o.counts[s] !== undefined || s !== "none").map(s =>
    `<a class="card state-${s}" href="#/users?state=${s}" id="count-${s}" data-state="${s}"><div class="n">${o.counts[s] || 0}</div><div class="l">${s}</div></a>`).join("");
  const running = o.running.map(r => `<tr><td><a href="#/user/${encodeURIComponent(r.login)}">${esc(r.login)}</a></td><td>${esc(r.instance)}</td><td>${r.progress ? r.progress.messages + "/" + r.progress.messages_total : ""}</td><td>${r.progress ? human(r.progress.bytes) + " / " + human(r.progress.bytes_total) : ""}</td><td>${bar(r.progress)}</td></tr>`).join("");
  const cut = o.cutovers.map(r => `<tr><td><a href="#/user/${encodeURIComponent(r.login)}">${esc(r.login)}</a></td><td>${when(r.updated)}</td><td class="hold">${(r.hold_ms / 1000).toFixed(2)} s</td><td>${esc(r.to)}</td></tr>`).join("");
  const errs = o.errors.map(r => `<tr><td><a href="#/user/${encodeURIComponent(r.login)}">${esc(r.login)}</a></td><td>${esc(r.state)}</td><td>${when(r.updated)}</td><td class="err">${esc(r.error)}</td></tr>`).join("");
  view.innerHTML = `
    <h2>Overview</h2>
    <div class="cards" id="counts">${cards}
      <div class="card"><div class="n" id="users-total">${o.users}</div><div class="l">users</div></div>
      <div class="card"><div class="n" id="bytes-moved">${human(o.bytes_moved)}</div><div class="l">moved</div></div>
      <div class="card"><div class="n" id="eta">${duration(o.eta_seconds)}</div><div class="l">ETA of running moves</div></div>
    </div>
    <h3>Throughput</h3>${chart(o.samples)}
    <h3>Running moves</h3><table id="running"><tr><th>user</th><th>instance</th><th>messages</th><th>bytes</th><th>progress</th></tr>${running}</table>
    <h3>Recent cutovers</h3><table id="cutovers"><tr><th>user</th><th>when</th><th>hold</th><th>mailHost</th></tr>${cut}</table>
    <h3>Last errors</h3><table id="errors"><tr><th>user</th><th>state</th><th>when</th><th>error</th></tr>${errs}</table>`;
  statusLine.textContent = `instance ${o.instance.id || "-"} · ${o.instance.imap_sessions} IMAP sessions · LDAP follower ${o.instance.ldap_follower_live ? "live" : "off"}`;
  timer = setTimeout(route, 5000);
}

async function users(params) {
  const state = params.get("state") || "";
  const q = params.get("q") || "";
  view.innerHTML = `
    <h2>Users</h2>
    <p><input id="search" placeholder="search login" value="${esc(q)}">
    <select id="state-filter"><option value="">all states</option>${STATES.map(s => `<option ${s === state ? "selected" : ""}>${s}</option>`).join("")}</select>
    <span id="users-count"></span></p>
    <table id="users"><thead><tr><th>user</th><th>state</th><th>mailHost</th><th>instance</th><th>progress</th><th>hold</th><th>last error</th></tr></thead><tbody></tbody></table>`;
  const search = document.getElementById("search");
  const filter = document.getElementById("state-filter");
  const fill = async () => {
    const p = new URLSearchParams();
    if (filter.value) p.set("state", filter.value);
    if (search.value) p.set("q", search.value);
    const r = await api("/users?" + p.toString());
    document.querySelector("#users tbody").innerHTML = r.users.map(u => `<tr data-state="${esc(u.state)}"><td><a href="#/user/${encodeURIComponent(u.login)}">${esc(u.login)}</a></td><td class="state">${esc(u.state)}</td><td>${esc(u.mailhost)}</td><td>${esc(u.lease_live ? u.instance : "")}</td><td>${bar(u.progress)}</td><td>${u.hold_ms != null ? (u.hold_ms / 1000).toFixed(2) + " s" : ""}</td><td class="err">${esc(u.error)}</td></tr>`).join("");
    document.getElementById("users-count").textContent = `${r.total} users` + (r.total > r.users.length ? ` (first ${r.users.length} shown)` : "");
  };
  let debounce = null;
  search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(fill, 200); });
  filter.addEventListener("change", fill);
  await fill();
}

async function act(login, action) {
  const msg = document.getElementById("action-result");
  msg.className = "";
  msg.textContent = action + "…";
  try {
    const r = await api(`/users/${encodeURIComponent(login)}/${action}`, {method: "POST", headers: {"Authorization": "Bearer " + tokenInput.value}});
    msg.className = "ok";
    msg.textContent = `${action}: ${JSON.stringify(r)}`;
    // Follow the move as it goes.
    clearTimeout(timer);
    timer = setTimeout(route, 1000);
  } catch (e) {
    msg.className = "err";
    msg.textContent = `${action}: ${e.message}`;
  }
}

async function userPage(login) {
  const u = await api("/users/" + encodeURIComponent(login));
  const m = u.migration || {};
  let report = "<p>no report yet</p>";
  if (u.report) {
    const r = await api(`/users/${encodeURIComponent(login)}/report`);
    report = `<p id="report-verdict" class="${r.ok ? "ok" : "err"}">${r.ok ? "complete" : "NOT complete"} (${esc(r.origin)}, ${when(r.generated)}${r.hold_seconds != null ? ", hold " + r.hold_seconds.toFixed(2) + " s" : ""}) · <a href="/api/v1/users/${encodeURIComponent(login)}/report.html">HTML</a></p>
      <table id="report-folders"><tr><th>old</th><th>new</th><th>messages old</th><th>messages new</th><th>missing</th><th>flags differ</th></tr>${r.folders.map(f => `<tr><td>${esc(f.folder)}</td><td>${esc(f.dest)}</td><td>${f.source}</td><td>${f.destination}</td><td>${esc(f.missing.join("; "))}</td><td>${esc(f.flag_mismatches.join("; "))}</td></tr>`).join("")}</table>
      <h4>Refused by the new store</h4><table id="report-refused"><tr><th>folder</th><th>uid</th><th>why</th></tr>${r.refused.map(x => `<tr><td>${esc(x.folder)}</td><td>${x.uid}</td><td>${esc(x.reason)}</td></tr>`).join("")}</table>`;
  }
  const sessions = Array.isArray(u.sessions) ? u.sessions.length : u.sessions;
  view.innerHTML = `
    <h2 id="user-login">${esc(u.login)}</h2>
    <dl id="entry">
      <dt>DN</dt><dd>${esc(u.dn)}</dd>
      <dt>mailHost</dt><dd id="user-mailhost">${esc(u.mailhost)}</dd>
      <dt>status</dt><dd>${esc(u.status)}</dd>
      <dt>route</dt><dd id="user-route">${esc(u.backend || u.route_error)}</dd>
      <dt>sessions</dt><dd>${esc(JSON.stringify(sessions))}</dd>
      <dt>migration state</dt><dd id="user-state">${esc(m.state || "none")}</dd>
      <dt>instance</dt><dd>${esc(m.lease_live ? m.instance : "")}</dd>
      <dt>progress</dt><dd>${m.progress ? `${m.progress.messages}/${m.progress.messages_total} messages, ${human(m.progress.bytes)}/${human(m.progress.bytes_total)} ${bar(m.progress)}` : ""}</dd>
      <dt>last hold</dt><dd>${m.hold_ms != null ? (m.hold_ms / 1000).toFixed(2) + " s" : ""}</dd>
      <dt>last error</dt><dd id="user-error" class="err">${esc(m.error)}</dd>
    </dl>
    <p id="actions">
      <button id="act-migrate">Migrate now</button><button id="act-cutover">Cut over</button>
      <button id="act-rollback">Roll back</button><button id="act-kick">Kick sessions</button>
      <span id="action-result"></span></p>
    <h3>Report</h3>${report}
    <h3>Events</h3><table id="events"><tr><th>when</th><th>event</th><th>instance</th><th>detail</th></tr>${u.events.slice().reverse().map(e => {
      const {time, event, instance, user, ...rest} = e;
      return `<tr><td>${when(time)}</td><td>${esc(event)}</td><td>${esc(instance)}</td><td>${esc(JSON.stringify(rest))}</td></tr>`;
    }).join("")}</table>`;
  for (const a of ["migrate", "cutover", "rollback", "kick"]) {
    document.getElementById("act-" + a).addEventListener("click", () => act(u.login, a));
  }
  if (["syncing", "cutover"].includes(m.state)) timer = setTimeout(route, 2000);
}

async function route() {
  clearTimeout(timer);
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  try {
    if (path.startsWith("/user/")) await userPage(decodeURIComponent(path.slice(6)));
    else if (path === "/users") await users(params);
    else await overview();
  } catch (e) {
    view.innerHTML = `<p class="err" id="error">${esc(e.message)}</p>`;
  }
}

window.addEventListener("hashchange", route);
route();
