// valet's build page, live: follows /api/builds/{id}/events (server-sent events) while the
// build runs, then reads its final state from /api/builds/{id}. The page was rendered on
// the server up to event `data-next-event`; events before it are skipped, so a resumed
// or replayed stream neither repeats nor misses anything. Text goes in as text nodes only.
(function () {
  'use strict';
  // Set once per document: a test tells an in-place update from a reload by it.
  if (!window.__valetLoadId) {
    window.__valetLoadId = Date.now() + '-' + Math.random().toString(36).slice(2);
  }

  var RESULTS = {
    SUCCESS: 'success', UNSTABLE: 'unstable', FAILURE: 'failure',
    ABORTED: 'aborted', NOT_BUILT: 'not-run', ERROR: 'error'
  };

  function token(result, skipped, buildResult) {
    if (skipped) return 'not-run';
    if (result) return RESULTS[result] || 'error';
    if (buildResult === undefined || buildResult === null) return 'running';
    return buildResult === 'ERROR' ? 'error' : 'aborted';
  }

  // The same as `duration` in ui.rs.
  function fmtDuration(ms) {
    ms = Math.max(0, ms);
    function two(n) { return (n < 10 ? '0' : '') + n; }
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    if (ms < 3600000) return Math.floor(ms / 60000) + 'm ' + two(Math.floor(ms / 1000) % 60) + 's';
    return Math.floor(ms / 3600000) + 'h ' + two(Math.floor(ms / 60000) % 60) + 'm';
  }

  // The sign-in form (shown instead of a page when the controller wants a token): the
  // token goes to /api/session as JSON and comes back as an HttpOnly cookie.
  function signIn() {
    var form = document.getElementById('sign-in');
    if (!form) return;
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var msg = document.getElementById('sign-in-error');
      fetch('/api/session', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        credentials: 'same-origin',
        body: JSON.stringify({ token: form.elements.token.value })
      }).then(function (r) {
        if (r.ok) { window.location.reload(); return; }
        return r.json().then(function (j) { msg.textContent = j.error || ('HTTP ' + r.status); });
      }).catch(function (e) { msg.textContent = String(e); });
    });
  }

  function init() {
    signIn();
    var main = document.getElementById('build');
    if (!main) return;
    var id = main.dataset.build;
    var next = parseInt(main.dataset.nextEvent, 10) || 0;
    var done = main.dataset.status === 'finished';
    var table = document.getElementById('stages');
    var logEl = document.getElementById('log');
    var live = document.getElementById('live');
    var es = null;
    var retry = 500;

    function setResult(tok) {
      var b = document.getElementById('build-result');
      b.className = 'badge r-' + tok;
      b.dataset.result = tok;
      b.textContent = tok;
    }

    function headRow() { return table.tHead.rows[0]; }

    function column(stage) {
      var cells = headRow().cells;
      for (var i = 1; i < cells.length; i++) {
        if (cells[i].dataset.col === stage) return i;
      }
      var th = document.createElement('th');
      th.dataset.col = stage;
      th.textContent = stage;
      headRow().appendChild(th);
      var rows = table.tBodies[0].rows;
      for (var r = 0; r < rows.length; r++) rows[r].appendChild(emptyCell());
      document.getElementById('no-stages').hidden = true;
      return cells.length - 1;
    }

    function emptyCell() {
      var td = document.createElement('td');
      td.className = 'none';
      return td;
    }

    function row(job) {
      var rows = table.tBodies[0].rows;
      for (var i = 0; i < rows.length; i++) {
        if (rows[i].dataset.job === job) return rows[i];
      }
      var tr = document.createElement('tr');
      tr.dataset.job = job;
      var th = document.createElement('th');
      th.textContent = job === '' ? '\u2014' : job;
      tr.appendChild(th);
      for (var c = 1; c < headRow().cells.length; c++) tr.appendChild(emptyCell());
      table.tBodies[0].appendChild(tr);
      return tr;
    }

    // One stage cell: created where missing, its result and duration set.
    function cell(stage, job, tok, startedMs, durationMs) {
      var c = column(stage);
      var tr = row(job);
      var td = tr.cells[c];
      if (td.className === 'none') {
        td.innerHTML = '';
        var res = document.createElement('span');
        res.className = 'res';
        var dur = document.createElement('span');
        dur.className = 'dur';
        td.appendChild(res);
        td.appendChild(document.createTextNode(' '));
        td.appendChild(dur);
        td.dataset.stage = stage;
        td.dataset.job = job;
      }
      td.className = 'cell r-' + tok;
      td.dataset.result = tok;
      if (startedMs !== undefined && startedMs !== null) td.dataset.startedMs = String(startedMs);
      td.querySelector('.res').textContent = tok;
      var text = '';
      if (durationMs !== undefined && durationMs !== null) text = fmtDuration(durationMs);
      else if (tok === 'running' && td.dataset.startedMs) text = fmtDuration(Date.now() - td.dataset.startedMs);
      td.querySelector('.dur').textContent = text;
    }

    var pending = 0;
    function appendLog(text) {
      if (!text) return;
      var follow = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - 8;
      logEl.appendChild(document.createTextNode(text));
      if (++pending > 500) { logEl.normalize(); pending = 0; }
      if (follow) logEl.scrollTop = logEl.scrollHeight;
    }

    function stageKey(ev) {
      return ev.path && ev.path.length ? ev.path.join(' / ') : ev.name;
    }

    function apply(ev) {
      switch (ev.event) {
        case 'stage_started':
          cell(stageKey(ev), ev.job || '', 'running', Date.now(), null);
          break;
        case 'stage_finished':
          cell(stageKey(ev), ev.job || '', token(ev.result, ev.skipped), null, ev.duration_ms);
          break;
        case 'output':
          appendLog(ev.text);
          break;
        case 'notice':
          appendLog('[' + ev.message + ']\n');
          break;
        case 'build_status':
          if (ev.status === 'running') {
            main.dataset.status = 'running';
            if (!main.dataset.startedMs) main.dataset.startedMs = String(Date.now());
            setResult('running');
          } else if (ev.status === 'finished') {
            finish();
          }
          break;
      }
    }

    function tick() {
      if (done) return;
      var now = Date.now();
      var cells = table.querySelectorAll('td[data-result="running"]');
      for (var i = 0; i < cells.length; i++) {
        var s = cells[i].dataset.startedMs;
        if (s) cells[i].querySelector('.dur').textContent = fmtDuration(now - s);
      }
      if (main.dataset.startedMs && main.dataset.status === 'running') {
        document.getElementById('build-duration').textContent = fmtDuration(now - main.dataset.startedMs);
      }
    }

    // The final state, from the API. The end event can come just before the store has the
    // result: ask again until it does.
    function finish() {
      if (done) return;
      done = true;
      if (es) { es.close(); es = null; }
      live.textContent = '';
      var tries = 0;
      (function load() {
        fetch('/api/builds/' + id, { cache: 'no-store' })
          .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)); })
          .then(function (d) {
            if (!d.result && ++tries < 50) { setTimeout(load, 100); return; }
            showFinal(d);
          })
          .catch(function () { if (++tries < 50) setTimeout(load, 500); });
      })();
    }

    function showFinal(d) {
      main.dataset.status = 'finished';
      for (var i = 0; i < d.stages.length; i++) {
        var s = d.stages[i];
        var key = s.path && s.path.length ? s.path.join(' / ') : s.name;
        cell(key, s.job || '', token(s.result, s.skipped, d.result), s.started_ms, s.duration_ms);
      }
      // Cells the store has no row for (or none newer) and still running: they never ended.
      var left = table.querySelectorAll('td[data-result="running"]');
      for (var j = 0; j < left.length; j++) {
        var t = token(null, false, d.result);
        left[j].className = 'cell r-' + t;
        left[j].dataset.result = t;
        left[j].querySelector('.res').textContent = t;
      }
      setResult(token(d.result, false, 'ERROR'));
      if (d.duration_ms !== null && d.duration_ms !== undefined) {
        document.getElementById('build-duration').textContent = fmtDuration(d.duration_ms);
      }
      var reason = document.getElementById('build-reason');
      if (d.reason) { reason.textContent = d.reason; reason.hidden = false; }
      main.dataset.final = 'true';
    }

    function connect() {
      if (done) return;
      es = new EventSource('/api/builds/' + id + '/events');
      es.onopen = function () { retry = 500; live.textContent = 'live'; };
      es.onmessage = function (m) {
        var i = parseInt(m.lastEventId, 10);
        if (!(i >= next)) return;
        next = i + 1;
        var ev;
        try { ev = JSON.parse(m.data); } catch (e) { return; }
        apply(ev);
      };
      es.onerror = function () {
        if (done) return;
        live.textContent = 'reconnecting\u2026';
        // CONNECTING: the browser retries on its own, resuming after the last event id.
        // CLOSED: it gave up; start again (events before `next` are skipped).
        if (es.readyState === EventSource.CLOSED) {
          es = null;
          setTimeout(connect, retry);
          retry = Math.min(retry * 2, 10000);
        }
      };
    }

    if (!done) {
      connect();
      setInterval(tick, 1000);
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
