// The dashboard page: plain HTML, CSS and a framework-free script, kept as string constants so the
// compiled package needs no extra files and the page needs no network but its own node. The script
// inserts every piece of data with textContent (resource names, client ids and keys are user input).
// It is ES2017 in plain quotes, no template literals, so it can live inside the constants below.

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DSS dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="dashboard/app.css">
<script src="dashboard/app.js" defer></script>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo">DSS</span><span class="title">Cluster dashboard</span></div>
  <div class="health" id="health"><span class="pill pill-muted">connecting…</span></div>
  <div class="meta" id="meta"></div>
</header>
<div class="banner" id="banner" role="alert" hidden></div>
<form class="auth" id="auth" hidden>
  <label for="token">This node requires an API token (API_TOKENS):</label>
  <input id="token" type="password" autocomplete="off" placeholder="bearer token">
  <button type="submit">Use token</button>
</form>
<main id="main">
  <section class="card span-2" aria-labelledby="h-nodes">
    <h2 id="h-nodes">Nodes <span class="sub" id="nodes-sub"></span></h2>
    <div id="nodes"></div>
  </section>
  <section class="card" aria-labelledby="h-locks">
    <h2 id="h-locks">Locks <span class="sub" id="locks-sub"></span></h2>
    <div id="locks"></div>
  </section>
  <section class="card" aria-labelledby="h-queues">
    <h2 id="h-queues">Queues <span class="sub" id="queues-sub"></span></h2>
    <div id="queues"></div>
  </section>
  <section class="card span-2" aria-labelledby="h-cache">
    <h2 id="h-cache">Cache lines <span class="legend" id="legend"></span></h2>
    <div id="cache" class="cache-grid"></div>
  </section>
</main>
<footer class="foot">Refreshes every second from this node's <code>/dashboard/api/cluster</code>.
Lock table: the leader's applied view. Queue depths: each queue's owner. Cache: each node's L1.</footer>
</body>
</html>
`;

export const DASHBOARD_CSS = `:root {
  --bg: #f4f6f9; --card: #ffffff; --ink: #1c2330; --muted: #6b7585; --line: #e3e7ee;
  --ok: #1f8a4c; --warn: #b76e00; --bad: #c92a2a; --accent: #3b5bdb;
  --m: #d9480f; --e: #2b8a3e; --s: #1c6fc4; --i: #868e96;
  font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  font-size: 14px; color: var(--ink); background: var(--bg);
}
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 13px; }
.top { display: flex; align-items: center; gap: 24px; flex-wrap: wrap; padding: 14px 24px;
  background: #1c2330; color: #fff; }
.brand { display: flex; align-items: center; gap: 10px; }
.logo { font-weight: 800; letter-spacing: 1px; background: var(--accent); padding: 4px 8px; border-radius: 6px; }
.title { font-size: 18px; font-weight: 600; }
.health { display: flex; gap: 8px; flex-wrap: wrap; flex: 1; }
.meta { color: #c5ccd8; font-size: 13px; }
.pill { display: inline-flex; align-items: center; gap: 6px; padding: 5px 12px; border-radius: 999px;
  font-weight: 600; font-size: 14px; white-space: nowrap; }
.pill-ok { background: #d3f9d8; color: #0b5b2a; }
.pill-warn { background: #fff3bf; color: #7a4a00; }
.pill-bad { background: #ffe3e3; color: #8f1d1d; }
.pill-muted { background: #3a4456; color: #dfe4ec; }
.banner { background: var(--bad); color: #fff; padding: 10px 24px; font-weight: 600; }
.auth { display: flex; gap: 10px; align-items: center; padding: 10px 24px; background: #fff3bf; }
.auth input { padding: 5px 8px; border: 1px solid #c9b458; border-radius: 4px; min-width: 260px; }
.auth button { padding: 5px 12px; }
main { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; padding: 16px 24px; }
main.stale { opacity: 0.55; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px;
  box-shadow: 0 1px 2px rgba(20, 30, 50, 0.05); min-width: 0; }
.span-2 { grid-column: span 2; }
@media (max-width: 900px) { main { grid-template-columns: minmax(0, 1fr); } .span-2 { grid-column: span 1; } }
h2 { margin: 0 0 10px; font-size: 16px; display: flex; align-items: baseline; gap: 10px; flex-wrap: wrap; }
.sub { color: var(--muted); font-weight: 400; font-size: 13px; }
table { width: 100%; border-collapse: collapse; }
th { text-align: left; color: var(--muted); font-weight: 600; font-size: 12px; text-transform: uppercase;
  letter-spacing: 0.4px; padding: 6px 8px; border-bottom: 1px solid var(--line); }
td { padding: 7px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
tr:last-child td { border-bottom: none; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.is-leader td { background: #edf2ff; }
tr.is-down td { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; padding: 10px 2px; }
.note { color: var(--muted); font-size: 12px; padding-top: 6px; }
.err { color: var(--bad); }
.chip { display: inline-block; padding: 1px 7px; margin: 1px 4px 1px 0; border-radius: 4px; font-size: 12px;
  background: #eef1f6; color: #39414f; border: 1px solid #dde2ea; }
.badge-leader { display: inline-block; margin-left: 8px; padding: 1px 8px; border-radius: 4px; font-size: 11px;
  font-weight: 700; letter-spacing: 0.5px; background: var(--accent); color: #fff; vertical-align: 1px; }
.dot { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 6px; }
.dot-ok { background: var(--ok); } .dot-warn { background: var(--warn); } .dot-bad { background: var(--bad); }
.state-leader { color: var(--accent); font-weight: 700; }
.state-candidate { color: var(--warn); font-weight: 600; }
.hold { display: flex; gap: 8px; flex-wrap: wrap; align-items: baseline; }
.hold + .hold { margin-top: 3px; }
.token { color: var(--muted); font-size: 12px; }
.ttl { font-size: 12px; font-variant-numeric: tabular-nums; color: var(--ok); }
.ttl.soon { color: var(--warn); } .ttl.gone { color: var(--bad); }
.mode { font-size: 11px; text-transform: uppercase; letter-spacing: 0.4px; padding: 1px 6px; border-radius: 4px;
  background: #f1f3f5; color: #495057; }
.mode-exclusive { background: #fff0f6; color: #a61e4d; }
.mode-shared { background: #e7f5ff; color: #1864ab; }
ol.waiters { margin: 0; padding-left: 20px; }
ol.waiters li { white-space: nowrap; }
.res { display: block; max-width: 260px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.why { display: block; max-width: 340px; color: var(--muted); font-size: 12px; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.dead { color: var(--bad); font-weight: 700; }
.cache-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 12px; }
.cache-node { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; min-width: 0; }
.cache-node h3 { margin: 0 0 4px; font-size: 14px; }
.cache-node .sub { display: block; margin-bottom: 8px; }
.line { display: flex; align-items: center; justify-content: space-between; gap: 8px; padding: 3px 0;
  border-bottom: 1px dashed var(--line); }
.line:last-child { border-bottom: none; }
.line .key { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.mesi { display: inline-block; min-width: 22px; text-align: center; padding: 1px 6px; border-radius: 4px;
  font-weight: 700; font-size: 12px; color: #fff; }
.mesi-M { background: var(--m); } .mesi-E { background: var(--e); } .mesi-S { background: var(--s); }
.mesi-I { background: var(--i); }
.legend { display: inline-flex; gap: 10px; font-weight: 400; font-size: 12px; color: var(--muted); }
.legend span.item { display: inline-flex; gap: 4px; align-items: center; }
.foot { color: var(--muted); font-size: 12px; padding: 0 24px 20px; }
`;

export const DASHBOARD_JS = `'use strict';
(function () {
  var POLL_MS = 1000;
  var TIMEOUT_MS = 4000;
  var TOKEN_KEY = 'dss-dashboard-token';
  var MESI_NAMES = { M: 'Modified', E: 'Exclusive', S: 'Shared', I: 'Invalid' };
  var clockOffset = 0;
  var lastOkAt = 0;
  var servedBy = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function empty(text) { return el('div', 'empty', text); }
  function fmt(n) { return Number(n).toLocaleString('en-US'); }
  function table(headers, numeric) {
    var t = el('table');
    var tr = el('tr');
    headers.forEach(function (h, i) { tr.appendChild(el('th', numeric && numeric.indexOf(i) >= 0 ? 'num' : '', h)); });
    add(t, add(el('thead'), tr));
    var body = el('tbody');
    t.appendChild(body);
    return { table: t, body: body };
  }
  function cell(tr, content, cls) {
    var td = el('td', cls || '');
    if (content instanceof Node) td.appendChild(content); else if (content !== undefined && content !== null) td.textContent = String(content);
    tr.appendChild(td);
    return td;
  }
  function pill(kind, text) { return el('span', 'pill pill-' + kind, text); }
  function mesi(state) {
    var b = el('span', 'mesi mesi-' + state, state);
    b.title = MESI_NAMES[state] || state;
    return b;
  }
  function modeTag(mode) { return el('span', 'mode mode-' + mode, mode); }

  function token() { try { return sessionStorage.getItem(TOKEN_KEY); } catch (e) { return null; } }

  function ttlText(expiresAt) {
    var left = expiresAt - (Date.now() + clockOffset);
    if (left <= 0) return { text: 'expired', cls: 'gone' };
    var s = left / 1000;
    var text = s < 60 ? 'expires in ' + s.toFixed(1) + ' s'
      : s < 3600 ? 'expires in ' + Math.floor(s / 60) + ' min ' + Math.floor(s % 60) + ' s'
      : 'expires in ' + (s / 3600).toFixed(1) + ' h';
    return { text: text, cls: s < 5 ? 'soon' : '' };
  }
  function ttlSpan(expiresAt) {
    var span = el('span', 'ttl');
    span.setAttribute('data-expires', String(expiresAt));
    paintTtl(span);
    return span;
  }
  function paintTtl(span) {
    var t = ttlText(Number(span.getAttribute('data-expires')));
    span.textContent = t.text;
    span.className = 'ttl' + (t.cls ? ' ' + t.cls : '');
  }
  function tick() {
    var spans = document.querySelectorAll('[data-expires]');
    for (var i = 0; i < spans.length; i++) paintTtl(spans[i]);
  }

  function renderHealth(data) {
    var nodes = data.nodes;
    var up = nodes.filter(function (n) { return n.snapshot; }).length;
    var h = $('health');
    h.replaceChildren();
    if (data.leader) {
      add(h, pill('ok', '\\u2605 Leader ' + data.leader.id + ' \\u00b7 term ' + data.leader.term));
    } else if (nodes.some(function (n) { return n.roles.indexOf('lock') >= 0; })) {
      add(h, pill('bad', 'No Raft leader'));
    }
    add(h, pill(up === nodes.length ? 'ok' : up * 2 > nodes.length ? 'warn' : 'bad',
      up + ' / ' + nodes.length + ' nodes reachable'));
    $('meta').textContent = 'via ' + data.served_by + ' \\u00b7 updated ' + new Date().toLocaleTimeString();
    document.title = (data.leader ? 'DSS \\u00b7 leader ' + data.leader.id + ' (term ' + data.leader.term + ')' : 'DSS \\u00b7 no leader');
  }

  function renderNodes(data) {
    var t = table(['Node', 'Roles', 'Status', 'Raft', 'Term', 'Commit', 'Applied', 'Queues owned', 'L1 lines'], [4, 5, 6, 7, 8]);
    data.nodes.forEach(function (n) {
      var s = n.snapshot;
      var raft = s && s.raft;
      var isLeader = data.leader && data.leader.id === n.id && raft && raft.state === 'leader';
      var tr = el('tr', isLeader ? 'is-leader' : s ? '' : 'is-down');
      tr.setAttribute('data-node', n.id);
      var name = add(el('span'), el('strong', 'mono', n.id));
      if (isLeader) name.appendChild(el('span', 'badge-leader', 'LEADER'));
      if (n.id === data.served_by) name.appendChild(el('span', 'sub', ' (this page)'));
      cell(tr, name);
      var roles = el('span');
      n.roles.forEach(function (r) { roles.appendChild(el('span', 'chip', r)); });
      cell(tr, roles);
      var status = el('span');
      if (s) add(status, el('span', 'dot dot-ok'), document.createTextNode('up'));
      else add(status, el('span', n.reachable ? 'dot dot-warn' : 'dot dot-bad'), el('span', 'err', n.reachable ? 'error' : 'unreachable'));
      if (!s && n.error) {
        var why = el('span', 'why', n.error);
        why.title = n.error;
        status.appendChild(why);
      }
      cell(tr, status);
      cell(tr, raft ? el('span', 'state-' + raft.state, raft.state) : (s ? '\\u2014' : ''));
      cell(tr, raft ? fmt(raft.term) : '', 'num');
      cell(tr, raft ? fmt(raft.commit_index) : '', 'num');
      cell(tr, raft ? fmt(raft.last_applied) : '', 'num');
      cell(tr, s && s.queues ? (s.queues.error ? 'Redis error' : fmt(s.queues.total)) : '', 'num');
      cell(tr, s && s.cache ? fmt(s.cache.size) + ' / ' + fmt(s.cache.capacity) : '', 'num');
      t.body.appendChild(tr);
    });
    $('nodes').replaceChildren(t.table);
    $('nodes-sub').textContent = data.nodes.length + ' in CLUSTER_ADDRS';
  }

  function renderLocks(data) {
    var box = $('locks');
    var sub = $('locks-sub');
    var view = data.lock_view && data.nodes.filter(function (n) { return n.id === data.lock_view; })[0];
    var locks = view && view.snapshot && view.snapshot.locks;
    if (!locks) {
      sub.textContent = '';
      var hasLock = data.nodes.some(function (n) { return n.roles.indexOf('lock') >= 0; });
      box.replaceChildren(empty(hasLock ? 'No lock node answered.' : 'No node runs the lock role.'));
      return;
    }
    sub.textContent = 'view of ' + locks.view_of + (locks.leader ? ' (leader)' : ' (follower, may lag)') +
      ' \\u00b7 applied index ' + fmt(locks.applied_index) + ' \\u00b7 ' + fmt(locks.total) +
      (locks.total === 1 ? ' resource' : ' resources');
    if (locks.resources.length === 0) { box.replaceChildren(empty('No locks held.')); return; }
    var t = table(['Resource', 'Mode', 'Holders', 'Waiters (FIFO)']);
    locks.resources.forEach(function (r) {
      var tr = el('tr');
      tr.setAttribute('data-resource', r.resource);
      var res = el('span', 'res mono', r.resource);
      res.title = r.resource;
      cell(tr, res);
      cell(tr, r.mode ? modeTag(r.mode) : el('span', 'sub', 'free'));
      var holders = el('div');
      if (r.holders.length === 0) holders.appendChild(el('span', 'sub', 'none'));
      r.holders.forEach(function (h) {
        add(holders, add(el('div', 'hold'), el('strong', 'mono', h.client_id),
          el('span', 'token', 'token ' + h.fencing_token), ttlSpan(h.expires_at)));
      });
      cell(tr, holders);
      if (r.waiters.length === 0) cell(tr, el('span', 'sub', '\\u2014'));
      else {
        var ol = el('ol', 'waiters');
        r.waiters.forEach(function (w) { add(ol, add(el('li'), el('span', 'mono', w.client_id), document.createTextNode(' '), modeTag(w.mode))); });
        cell(tr, ol);
      }
      t.body.appendChild(tr);
    });
    box.replaceChildren(t.table);
    if (locks.omitted > 0) box.appendChild(el('div', 'note', '+ ' + fmt(locks.omitted) + ' more resources not shown'));
  }

  function renderQueues(data) {
    var rows = [];
    var notes = [];
    var omitted = 0;
    var any = false;
    data.nodes.forEach(function (n) {
      var q = n.snapshot && n.snapshot.queues;
      if (n.roles.indexOf('queue') >= 0) any = true;
      if (!q) { if (n.roles.indexOf('queue') >= 0 && !n.snapshot) notes.push(n.id + ': unreachable, its queues are not shown'); return; }
      if (q.error) notes.push(n.id + ': ' + q.error);
      omitted += q.omitted;
      q.queues.forEach(function (x) { rows.push({ queue: x.queue, owner: n.id, ready: x.ready, pending: x.pending, dead: x.dead }); });
    });
    rows.sort(function (a, b) { return a.queue < b.queue ? -1 : a.queue > b.queue ? 1 : 0; });
    var box = $('queues');
    $('queues-sub').textContent = any ? rows.length + omitted + (rows.length + omitted === 1 ? ' queue' : ' queues') : '';
    if (!any) box.replaceChildren(empty('No node runs the queue role.'));
    else if (rows.length === 0) box.replaceChildren(empty('No queues yet.'));
    else {
      var t = table(['Queue', 'Owner', 'Ready', 'Pending', 'Dead'], [2, 3, 4]);
      rows.forEach(function (r) {
        var tr = el('tr');
        tr.setAttribute('data-queue', r.queue);
        var qn = el('span', 'res mono', r.queue);
      qn.title = r.queue;
      cell(tr, qn);
        cell(tr, el('span', 'mono', r.owner));
        cell(tr, fmt(r.ready), 'num');
        cell(tr, fmt(r.pending), 'num');
        cell(tr, fmt(r.dead), 'num' + (r.dead > 0 ? ' dead' : ''));
        t.body.appendChild(tr);
      });
      box.replaceChildren(t.table);
    }
    if (omitted > 0) box.appendChild(el('div', 'note', '+ ' + fmt(omitted) + ' more queues not shown'));
    notes.forEach(function (m) { box.appendChild(el('div', 'note err', m)); });
  }

  function renderCache(data) {
    var box = $('cache');
    var panels = [];
    data.nodes.forEach(function (n) {
      if (n.roles.indexOf('cache') < 0) return;
      var panel = el('div', 'cache-node');
      panel.setAttribute('data-cache-node', n.id);
      panel.appendChild(el('h3', 'mono', n.id));
      var c = n.snapshot && n.snapshot.cache;
      if (!c) { panel.appendChild(el('div', 'empty err', n.snapshot ? 'no cache data' : 'unreachable')); panels.push(panel); return; }
      panel.appendChild(el('span', 'sub', fmt(c.size) + ' / ' + fmt(c.capacity) + ' lines \\u00b7 ' + c.write_policy +
        ' \\u00b7 M ' + c.counts.M + ' \\u00b7 E ' + c.counts.E + ' \\u00b7 S ' + c.counts.S));
      if (c.lines.length === 0) panel.appendChild(empty('L1 empty'));
      c.lines.forEach(function (l) {
        var row = el('div', 'line');
        row.setAttribute('data-key', l.key);
        var key = el('span', 'key mono', l.key);
        key.title = l.key;
        add(row, key, mesi(l.state));
        panel.appendChild(row);
      });
      if (c.omitted > 0) panel.appendChild(el('div', 'note', '+ ' + fmt(c.omitted) + ' less recently used lines not shown'));
      panels.push(panel);
    });
    if (panels.length === 0) box.replaceChildren(empty('No node runs the cache role.'));
    else box.replaceChildren.apply(box, panels);
  }

  function renderLegend() {
    var lg = $('legend');
    ['M', 'E', 'S', 'I'].forEach(function (s) { add(lg, add(el('span', 'item'), mesi(s), document.createTextNode(MESI_NAMES[s]))); });
  }

  function showBanner(text) {
    var b = $('banner');
    if (text === null) { b.hidden = true; b.textContent = ''; $('main').classList.remove('stale'); return; }
    b.textContent = text;
    b.hidden = false;
    $('main').classList.add('stale');
  }

  function render(data) {
    servedBy = data.served_by;
    renderHealth(data);
    renderNodes(data);
    renderLocks(data);
    renderQueues(data);
    renderCache(data);
  }

  function failed(why) {
    var who = servedBy ? 'node ' + servedBy : 'this node';
    var since = lastOkAt ? ' \\u2014 last update ' + Math.round((Date.now() - lastOkAt) / 1000) + ' s ago' : '';
    showBanner('Lost contact with ' + who + ': ' + why + since + '. Retrying every second\\u2026');
    var h = $('health');
    h.replaceChildren(pill('bad', 'Dashboard offline'));
  }

  function poll() {
    var ctrl = new AbortController();
    var timer = setTimeout(function () { ctrl.abort(); }, TIMEOUT_MS);
    var headers = { accept: 'application/json' };
    var t = token();
    if (t) headers.authorization = 'Bearer ' + t;
    fetch('dashboard/api/cluster', { headers: headers, signal: ctrl.signal, cache: 'no-store' })
      .then(function (res) {
        if (res.status === 401) { $('auth').hidden = false; throw new Error('401 unauthorized: an API token is needed'); }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(function (data) {
        clockOffset = data.time - Date.now();
        lastOkAt = Date.now();
        $('auth').hidden = true;
        showBanner(null);
        render(data);
      })
      .catch(function (e) {
        failed(e && e.name === 'AbortError' ? 'no answer within ' + TIMEOUT_MS / 1000 + ' s' : (e && e.message) || String(e));
      })
      .then(function () {
        clearTimeout(timer);
        setTimeout(poll, POLL_MS);
      });
  }

  function start() {
    renderLegend();
    $('auth').addEventListener('submit', function (ev) {
      ev.preventDefault();
      try { sessionStorage.setItem(TOKEN_KEY, $('token').value); } catch (e) { /* private mode */ }
      $('token').value = '';
    });
    setInterval(tick, 250);
    poll();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
`;
