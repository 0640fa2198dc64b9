// The operator's dashboard, a single page: subscribe to /dashboard/stream,
// load the /api/state snapshot, replay the buffered events newer than the
// snapshot's seq, then apply every event as it comes. Nothing polls the
// server once loaded; a one-second local tick only redraws clocks.
//
// Every piece of text that came from an agent, a message or a diff is put
// in the page with textContent or as a text node, never parsed as HTML.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const store = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem(key);
        return v === null ? fallback : v;
      } catch (e) {
        return fallback;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(key, value);
      } catch (e) {
        /* private mode: not sticky, still works */
      }
    },
  };

  function countLoad() {
    try {
      const n = Number(sessionStorage.getItem('hive.loads') || '0') + 1;
      sessionStorage.setItem('hive.loads', String(n));
      return n;
    } catch (e) {
      return 1;
    }
  }

  // Resolved approvals kept (the snapshot sends as many).
  const HISTORY_MAX = 200;

  const S = {
    seq: 0,
    ready: false,
    runtime: null,
    agents: new Map(), // name -> status row
    transients: new Map(), // name -> {kind, since}
    turns: new Map(), // name -> what its harness last reported (turn_state_changed)
    lastActions: new Map(), // name -> last lifecycle action and result
    tombstones: [],
    approvals: new Map(), // id -> pending approval
    history: [], // resolved approvals, newest first
    questions: new Map(), // id -> pending question
    inbox: [], // messages to the operator, newest first
    msgIds: new Set(), // message ids in the flow
  };
  // For tests and the curious: state, load count, readiness.
  const hive = (window.__hive = { loads: countLoad(), ready: false, events: 0, state: S });

  // ---- DOM helpers: text only, never HTML --------------------------------

  const { h, now, dur, secs, ago, clock, agoEl } = window.HivePage;
  const badge = (text, colour, title) => h('span', { class: 'badge ' + colour, text, title });
  const chip = (text, title) => h('span', { class: 'chip', text, title });
  // Only http(s) links are ever made clickable.
  const safeUrl = (u) => typeof u === 'string' && /^https?:\/\/[^\s]+$/.test(u);

  // ---- clocks --------------------------------------------------------------

  function size(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : String(n)) + ' ' + units[i];
  }
  function sinceText(el) {
    return el.dataset.label + '\u2026 ' + dur(now() - Number(el.dataset.since));
  }
  function deadlineText(el) {
    const left = Number(el.dataset.deadline) - now();
    el.classList.toggle('low', left < 60);
    return left > 0 ? 'ttl ' + dur(left) : 'expiring';
  }
  function tick() {
    window.HivePage.tick();
    for (const el of document.querySelectorAll('[data-since]')) el.textContent = sinceText(el);
    for (const el of document.querySelectorAll('[data-deadline]')) el.textContent = deadlineText(el);
  }
  function transientEl(t) {
    const el = h('span', { class: 'transient', data: { since: t.since, label: t.kind } });
    el.textContent = sinceText(el);
    return el;
  }

  // ---- banners, requests ---------------------------------------------------

  function banner(what, message, kind) {
    const root = $('banners');
    const el = window.HivePage.banner(what, message, kind);
    root.append(el);
    while (root.childElementCount > 6) root.firstElementChild.remove();
    return el;
  }

  async function post(path, body) {
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body || {}),
      credentials: 'same-origin',
    });
    let j = null;
    try {
      j = await r.json();
    } catch (e) {
      /* not JSON: report the status */
    }
    if (!r.ok || !j || j.ok === false) throw new Error((j && j.error) || r.status + ' ' + r.statusText);
    return j;
  }

  // Shared with board.js.
  hive.post = post;

  // POSTs for a button: busy while in flight, a banner if it fails. The
  // page itself changes only through the events the action causes.
  async function act(btn, what, path, body) {
    if (btn) {
      btn.disabled = true;
      btn.classList.add('busy');
    }
    try {
      return await post(path, body);
    } catch (e) {
      banner(what + ' failed', e.message);
      return null;
    } finally {
      if (btn) {
        btn.disabled = false;
        btn.classList.remove('busy');
      }
    }
  }

  // ---- keyed lists ---------------------------------------------------------

  // Makes `root`'s children the rendering of `items`, in order, keeping
  // (not re-rendering) any element whose signature did not change, so open
  // viewers, typed answers and ticked boxes survive updates.
  function syncKeyed(root, items, keyOf, sigOf, render, emptyText) {
    const existing = new Map();
    for (const el of [...root.children]) {
      if (el.dataset.key !== undefined) existing.set(el.dataset.key, el);
      else el.remove();
    }
    const keep = new Set();
    let prev = null;
    for (const item of items) {
      const key = String(keyOf(item));
      const sig = sigOf(item);
      let el = existing.get(key);
      if (!el || el.dataset.sig !== sig) {
        const fresh = render(item);
        fresh.dataset.key = key;
        fresh.dataset.sig = sig;
        if (el) el.replaceWith(fresh);
        el = fresh;
      }
      keep.add(key);
      const want = prev ? prev.nextElementSibling : root.firstElementChild;
      if (want !== el) root.insertBefore(el, want);
      prev = el;
    }
    for (const [key, el] of existing) if (!keep.has(key)) el.remove();
    if (!items.length && emptyText) root.append(h('div', { class: 'empty', text: emptyText }));
  }

  // ---- containers ----------------------------------------------------------

  const viewers = new Map(); // "logs:name" / "config:name" -> {open, data}

  function viewer(name, kind) {
    const key = kind + ':' + name;
    const st = viewers.get(key) || { open: false, data: null };
    viewers.set(key, st);
    const status = h('span', { class: 'muted' });
    const box = h('div');
    const term = kind === 'logs' ? window.HiveTerminal.create(box, { title: 'logs \u00B7 ' + name, max: 10000 }) : null;
    const pre = kind === 'config' ? h('pre', { class: 'code' }) : null;
    const refresh = h('button', { type: 'button', text: '\u21BB refresh', onclick: () => load() });
    const d = h(
      'details',
      { class: 'viewer ' + kind, data: { viewer: kind } },
      h('summary', { text: kind === 'logs' ? '\u21B3 logs' : '\u21B3 deployed config' }),
      h('div', { class: 'viewer-bar' }, refresh, status),
      term ? box : pre
    );
    function show() {
      if (!st.data) return;
      if (term) {
        term.setLines(st.data.lines.length ? st.data.lines : ['(no output yet)']);
      } else {
        pre.replaceChildren(
          h('span', { class: 'label', text: '# agent.toml @ ' + String(st.data.sha || '').slice(0, 12) }),
          document.createTextNode(st.data.agent_toml),
          h('span', { class: 'label', text: '# prompt' }),
          document.createTextNode(st.data.prompt)
        );
      }
    }
    async function load() {
      status.textContent = 'loading\u2026';
      try {
        const path = kind === 'logs' ? '/api/logs/' + encodeURIComponent(name) + '?lines=500' : '/api/config/' + encodeURIComponent(name);
        const r = await fetch(path, { cache: 'no-store' });
        const j = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error(j.error || r.status + ' ' + r.statusText);
        st.data = j;
        status.textContent = 'fetched ' + clock(now());
        show();
      } catch (e) {
        status.textContent = e.message;
      }
    }
    d.addEventListener('toggle', () => {
      st.open = d.open;
      if (d.open && !st.data) load();
    });
    if (st.open) {
      d.open = true;
      show();
    }
    return d;
  }

  async function lifecycle(btn, name, verb, question) {
    if (question && !window.confirm(question)) return;
    await act(btn, verb + ' ' + name, '/api/agents/' + encodeURIComponent(name) + '/' + verb, {});
  }

  function containerRow(r) {
    const t = S.transients.get(r.name);
    if (r.pseudo) {
      return h(
        'div',
        { class: 'item pending-spawn busy', data: { name: r.name } },
        h('div', { class: 'line1' }, h('span', { class: 'name', text: r.name }), transientEl(t))
      );
    }
    const manager = r.name === 'manager';
    const badges = [];
    if (manager) badges.push(badge('manager', 'mauve'));
    if (r.failed) badges.push(badge('failed', 'red', 'the container exited on its own'));
    else if (r.running) badges.push(badge('running', 'green'));
    else badges.push(badge('stopped', 'grey'));
    if (r.needs_login) badges.push(badge('needs login', 'yellow', 'the engine has no credentials: open its page to log in'));
    if (r.needs_update) badges.push(badge('needs update', 'peach', 'a rebuild would apply a newer config or binary'));
    if (r.paused) badges.push(badge('paused', 'blue', 'the harness holds between turns'));
    badges.push(turnBadge(r));
    const chips = [];
    if (r.deployed_sha) chips.push(chip('cfg ' + r.deployed_sha.slice(0, 12), 'deployed config commit ' + r.deployed_sha));
    if (r.active_model) chips.push(chip(r.active_model, 'active model'));
    if (r.pending_reminders) chips.push(chip(r.pending_reminders + (r.pending_reminders === 1 ? ' reminder' : ' reminders'), 'pending reminders'));
    if (r.parent) chips.push(chip('\u2196 ' + r.parent, 'parent'));
    // Under a runtime that schedules across hosts: where it runs, or where its state is pinned.
    if (r.node) chips.push(chip('node ' + r.node + (r.node_down ? ' (down)' : ''), r.node_down ? 'the swarm finds this host down' : r.running ? 'the host it runs on' : 'the host its state is pinned to'));
    // The agent's page, proxied by this very origin (the login cookie goes along).
    const link = safeUrl(r.url) ? h('a', { href: 'agent/' + encodeURIComponent(r.name) + '/', target: '_blank', rel: 'noopener noreferrer', class: 'web', text: 'web \u2197' }) : null;
    const busy = Boolean(t);
    const btn = (label, verb, cls, question) =>
      h('button', {
        type: 'button',
        class: cls || '',
        disabled: busy,
        text: label,
        data: { verb },
        onclick: (e) => lifecycle(e.currentTarget, r.name, verb, question),
      });
    const actions = h(
      'div',
      { class: 'actions' },
      r.running ? btn('stop', 'stop') : btn('start', 'start', 'primary'),
      btn('restart', 'restart'),
      btn('rebuild', 'rebuild'),
      r.paused ? btn('resume', 'resume') : btn('pause', 'pause'),
      manager ? null : btn('destroy', 'destroy', 'danger', 'Destroy ' + r.name + "'s container?\n\nIts state is kept and can be revived from kept state."),
      manager ? null : btn('purge', 'purge', 'danger', 'Purge ' + r.name + '?\n\nThis deletes its container, its state (notes, credentials) and its config history. There is no undo.')
    );
    return h(
      'div',
      { class: 'item container' + (busy ? ' busy' : '') + (r.failed ? ' failed' : ''), data: { name: r.name } },
      h('div', { class: 'line1' }, h('span', { class: 'name', text: r.name }), badges, busy ? transientEl(t) : null, chips, link),
      r.status_text ? h('div', { class: 'status-text', text: r.status_text, title: r.status_set_at ? 'set ' + ago(r.status_set_at) : null }) : null,
      lastActionEl(r.name),
      actions,
      viewer(r.name, 'logs'),
      viewer(r.name, 'config')
    );
  }

  function renderContainers() {
    // Agents with only kept state are listed under kept state instead.
    const kept = new Set(S.tombstones.map((t) => t.name));
    const rows = [...S.agents.values()].filter((r) => !kept.has(r.name)).sort((a, b) => (a.name === 'manager' ? -1 : b.name === 'manager' ? 1 : a.name.localeCompare(b.name)));
    for (const [name] of S.transients) if (!S.agents.has(name)) rows.push({ name, pseudo: true });
    syncKeyed(
      $('containers'),
      rows,
      (r) => r.name,
      // The turn badge is updated in place (refreshTurnBadge): it changes
      // at every tool call, and a re-render would move buttons under the cursor.
      (r) => JSON.stringify([r, S.transients.get(r.name) || null, S.lastActions.get(r.name) || null]),
      containerRow,
      'no agents yet'
    );
    const real = rows.filter((r) => !r.pseudo);
    const running = real.filter((r) => r.running).length;
    $('containers-count').textContent = '\u00B7 ' + running + '/' + real.length + ' running';
  }

  // ---- kept state ------------------------------------------------------------

  function tombstoneRow(t) {
    return h(
      'div',
      { class: 'item tombstone', data: { name: t.name } },
      h(
        'div',
        { class: 'line1' },
        h('span', { class: 'name', text: t.name }),
        t.volume ? chip(t.volume, 'kept on a node\u2019s volume: its size is not known here') : chip(size(t.state_bytes), 'state size'),
        t.modified_at ? h('span', { class: 'muted' }, 'touched ', agoEl(t.modified_at, 'muted')) : null,
        t.has_credentials ? badge('credentials kept', 'green', 'no new login needed after a revival') : null
      ),
      h(
        'div',
        { class: 'actions' },
        h('button', {
          type: 'button',
          class: 'primary',
          text: 'revive',
          title: 'queue a spawn approval with this name; the kept state is reused',
          onclick: (e) => act(e.currentTarget, 'revive ' + t.name, '/api/request-spawn', { name: t.name, description: 'revive kept state' }),
        }),
        h('button', {
          type: 'button',
          class: 'danger',
          text: 'purge',
          onclick: (e) =>
            lifecycle(e.currentTarget, t.name, 'purge', 'Purge the kept state of ' + t.name + '?\n\nIts notes, credentials and config history are deleted. There is no undo.'),
        })
      )
    );
  }

  function renderTombstones() {
    const list = [...S.tombstones].sort((a, b) => a.name.localeCompare(b.name));
    syncKeyed($('tombstones'), list, (t) => t.name, (t) => JSON.stringify(t), tombstoneRow, 'nothing kept');
    $('tombstones-count').textContent = list.length ? '\u00B7 ' + list.length : '';
  }

  // ---- questions ---------------------------------------------------------------

  function questionCard(q) {
    const group = 'q' + q.id;
    const options = (q.options || []).map((o) =>
      h('label', {}, h('input', { type: q.multi ? 'checkbox' : 'radio', name: group, value: o }), h('span', { text: o }))
    );
    const free = h('input', { class: 'free', type: 'text', placeholder: options.length ? 'or type your own\u2026' : 'your answer\u2026' });
    const answer = h('button', { type: 'submit', class: 'primary answer', text: 'answer' });
    const cancel = h('button', {
      type: 'button',
      class: 'danger cancel',
      text: 'cancel',
      onclick: (e) => {
        if (window.confirm('Cancel question #' + q.id + '?\n\n' + q.asker + ' is told it was cancelled.')) {
          act(e.currentTarget, 'cancel question #' + q.id, '/api/questions/' + q.id + '/cancel', {});
        }
      },
    });
    const form = h(
      'form',
      {
        onsubmit: (e) => {
          e.preventDefault();
          const picked = [...form.querySelectorAll('input:checked')].map((i) => i.value);
          const text = free.value.trim();
          const reply = picked.concat(text ? [text] : []).join(', ');
          if (!reply) {
            banner('answer #' + q.id, 'pick an option or type an answer');
            return;
          }
          act(answer, 'answer #' + q.id, '/api/questions/' + q.id + '/answer', { answer: reply });
        },
      },
      options.length ? h('div', { class: 'opts' }, options) : null,
      free,
      h('div', { class: 'actions' }, answer, cancel)
    );
    return h(
      'div',
      { class: 'item question', data: { id: q.id } },
      h(
        'div',
        { class: 'line1' },
        h('span', { class: 'name', text: q.asker }),
        h('span', { class: 'muted', text: '\u2192 ' + (q.target || 'operator') }),
        badge('#' + q.id, 'grey'),
        q.multi ? badge('pick any', 'blue') : null,
        agoEl(q.asked_at),
        q.deadline_at ? (() => {
          const el = h('span', { class: 'ttl', data: { deadline: secs(q.deadline_at) }, title: 'expires ' + new Date(secs(q.deadline_at) * 1000).toLocaleString() });
          el.textContent = deadlineText(el);
          return el;
        })() : null
      ),
      h('div', { class: 'q', text: q.question }),
      form
    );
  }

  function renderQuestions() {
    const all = [...S.questions.values()].sort((a, b) => a.id - b.id);
    const mine = all.filter((q) => !q.target || q.target === 'operator');
    const peer = all.filter((q) => q.target && q.target !== 'operator');
    syncKeyed($('questions'), mine, (q) => q.id, (q) => String(q.id), questionCard, 'no questions for you');
    syncKeyed($('peer-questions'), peer, (q) => q.id, (q) => String(q.id), questionCard, 'none');
    $('questions-count').textContent = mine.length ? '\u00B7 ' + mine.length : '';
    $('peer-questions-count').textContent = '\u00B7 ' + peer.length;
    $('questions-panel').classList.toggle('pulse', mine.length > 0);
  }

  // ---- activity: turn state and the last lifecycle action --------------------------

  const TURN_COLOUR = { idle: 'grey', thinking: 'mauve', tool: 'blue', compacting: 'blue', paused: 'blue', rate_limited: 'peach', needs_login: 'yellow', engine_missing: 'red' };
  const TURN_LABEL = { rate_limited: 'rate-limited', needs_login: 'needs login', engine_missing: 'engine missing' };
  const ACTION_DONE = { spawning: 'spawned', starting: 'started', stopping: 'stopped', restarting: 'restarted', rebuilding: 'rebuilt', destroying: 'destroyed', moving: 'moved' };
  const ACTION_VERB = { spawning: 'spawn', starting: 'start', stopping: 'stop', restarting: 'restart', rebuilding: 'rebuild', destroying: 'destroy', moving: 'move' };

  function applyActivity(snap) {
    S.turns = new Map((snap.turn_states || []).map((t) => [t.name, t]));
    S.lastActions = new Map((snap.last_actions || []).map((a) => [a.name, a]));
  }

  function applyActivityEvent(ev) {
    if (ev.kind === 'turn_state_changed') {
      S.turns.set(ev.name, ev);
      refreshTurnBadge(ev.name);
    } else {
      S.lastActions.set(ev.name, ev);
      mark('containers');
    }
  }

  // Swaps one row's turn badge for a fresh one, leaving the row alone.
  function refreshTurnBadge(name) {
    const row = [...$('containers').children].find((e) => e.dataset.name === name && e.classList.contains('container'));
    const r = S.agents.get(name);
    if (!row || !r) return;
    const old = row.querySelector('.line1 > .badge.turn');
    const fresh = turnBadge(r);
    if (old && fresh) old.replaceWith(fresh);
    else if (old) old.remove();
    else if (fresh) {
      const line = row.querySelector('.line1');
      line.insertBefore(fresh, line.querySelector(':scope > .transient, :scope > .chip, :scope > a.web'));
    }
  }

  // What a running agent's harness is doing: idle, thinking, a tool (named),
  // rate-limited, needs login, ….
  function turnBadge(r) {
    const t = S.turns.get(r.name);
    if (!t || !r.running) return null;
    // The row's own badge says it already.
    if (t.state === 'needs_login' && r.needs_login) return null;
    if (t.state === 'paused' && r.paused) return null;
    const label = TURN_LABEL[t.state] || t.state;
    const text = t.state === 'tool' && t.note ? 'tool \u00b7 ' + t.note : label;
    const title = (t.note ? t.note + ' \u2014 ' : '') + 'since ' + new Date(t.since_unix * 1000).toLocaleTimeString();
    const el = h('span', { class: 'badge turn ' + (TURN_COLOUR[t.state] || 'grey'), text, title, data: { turn: t.state } });
    if (t.state === 'thinking' || t.state === 'tool' || t.state === 'compacting') el.classList.add('pulse');
    return el;
  }

  // The last lifecycle action and how it ended: a transient is often too
  // brief to see, its result is not.
  function lastActionEl(name) {
    const a = S.lastActions.get(name);
    if (!a) return null;
    const text = a.ok ? (ACTION_DONE[a.action] || a.action) + ' \u2713' : (ACTION_VERB[a.action] || a.action) + ' failed: ' + (a.error || 'no detail');
    return h('div', { class: 'last-action ' + (a.ok ? 'ok' : 'failed'), data: { action: a.action } }, h('span', { class: 'what', text }), ' ', agoEl(a.at_unix));
  }

  // ---- approvals -----------------------------------------------------------------

  const FILE_LINE = /^(diff --git |index |--- (a\/|\/dev\/null)|\+\+\+ (b\/|\/dev\/null)|new file mode|deleted file mode|similarity index|rename (from|to) )/;

  function renderDiff(text) {
    const pre = h('pre', { class: 'diff' });
    const lines = text.replace(/\n$/, '').split('\n');
    for (const line of lines) {
      let cls = 'ctx';
      if (FILE_LINE.test(line)) cls = 'file';
      else if (line.startsWith('@@')) cls = 'hunk';
      else if (line.startsWith('+')) cls = 'add';
      else if (line.startsWith('-')) cls = 'del';
      pre.append(h('span', { class: cls, text: line }));
    }
    return pre;
  }

  const KIND_LABEL = { spawn: 'spawn', apply_commit: 'config', init_config: 'init config', move: 'move' };

  function approvalCard(a) {
    let diff = null;
    if (a.kind === 'apply_commit') {
      if (a.diff_error) diff = h('div', { class: 'muted', text: 'diff unavailable: ' + a.diff_error });
      else if (typeof a.diff === 'string' && a.diff.length) diff = renderDiff(a.diff);
      else if (typeof a.diff === 'string') diff = h('div', { class: 'muted', text: 'no changes against the deployed config' });
    }
    const approve = h('button', {
      type: 'button',
      class: 'primary approve',
      text: '\u2713 approve',
      onclick: (e) => act(e.currentTarget, 'approve #' + a.id, '/api/approvals/' + a.id + '/approve', {}),
    });
    const deny = h('button', {
      type: 'button',
      class: 'danger deny',
      text: '\u2717 deny',
      onclick: (e) => {
        const note = window.prompt('Reason for denying #' + a.id + ' (optional, sent to the manager):', '');
        if (note === null) return;
        act(e.currentTarget, 'deny #' + a.id, '/api/approvals/' + a.id + '/deny', { note: note.trim() || null });
      },
    });
    return h(
      'div',
      { class: 'item approval', data: { id: a.id } },
      h(
        'div',
        { class: 'line1' },
        badge(KIND_LABEL[a.kind] || a.kind, a.kind === 'spawn' ? 'green' : 'mauve'),
        h('span', { class: 'name', text: a.agent }),
        badge('#' + a.id, 'grey'),
        a.sha_short ? chip(a.sha_short, 'commit') : null,
        a.requested_at ? agoEl(a.requested_at) : null
      ),
      a.description ? h('div', { class: 'desc', text: a.description }) : null,
      diff,
      h('div', { class: 'actions' }, approve, deny)
    );
  }

  const GLYPH = { approved: '\u2713', denied: '\u2717', failed: '\u26A0', cancelled: '\u2298', superseded: '\u21B7' };

  function historyRow(a) {
    return h(
      'div',
      { class: 'history-row', data: { id: a.id } },
      h('span', { class: 'glyph ' + a.status, text: GLYPH[a.status] || '?' }),
      h('span', { class: 'muted', text: '#' + a.id }),
      h('span', { class: 'name', text: a.agent }),
      chip(KIND_LABEL[a.kind] || a.kind),
      a.sha_short ? chip(a.sha_short) : null,
      h('span', { class: 'hstatus ' + a.status, text: a.status }),
      a.resolved_at ? agoEl(a.resolved_at, 'muted hage') : null,
      a.note ? h('div', { class: 'note', text: a.note }) : null
    );
  }

  function renderApprovals() {
    const pending = [...S.approvals.values()].sort((a, b) => a.id - b.id);
    syncKeyed($('approvals'), pending, (a) => a.id, (a) => String(a.id), approvalCard, 'nothing waits for approval');
    syncKeyed($('approval-history'), S.history, (a) => a.id, (a) => JSON.stringify(a), historyRow, 'no decisions yet');
    $('approvals-count').textContent = String(pending.length);
    $('history-count').textContent = String(S.history.length);
  }

  function setTab(tab) {
    store.set('hive.approvals.tab', tab);
    for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.tab === tab);
    for (const p of document.querySelectorAll('[data-pane]')) p.hidden = p.dataset.pane !== tab;
  }

  function normApproval(a) {
    return {
      id: a.id,
      agent: a.agent,
      kind: a.approval_kind || a.kind,
      // A move's commit_ref is its node, not a sha (its description names it).
      sha_short: a.sha_short || (a.commit_ref && (a.approval_kind || a.kind) !== 'move' ? a.commit_ref.slice(0, 12) : null),
      diff: a.diff,
      diff_error: a.diff_error,
      description: a.description,
      requested_at: a.requested_at,
      status: a.status,
      resolved_at: a.resolved_at,
      note: a.note,
    };
  }

  // ---- messages ------------------------------------------------------------------

  let flow = null;
  const msgNodes = new Map(); // id -> line in the flow

  // A helper event from `system` (a JSON body with `event`), as one
  // sentence (text.js): `approval #3 (scout) was approved`.
  const describeEvent = (body) => window.HiveText.eventSentence(body);

  function addMessage(m, animate) {
    if (S.msgIds.has(m.id)) return;
    S.msgIds.add(m.id);
    const event = m.from === 'system' ? describeEvent(m.body) : null;
    const line = h(
      'div',
      { class: 'msg from-' + (m.from === 'operator' || m.from === 'system' ? m.from : 'agent'), data: { id: m.id } },
      h('span', { class: 't', text: clock(m.at) + ' ' }),
      h('span', { class: 'from', text: m.from }),
      h('span', { class: 'arrow', text: ' \u2192 ' }),
      h('span', { class: 'to', text: m.to }),
      h('span', { class: 'arrow', text: '  ' }),
      event ? h('span', { class: 'body event', text: event, title: m.body }) : h('span', { class: 'body', text: m.body })
    );
    msgNodes.set(m.id, line);
    if (msgNodes.size > 3000) {
      for (const [id, node] of msgNodes) {
        if (!node.isConnected) msgNodes.delete(id);
      }
    }
    flow.append(line, null, animate);
    if (animate) flow.flash(4000);
  }

  function markDelivered(id) {
    const line = msgNodes.get(id);
    if (line && !line.querySelector('.ok')) line.append(h('span', { class: 'ok', title: 'delivered', text: '\u2713' }));
  }

  function inboxRow(m) {
    const replyable = m.from !== 'system' && m.from !== 'operator';
    return h(
      'div',
      { class: 'item', data: { id: m.id } },
      h(
        'div',
        { class: 'line1' },
        h('span', { class: 'name', text: m.from }),
        agoEl(m.at),
        replyable
          ? h('button', {
              type: 'button',
              class: 'ghost',
              text: '\u21A9 reply',
              onclick: () => {
                setRecipient(m.from);
                $('compose-body').focus();
              },
            })
          : null
      ),
      inboxBody(m)
    );
  }

  // An inbox message's body: a helper event as a sentence, anything else
  // as markdown built from text nodes (text.js).
  function inboxBody(m) {
    const sentence = m.from === 'system' ? window.HiveText.eventSentence(m.body) : null;
    if (sentence) return h('div', { class: 'body event', text: sentence, title: m.body });
    const body = window.HiveText.markdown(m.body);
    body.classList.add('body');
    return body;
  }

  function renderInbox() {
    syncKeyed($('inbox'), S.inbox, (m) => m.id, (m) => String(m.id), inboxRow, 'no messages for you');
    $('inbox-count').textContent = S.inbox.length ? '\u00B7 ' + S.inbox.length : '';
  }

  // ---- compose with @-completion -------------------------------------------------

  const compose = { to: store.get('hive.compose.to', ''), matches: [], active: 0 };

  function setRecipient(to) {
    compose.to = to;
    store.set('hive.compose.to', to);
    $('compose-to').textContent = '@' + (to || '?') + '>';
  }

  function candidates() {
    const names = [...S.agents.keys()].sort((a, b) => (a === 'manager' ? -1 : b === 'manager' ? 1 : a.localeCompare(b)));
    return names.map((n) => ({ name: n, hint: n === 'manager' ? 'manager' : '' })).concat([{ name: '*', hint: 'every agent' }]);
  }

  function hideComplete() {
    compose.matches = [];
    $('complete').hidden = true;
    $('complete').replaceChildren();
  }

  function showComplete(prefix) {
    const matches = candidates().filter((c) => c.name.startsWith(prefix));
    compose.matches = matches;
    compose.active = 0;
    const list = $('complete');
    if (!matches.length) {
      hideComplete();
      return;
    }
    list.replaceChildren(
      ...matches.map((c, i) =>
        h(
          'li',
          {
            role: 'option',
            class: i === 0 ? 'active' : '',
            data: { name: c.name },
            // mousedown, not click: the textarea keeps its focus.
            onmousedown: (e) => {
              e.preventDefault();
              choose(c.name);
            },
          },
          '@' + c.name,
          c.hint ? h('span', { class: 'hint', text: c.hint }) : null
        )
      )
    );
    list.hidden = false;
  }

  function moveActive(delta) {
    const n = compose.matches.length;
    if (!n) return;
    compose.active = (compose.active + delta + n) % n;
    [...$('complete').children].forEach((li, i) => li.classList.toggle('active', i === compose.active));
  }

  // Takes the completed name as the (sticky) recipient and drops the
  // `@prefix` being typed from the text.
  function choose(name) {
    const ta = $('compose-body');
    const caret = ta.selectionStart;
    const rest = ta.value.slice(caret).replace(/^\S*\s?/, '');
    ta.value = rest;
    ta.setSelectionRange(0, 0);
    setRecipient(name);
    hideComplete();
  }

  function onComposeInput() {
    const ta = $('compose-body');
    const before = ta.value.slice(0, ta.selectionStart);
    const m = /^@([a-z0-9*-]*)$/.exec(before);
    if (m) showComplete(m[1]);
    else hideComplete();
  }

  async function sendCompose() {
    const ta = $('compose-body');
    let text = ta.value;
    let to = compose.to;
    const redirect = /^@(\S+)(?:\s+([\s\S]*))?$/.exec(text);
    if (redirect) {
      to = redirect[1];
      text = redirect[2] || '';
      setRecipient(to);
      if (!text.trim()) {
        ta.value = '';
        return;
      }
    }
    if (!to) {
      banner('send', 'pick a recipient: start with @name');
      return;
    }
    if (!text.trim()) return;
    const ok = await act($('compose-send'), 'send to ' + to, '/api/send', { to, body: text });
    if (ok) ta.value = '';
  }

  function setupCompose() {
    setRecipient(compose.to);
    const ta = $('compose-body');
    ta.addEventListener('input', onComposeInput);
    ta.addEventListener('blur', () => setTimeout(hideComplete, 100));
    ta.addEventListener('keydown', (e) => {
      const open = compose.matches.length > 0;
      if (open && (e.key === 'ArrowDown' || e.key === 'ArrowUp')) {
        e.preventDefault();
        moveActive(e.key === 'ArrowDown' ? 1 : -1);
      } else if (open && (e.key === 'Enter' || e.key === 'Tab')) {
        e.preventDefault();
        choose(compose.matches[compose.active].name);
      } else if (open && e.key === 'Escape') {
        e.preventDefault();
        hideComplete();
      } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        sendCompose();
      }
    });
    $('compose').addEventListener('submit', (e) => {
      e.preventDefault();
      sendCompose();
    });
  }

  // ---- notifications -------------------------------------------------------------

  const notes = { muted: store.get('hive.notify.muted', '0') === '1' };

  function notifySupported() {
    return 'Notification' in window && window.isSecureContext;
  }

  function renderNotifyControls() {
    const enable = $('notify-enable');
    const mute = $('notify-mute');
    const status = $('notify-status');
    if (!notifySupported()) {
      enable.hidden = mute.hidden = true;
      status.textContent = '';
      return;
    }
    const perm = Notification.permission;
    enable.hidden = perm !== 'default';
    mute.hidden = perm !== 'granted';
    mute.textContent = notes.muted ? 'notifications muted' : 'notifications on';
    mute.title = notes.muted ? 'notifications muted: click to unmute' : 'click to mute notifications';
    status.textContent = perm === 'denied' ? 'notifications blocked by the browser' : '';
  }

  function notify(tag, title, body) {
    if (!S.ready || notes.muted || !notifySupported() || Notification.permission !== 'granted') return;
    try {
      const n = new Notification(title, { body: String(body).slice(0, 240), tag });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch (e) {
      console.debug('notification not shown', e);
    }
  }

  function setupNotify() {
    $('notify-enable').addEventListener('click', async () => {
      try {
        await Notification.requestPermission();
      } catch (e) {
        console.debug('permission request failed', e);
      }
      renderNotifyControls();
    });
    $('notify-mute').addEventListener('click', () => {
      notes.muted = !notes.muted;
      store.set('hive.notify.muted', notes.muted ? '1' : '0');
      renderNotifyControls();
    });
    renderNotifyControls();
  }

  // ---- state ---------------------------------------------------------------------

  const dirty = new Set();
  let flushQueued = false;
  const RENDER = {
    containers: renderContainers,
    tombstones: renderTombstones,
    questions: renderQuestions,
    approvals: renderApprovals,
    inbox: renderInbox,
  };

  function mark(...sections) {
    for (const s of sections) dirty.add(s);
    if (!flushQueued) {
      flushQueued = true;
      setTimeout(flush, 0);
    }
  }

  function flush() {
    flushQueued = false;
    for (const s of dirty) RENDER[s]();
    dirty.clear();
    $('seq').textContent = 'seq ' + S.seq;
  }

  function applySnapshot(snap) {
    S.seq = snap.seq;
    S.runtime = snap.runtime || null;
    S.agents = new Map(snap.agents.map((a) => [a.name, a]));
    S.transients = new Map(snap.transients.map((t) => [t.name, { kind: t.transient_kind, since: t.since_unix }]));
    applyActivity(snap);
    S.tombstones = snap.tombstones;
    S.approvals = new Map(snap.approvals.map((a) => [a.id, normApproval(a)]));
    S.history = snap.approval_history.map(normApproval);
    S.questions = new Map(snap.questions.map((q) => [q.id, q]));
    S.inbox = snap.inbox;
    flow.clear();
    S.msgIds.clear();
    msgNodes.clear();
    for (const m of snap.messages) addMessage(m, false);
    if (window.HiveBoard) window.HiveBoard.snapshot(snap.tasks);
    $('runtime').textContent = 'runtime ' + (S.runtime || 'none');
    mark('containers', 'tombstones', 'questions', 'approvals', 'inbox');
  }

  function apply(ev) {
    S.seq = Math.max(S.seq, ev.seq);
    switch (ev.kind) {
      case 'sent':
        addMessage(ev, true);
        if (ev.to === 'operator' && !S.inbox.some((m) => m.id === ev.id)) {
          S.inbox = [{ id: ev.id, from: ev.from, body: ev.body, at: ev.at }].concat(S.inbox).slice(0, 100);
          notify('hyperhive:msg:' + ev.id, 'message from ' + ev.from, ev.body);
          mark('inbox');
        }
        break;
      case 'delivered':
        markDelivered(ev.id);
        break;
      case 'approval_added':
        S.approvals.set(ev.id, normApproval(Object.assign({ requested_at: now() }, ev)));
        notify('hyperhive:approval:' + ev.id, 'approval #' + ev.id + ': ' + (KIND_LABEL[ev.approval_kind] || ev.approval_kind) + ' ' + ev.agent, ev.description || '');
        mark('approvals');
        break;
      case 'approval_resolved': {
        S.approvals.delete(ev.id);
        const row = normApproval(ev);
        S.history = [row].concat(S.history.filter((a) => a.id !== ev.id)).slice(0, HISTORY_MAX);
        if (ev.status === 'failed') banner('approval #' + ev.id + ' failed', ev.note || 'no detail');
        mark('approvals');
        break;
      }
      case 'question_added':
        S.questions.set(ev.id, ev);
        if (!ev.target || ev.target === 'operator') notify('hyperhive:question:' + ev.id, 'question from ' + ev.asker, ev.question);
        mark('questions');
        break;
      case 'question_resolved':
        S.questions.delete(ev.id);
        mark('questions');
        break;
      case 'transient_set':
        S.transients.set(ev.name, { kind: ev.transient_kind, since: ev.since_unix });
        mark('containers');
        break;
      case 'transient_cleared':
        S.transients.delete(ev.name);
        mark('containers');
        break;
      case 'container_state_changed':
        S.agents.set(ev.container.name, ev.container);
        mark('containers');
        break;
      case 'container_removed':
        S.agents.delete(ev.name);
        mark('containers');
        break;
      case 'tombstones_changed':
        S.tombstones = ev.tombstones;
        mark('tombstones', 'containers');
        break;
      case 'turn_state_changed':
      case 'lifecycle_finished':
        applyActivityEvent(ev);
        break;
      case 'task_changed':
        // The board (board.js) keeps its own state.
        if (window.HiveBoard) window.HiveBoard.changed(ev.task);
        break;
      default:
        break;
    }
    mark();
  }

  // ---- the stream ----------------------------------------------------------------

  function setConn(state, text) {
    const el = $('conn');
    el.className = 'conn ' + state;
    el.textContent = text;
  }

  // The stream, then the snapshot (HivePage.live).
  function connect() {
    window.HivePage.live({
      url: '/dashboard/stream',
      snapshot: async () => {
        const r = await fetch('/api/state', { cache: 'no-store' });
        if (!r.ok) throw new Error('GET /api/state: ' + r.status);
        const snap = await r.json();
        applySnapshot(snap);
        return snap.seq;
      },
      apply,
      onEvent: () => (hive.events += 1),
      onState: (state, error) => {
        S.ready = hive.ready = state === 'live';
        if (state === 'live') setConn('live', 'live');
        else if (state === 'reconnecting') setConn('down', 'reconnecting\u2026');
        else if (state === 'closed') setConn('down', 'disconnected');
        else if (state === 'failed') {
          setConn('down', 'snapshot failed');
          banner('dashboard', 'could not load the state: ' + error.message);
        }
      },
    });
  }

  function start() {
    flow = window.HiveTerminal.create($('msgflow'), { title: 'broker \u00B7 every message through core', max: 1000 });
    const showSystem = $('show-system');
    const applySystem = () => {
      $('msgflow').classList.toggle('hide-system', !showSystem.checked);
      store.set('hive.flow.system', showSystem.checked ? '1' : '0');
    };
    showSystem.checked = store.get('hive.flow.system', '1') === '1';
    showSystem.addEventListener('change', applySystem);
    applySystem();
    for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => setTab(b.dataset.tab));
    setTab(store.get('hive.approvals.tab', 'pending'));
    $('spawn-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const name = $('spawn-name').value.trim();
      const description = $('spawn-description').value.trim();
      const ok = await act(e.submitter || null, 'request spawn of ' + name, '/api/request-spawn', { name, description: description || null });
      if (ok) {
        $('spawn-name').value = '';
        $('spawn-description').value = '';
      }
    });
    setupCompose();
    setupNotify();
    setInterval(tick, 1000);
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
