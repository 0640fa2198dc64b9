// One agent's page: the live terminal of its turns (history backfill from
// /events/history, then /events/stream, deduped by seq), the state row and
// its controls, the composer, the inbox, loose ends, turn stats and the
// login help. Every string from the agent, its peers or its tools becomes
// text nodes, or elements built by the shared markdown renderer (text.js): no
// HTML is ever parsed, and links are only ever http(s).
'use strict';
(function () {
  // ---------------------------------------------------------------------
  // DOM helpers.

  // The shared builder (page.js), in this page's short form.
  const { h, clock, agoEl } = window.HivePage;
  function el(tag, cls, text) {
    return h(tag, { class: cls || null, text });
  }
  function $(id) {
    return document.getElementById(id);
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const k in attrs) node.setAttribute(k, String(attrs[k]));
    return node;
  }
  function safeUrl(url) {
    return /^https?:\/\/[^\s]+$/i.test(url) ? url : null;
  }
  function fmtNum(n) {
    if (n === null || n === undefined || isNaN(n)) return '\u2013';
    if (n >= 1e6) return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + 'M';
    if (n >= 1e3) return (n / 1e3).toFixed(n >= 1e4 ? 0 : 1) + 'k';
    return String(Math.round(n));
  }
  function fmtUsd(n) {
    if (n === null || n === undefined) return '';
    return '$' + (n >= 1 ? n.toFixed(2) : n.toFixed(4));
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '\u2013';
    if (ms < 1000) return ms + 'ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + 's';
    return Math.floor(ms / 60000) + 'm' + Math.round((ms % 60000) / 1000) + 's';
  }
  // Markdown to DOM, text nodes only (text.js, shared with the dashboard).
  const markdown = (src) => window.HiveText.markdown(src);

  // ---------------------------------------------------------------------
  // Page state.

  const hive = (window.__hive = {
    ready: false,
    seen: 0,
    frames: 0,
    agent: '',
    markdown: markdown,
  });
  const S = {
    state: 'idle',
    turnRunning: false,
    model: '',
    tools: {}, // tool_use_id -> tool name
    lastTurn: null,
    turns: [],
    metric: 'cost',
  };

  let term = null;

  function banner(text, kind) {
    const b = $('banner');
    const made = window.HivePage.banner(null, text, kind || 'err', () => (b.hidden = true));
    b.replaceChildren(...made.childNodes);
    b.className = made.className;
    b.hidden = false;
  }

  async function getJson(url) {
    const r = await fetch(url, { headers: { accept: 'application/json' } });
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new Error((body && body.error) || r.status + ' ' + r.statusText);
    return body;
  }
  async function post(url, body) {
    const r = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body || {}),
    });
    const answer = await r.json().catch(() => null);
    if (!r.ok) throw new Error((answer && answer.error) || r.status + ' ' + r.statusText);
    return answer;
  }
  // Runs `fn` with `button` busy; failures go to the banner.
  async function act(button, fn) {
    if (button) {
      button.disabled = true;
      button.classList.add('busy');
    }
    try {
      return await fn();
    } catch (e) {
      banner(String(e.message || e));
    } finally {
      if (button) {
        button.classList.remove('busy');
        button.disabled = false;
        renderControls();
      }
    }
  }

  // ---------------------------------------------------------------------
  // The state row.

  const STATE_COLOURS = {
    idle: 'green',
    thinking: 'mauve',
    tool: 'blue',
    compacting: 'blue',
    paused: 'yellow',
    rate_limited: 'peach',
    needs_login: 'red',
    engine_missing: 'red',
    quota: 'peach',
    over_budget: 'red',
  };

  function setAlive(alive) {
    const b = $('alive');
    b.textContent = alive ? '\u25cf harness alive' : '\u25cb harness unreachable';
    b.className = 'badge ' + (alive ? 'green' : 'red');
    hive.alive = alive;
  }
  function setTurnState(state, note) {
    S.state = state;
    const b = $('turn-state');
    b.textContent = state.replace('_', ' ');
    b.className = 'badge ' + (STATE_COLOURS[state] || 'grey') + (state === 'thinking' || state === 'tool' || state === 'compacting' ? ' pulse' : '');
    b.title = note || '';
    b.dataset.state = state;
    document.body.dataset.state = state;
    renderControls();
    if (state === 'needs_login') showLogin();
    else $('login').hidden = true;
    $('engine-missing').hidden = state !== 'engine_missing';
    $('engine-missing-why').textContent = state === 'engine_missing' ? note || '' : '';
  }
  function setModel(model) {
    S.model = model;
    const input = $('model');
    if (document.activeElement !== input) input.value = model;
  }
  function ctxTokens(u) {
    return u ? u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens : 0;
  }
  // `cost`/`usd`: the last turn's own tokens and dollars (per turn);
  // `sessionUsd`: the CLI's running total for the session, shown apart.
  function setUsage(ctx, cost, usd, sessionUsd) {
    if (ctx && ctxTokens(ctx) > 0) {
      $('ctx').textContent = 'ctx \u00b7 ' + fmtNum(ctxTokens(ctx));
      $('ctx').dataset.value = String(ctxTokens(ctx));
    }
    if (cost) {
      const total = ctxTokens(cost) + cost.output_tokens;
      let text = 'turn cost \u00b7 ' + fmtNum(total) + ' tok';
      if (usd !== undefined && usd !== null) text += ' \u00b7 ' + fmtUsd(usd);
      $('cost').textContent = text;
      $('cost').dataset.value = String(total);
      $('cost').title =
        'the last turn alone: ' + cost.input_tokens + ' in, ' + cost.output_tokens + ' out, ' +
        cost.cache_read_input_tokens + ' cache read, ' + cost.cache_creation_input_tokens + ' cache write';
    }
    setSessionCost(sessionUsd);
  }
  // The session's running total (turn stats' `session_cost_usd`), when the
  // harness reports one.
  function setSessionCost(usd) {
    if (usd === undefined || usd === null) return;
    const chip = $('session-cost');
    chip.hidden = false;
    chip.textContent = 'session total \u00b7 ' + fmtUsd(usd);
    chip.dataset.value = String(usd);
  }
  function setLastTurn(record) {
    S.lastTurn = record;
    renderLastTurn();
  }
  function renderLastTurn() {
    const r = S.lastTurn;
    // The age is a `data-at` element: the page's clock tick keeps it current.
    if (r) $('last-turn').replaceChildren('last turn \u00b7 ', agoEl(r.ended_at, 'ago'), ' \u00b7 ' + fmtMs(r.duration_ms));
    else $('last-turn').textContent = 'last turn \u00b7 \u2013';
    if (r) $('last-turn').title = r.result_kind + ', ended ' + new Date(r.ended_at * 1000).toLocaleString();
  }
  function renderControls() {
    const busy = S.turnRunning || ['thinking', 'tool', 'compacting', 'rate_limited'].includes(S.state);
    const cancel = $('cancel');
    if (!cancel.classList.contains('busy')) cancel.disabled = !busy;
  }
  function applySnapshot(s) {
    hive.agent = s.agent;
    $('agent-name').textContent = s.agent;
    $('role').textContent = s.role;
    document.title = s.agent + ' \u00b7 hyperhive';
    S.turnRunning = s.turn_running;
    setModel(s.model);
    setTurnState(s.state, s.note);
    $('status-text').textContent = s.status_text || '';
    const last = s.last_turn;
    setUsage(s.ctx || (last && last.last_usage), s.cost || (last && last.usage), last && last.cost_usd, last && last.session_cost_usd);
    if (last) setLastTurn(last);
  }

  async function showLogin() {
    const panel = $('login');
    panel.hidden = false;
    try {
      const l = await getJson('api/login');
      $('login-missing').textContent = l.missing || 'the engine has no credentials';
      $('login-env').textContent = l.env.join(', ');
      $('login-file').textContent = l.credentials_file;
      if (window.HiveCodex) window.HiveCodex.login(l, $);
      $('login-flow').hidden = !l.interactive;
      if (l.interactive) await refreshLoginSession();
    } catch (e) {
      $('login-missing').textContent = String(e.message || e);
    }
  }

  // The engine's own login, driven over pipes by the harness: its output
  // is text (http(s) URLs become links built with DOM APIs), polled once a
  // second only while the login command runs.
  let loginPoll = null;
  function loginLine(line) {
    const row = document.createDocumentFragment();
    const re = /https?:\/\/[^\s<>"']+/gi;
    let last = 0;
    let m;
    while ((m = re.exec(line)) !== null) {
      if (m.index > last) row.appendChild(document.createTextNode(line.slice(last, m.index)));
      const url = safeUrl(m[0]);
      if (url) {
        const a = el('a', null, url);
        a.href = url;
        a.target = '_blank';
        a.rel = 'noopener noreferrer';
        row.appendChild(a);
      } else {
        row.appendChild(document.createTextNode(m[0]));
      }
      last = m.index + m[0].length;
    }
    if (last < line.length) row.appendChild(document.createTextNode(line.slice(last)));
    row.appendChild(document.createTextNode('\n'));
    return row;
  }
  function renderLoginSession(session) {
    const out = $('login-output');
    const running = !!(session && session.running);
    $('login-start').textContent = session ? 'restart login' : 'start login';
    $('login-cancel').hidden = !running;
    $('login-input-form').hidden = !running;
    let status = '';
    if (running) status = 'login running\u2026';
    else if (session && session.exit) {
      const e = session.exit;
      status = 'login exited ' + (e.code === null || e.code === undefined ? '(killed)' : 'with code ' + e.code) +
        (e.logged_in ? ' \u2014 credentials found' : ' \u2014 still no credentials');
    }
    $('login-status').textContent = status;
    out.hidden = !session;
    if (session) {
      const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      out.replaceChildren(...session.lines.map(loginLine));
      if (stick) out.scrollTop = out.scrollHeight;
    }
    if (running && loginPoll === null) loginPoll = setInterval(refreshLoginSession, 1000);
    if (!running && loginPoll !== null) {
      clearInterval(loginPoll);
      loginPoll = null;
    }
  }
  async function refreshLoginSession() {
    try {
      const r = await getJson('api/login/session');
      renderLoginSession(r.session);
    } catch (e) {
      $('login-status').textContent = String(e.message || e);
    }
  }

  // ---------------------------------------------------------------------
  // Terminal rows.

  const HIVE_TOOL = /^mcp__hive__(.*)$/;

  function rowHead(icon, label, cls) {
    const head = el('div', 'row-head ' + (cls || ''));
    head.appendChild(el('span', 'icon', icon));
    head.appendChild(el('span', 'label', label));
    return head;
  }
  function stamp(frame, row) {
    if (frame.at) row.title = new Date(frame.at * 1000).toLocaleString();
    row.dataset.seq = String(frame.seq);
    row.dataset.kind = frame.kind;
  }
  function details(summaryText, body, open, cls) {
    const d = el('details', cls);
    const s = el('summary', null, summaryText);
    d.appendChild(s);
    d.appendChild(body);
    if (open) d.open = true;
    return d;
  }
  function pre(text, cls) {
    return el('pre', cls, text);
  }
  function firstLine(text, max) {
    const line = String(text).split('\n').find((l) => l.trim() !== '') || '';
    return line.length > max ? line.slice(0, max) + '\u2026' : line;
  }

  function diff(oldText, newText) {
    const box = el('div', 'diff');
    const minus = oldText === undefined || oldText === null || oldText === '' ? [] : String(oldText).split('\n');
    const plus = newText === undefined || newText === null || newText === '' ? [] : String(newText).split('\n');
    const cap = 400;
    minus.slice(0, cap).forEach((l) => box.appendChild(el('div', 'del', '- ' + l)));
    if (minus.length > cap) box.appendChild(el('div', 'dim', '  \u2026 ' + (minus.length - cap) + ' more lines'));
    plus.slice(0, cap).forEach((l) => box.appendChild(el('div', 'add', '+ ' + l)));
    if (plus.length > cap) box.appendChild(el('div', 'dim', '  \u2026 ' + (plus.length - cap) + ' more lines'));
    return box;
  }

  function kv(label, value) {
    const line = el('div', 'kv');
    line.appendChild(el('span', 'k', label));
    line.appendChild(el('span', 'v', value));
    return line;
  }

  // The body of a tool call: the arguments as the tool means them.
  function toolCall(name, input) {
    input = input || {};
    const box = el('div', 'tool-args');
    const hiveTool = HIVE_TOOL.exec(name);
    if (name === 'Edit') {
      box.appendChild(kv('file', input.file_path || ''));
      if (input.replace_all) box.appendChild(el('div', 'dim', '(every occurrence)'));
      box.appendChild(diff(input.old_string, input.new_string));
    } else if (name === 'MultiEdit') {
      box.appendChild(kv('file', input.file_path || ''));
      (input.edits || []).forEach((e) => box.appendChild(diff(e.old_string, e.new_string)));
    } else if (name === 'Write') {
      box.appendChild(kv('file', input.file_path || ''));
      box.appendChild(diff('', input.content));
    } else if (name === 'Bash') {
      if (input.description) box.appendChild(el('div', 'dim', input.description));
      box.appendChild(pre('$ ' + (input.command || ''), 'bash'));
    } else if (name === 'Read') {
      let where = input.file_path || '';
      if (input.offset || input.limit) where += ' [' + (input.offset || 0) + '+' + (input.limit || '') + ']';
      box.appendChild(kv('file', where));
    } else if (name === 'Glob' || name === 'Grep') {
      box.appendChild(kv('pattern', input.pattern || ''));
      if (input.path) box.appendChild(kv('in', input.path));
      if (input.glob) box.appendChild(kv('glob', input.glob));
    } else if (name === 'TodoWrite' && Array.isArray(input.todos)) {
      const list = el('ul', 'todos');
      input.todos.forEach((t) => {
        const mark = t.status === 'completed' ? '\u2611 ' : t.status === 'in_progress' ? '\u25b6 ' : '\u2610 ';
        list.appendChild(el('li', 'todo ' + (t.status || ''), mark + (t.content || t.activeForm || '')));
      });
      box.appendChild(list);
    } else if (hiveTool && ['send', 'ask', 'answer'].includes(hiveTool[1])) {
      if (input.to) box.appendChild(kv('to', input.to));
      if (input.in_reply_to) box.appendChild(kv('re', '#' + input.in_reply_to));
      if (input.id !== undefined) box.appendChild(kv('question', '#' + input.id));
      const text = input.body !== undefined ? input.body : input.question !== undefined ? input.question : input.answer;
      box.appendChild(markdown(text === undefined ? '' : text));
      if (Array.isArray(input.options) && input.options.length) {
        const opts = el('ul', 'options');
        input.options.forEach((o) => opts.appendChild(el('li', null, o)));
        box.appendChild(opts);
      }
    } else {
      const keys = Object.keys(input);
      if (keys.length === 0) box.appendChild(el('span', 'dim', '(no arguments)'));
      keys.forEach((k) => {
        const v = input[k];
        const text = typeof v === 'string' ? v : JSON.stringify(v, null, 2);
        if (text.includes('\n')) {
          box.appendChild(el('div', 'k', k));
          box.appendChild(pre(text));
        } else {
          box.appendChild(kv(k, text));
        }
      });
    }
    return box;
  }

  function toolLabel(name, input) {
    input = input || {};
    const hiveTool = HIVE_TOOL.exec(name);
    if (hiveTool) {
      const verb = hiveTool[1];
      if (verb === 'send') return 'hive send \u2192 ' + (input.to || '?');
      if (verb === 'ask') return 'hive ask' + (input.to ? ' \u2192 ' + input.to : ' \u2192 operator');
      if (verb === 'answer') return 'hive answer #' + input.id;
      return 'hive ' + verb;
    }
    if (name === 'Bash') return 'Bash ' + firstLine(input.command || '', 80);
    if (['Edit', 'MultiEdit', 'Write', 'Read'].includes(name)) return name + ' ' + (input.file_path || '');
    if (name === 'Glob' || name === 'Grep') return name + ' ' + (input.pattern || '');
    return name;
  }

  function resultText(content) {
    if (typeof content === 'string') return content;
    if (Array.isArray(content)) {
      return content
        .map((c) => (c && c.type === 'text' ? c.text : c && c.type === 'image' ? '[image]' : JSON.stringify(c)))
        .join('\n');
    }
    return content === undefined || content === null ? '' : JSON.stringify(content, null, 2);
  }

  function assistantRows(frame, message) {
    const rows = [];
    (message.content || []).forEach((c) => {
      if (c.type === 'text') {
        if (!c.text || !c.text.trim()) return;
        const row = el('div', 'row assistant');
        row.appendChild(rowHead('\u25c6', 'assistant', 'assistant'));
        row.appendChild(markdown(c.text));
        rows.push(row);
      } else if (c.type === 'thinking') {
        const row = el('div', 'row thinking');
        row.appendChild(details('\u2234 thinking', pre(c.thinking || ''), false));
        rows.push(row);
      } else if (c.type === 'tool_use') {
        S.tools[c.id] = c.name;
        const row = el('div', 'row tool' + (HIVE_TOOL.test(c.name) ? ' hive' : ''));
        row.dataset.tool = c.name;
        row.appendChild(rowHead('\u2192', toolLabel(c.name, c.input), 'tool'));
        row.appendChild(toolCall(c.name, c.input));
        rows.push(row);
      }
    });
    return rows;
  }

  function userRows(frame, message) {
    const rows = [];
    const content = message.content;
    if (typeof content === 'string') {
      const row = el('div', 'row user');
      row.appendChild(details('\u21b3 ' + firstLine(content, 100), pre(content), false));
      rows.push(row);
      return rows;
    }
    (content || []).forEach((c) => {
      if (c.type !== 'tool_result') return;
      const name = S.tools[c.tool_use_id] || 'tool';
      const text = resultText(c.content);
      const row = el('div', 'row result' + (c.is_error ? ' error' : ''));
      const lines = text.split('\n').length;
      const summary = (c.is_error ? '\u2717 ' : '\u2190 ') + name + ' \u00b7 ' +
        (text.trim() ? firstLine(text, 90) : '(empty)') + (lines > 1 ? '  [' + lines + ' lines]' : '');
      // Messages the agent received read as prose, open; other output folds.
      const isRecv = name === 'mcp__hive__recv';
      row.appendChild(details(summary, isRecv ? markdown(text) : pre(text), isRecv));
      rows.push(row);
    });
    return rows;
  }

  // What codex.js (the codex engine's rows) builds with.
  const CODEX_HELPERS = {
    el, rowHead, details, pre, markdown, firstLine, toolCall, toolLabel, resultText, fmtNum,
  };

  function streamRows(frame) {
    const codex = window.HiveCodex && window.HiveCodex.rows(frame, CODEX_HELPERS);
    if (codex) return codex;
    const type = frame.type;
    if (type === 'assistant' && frame.message) return assistantRows(frame, frame.message);
    if (type === 'user' && frame.message) return userRows(frame, frame.message);
    if (type === 'system') {
      if (frame.subtype === 'init') {
        const row = el('div', 'row system');
        row.appendChild(rowHead('\u2699', 'session ' + String(frame.session_id || '').slice(0, 8) +
          ' \u00b7 ' + (frame.model || '') + ' \u00b7 ' + ((frame.tools || []).length) + ' tools', 'system'));
        return [row];
      }
      const row = el('div', 'row system');
      row.appendChild(rowHead('\u2699', 'system ' + (frame.subtype || ''), 'system'));
      return [row];
    }
    if (type === 'result') {
      const row = el('div', 'row result-line' + (frame.is_error ? ' error' : ''));
      const parts = ['result ' + (frame.subtype || '')];
      if (frame.num_turns !== undefined) parts.push(frame.num_turns + ' inferences');
      if (frame.duration_ms !== undefined) parts.push(fmtMs(frame.duration_ms));
      // The CLI's `total_cost_usd` is the session's running total, not this turn's.
      if (frame.total_cost_usd !== undefined) parts.push('session total ' + fmtUsd(frame.total_cost_usd));
      row.appendChild(rowHead('\u2261', parts.join(' \u00b7 '), 'result-line'));
      return [row];
    }
    if (type === 'stream_event' || type === 'rate_limit_event') return [];
    const row = el('div', 'row system');
    row.appendChild(details('\u2699 ' + (type || 'event'), pre(JSON.stringify(frame, null, 2)), false));
    return [row];
  }

  // The rows of one frame (state-only frames have none).
  function rows(frame) {
    switch (frame.kind) {
      case 'turn_start': {
        const row = el('div', 'row turn-start');
        let label = 'turn \u00b7 from ' + frame.from;
        if (frame.unread) label += ' \u00b7 ' + frame.unread + ' more unread';
        row.appendChild(rowHead('\u25b6', label, 'turn'));
        row.appendChild(el('span', 'time', clock(frame.at)));
        row.appendChild(details('wake prompt', markdown(frame.body || ''), true, 'wake'));
        return [row];
      }
      case 'turn_end': {
        const row = el('div', 'row turn-end ' + (frame.ok ? 'ok' : 'failed'));
        row.appendChild(rowHead('\u25a0', 'turn ' + (frame.ok ? 'done' : 'failed') + (frame.note ? ' \u2014 ' + frame.note : ''), 'turn'));
        row.appendChild(el('span', 'time', clock(frame.at)));
        return [row];
      }
      case 'note': {
        const stderr = /^stderr: /.test(frame.text);
        const row = el('div', 'row ' + (stderr ? 'stderr' : 'note'));
        row.appendChild(el('span', 'icon', stderr ? '\u2502' : '!'));
        row.appendChild(el('span', 'text', stderr ? frame.text.slice(8) : frame.text));
        return [row];
      }
      case 'stream':
        return streamRows(frame);
      case 'model_changed': {
        const row = el('div', 'row note');
        row.appendChild(el('span', 'icon', '\u21c4'));
        row.appendChild(el('span', 'text', 'model \u2192 ' + frame.model));
        return [row];
      }
      default:
        return [];
    }
  }

  // Applies one frame: badges, then rows. `live` animates.
  function apply(frame, live) {
    if (frame.seq <= hive.seen) return;
    hive.seen = frame.seq;
    hive.frames += 1;
    switch (frame.kind) {
      case 'turn_start':
        S.turnRunning = true;
        if (live) {
          term.flash(6000);
          refreshInbox();
          refreshLooseIfShown();
        }
        break;
      case 'turn_end':
        S.turnRunning = false;
        if (live) {
          refreshTurns();
          // What the turn asked, reminded or answered.
          refreshLooseIfShown();
        }
        break;
      case 'turn_state_changed':
        if (live || hive.ready) setTurnState(frame.state);
        break;
      case 'model_changed':
        setModel(frame.model);
        break;
      case 'token_usage_changed':
        setUsage(frame.ctx, frame.cost);
        break;
      case 'status_changed':
        $('status-text').textContent = frame.text || '';
        break;
      default:
        break;
    }
    if (live && frame.kind === 'stream') term.flash(4000);
    for (const row of rows(frame)) {
      stamp(frame, row);
      term.append(row, null, live);
    }
    renderControls();
  }

  // ---------------------------------------------------------------------
  // The stream (HivePage.live): subscribe first, buffer, take the snapshot
  // and history, show history, drop buffered frames the history already
  // had.

  function connect() {
    window.HivePage.live({
      url: 'events/stream',
      snapshot: async () => {
        const [state, history] = await Promise.all([getJson('api/state'), getJson('events/history?limit=2000')]);
        for (const frame of history.events) apply(frame, false);
        hive.seen = Math.max(hive.seen, history.seq);
        applySnapshot(state);
        return history.seq;
      },
      apply: (frame) => apply(frame, true),
      onState: (state, error) => {
        hive.ready = state === 'live';
        if (state === 'syncing' || state === 'live') setAlive(true);
        else if (state === 'failed') banner('could not load the agent: ' + (error.message || error));
        else setAlive(false);
      },
    });
  }

  // ---------------------------------------------------------------------
  // Side panels.

  function emptyNote(text) {
    return el('div', 'empty', text);
  }

  async function refreshInbox() {
    const box = $('inbox');
    try {
      const inbox = await getJson('api/inbox');
      box.replaceChildren();
      if (!inbox.rows.length) box.appendChild(emptyNote('no messages yet'));
      for (const m of inbox.rows) {
        const item = el('div', 'item msg');
        const head = el('div', 'item-head');
        head.appendChild(el('span', 'from', m.from));
        head.appendChild(agoEl(m.at, 'dim', '#' + m.id + ' \u00b7 '));
        item.appendChild(head);
        const sentence = m.from === 'system' ? window.HiveText.eventSentence(m.body) : null;
        item.appendChild(sentence ? el('div', 'md event', sentence) : markdown(m.body));
        box.appendChild(item);
      }
    } catch (e) {
      box.replaceChildren(emptyNote('inbox unavailable: ' + (e.message || e)));
    }
  }

  // Loose ends change through messages to this agent (an answer, an
  // expiry, a fired reminder), each of which wakes a turn, and through
  // the turn itself: refreshed on turn frames, while the tab is open.
  function refreshLooseIfShown() {
    if (!$('tab-loose').hidden) refreshLoose();
  }

  async function refreshLoose() {
    const box = $('loose');
    try {
      const data = await getJson('api/loose-ends');
      box.replaceChildren();
      if (!data.loose_ends.length) box.appendChild(emptyNote('nothing pending'));
      for (const l of data.loose_ends) box.appendChild(looseItem(l, data));
    } catch (e) {
      box.replaceChildren(emptyNote('loose ends unavailable: ' + (e.message || e)));
    }
  }

  function looseItem(l, data) {
    const item = el('div', 'item loose ' + l.kind);
    const head = el('div', 'item-head');
    item.appendChild(head);
    if (l.kind === 'question') {
      const toMe = l.target === data.agent;
      head.appendChild(el('span', 'badge ' + (toMe ? 'mauve' : 'yellow'), toMe ? 'asked of me' : 'question'));
      head.appendChild(el('span', 'from', l.asker + ' \u2192 ' + (l.target || 'operator')));
      head.appendChild(agoEl(l.asked_at, 'dim', '#' + l.id + ' \u00b7 '));
      item.appendChild(markdown(l.question));
      if (toMe) {
        const form = el('form', 'answer');
        const input = el('input');
        input.placeholder = 'answer as ' + data.agent;
        const send = el('button', 'primary', 'answer');
        send.type = 'submit';
        form.append(input, send);
        form.addEventListener('submit', (e) => {
          e.preventDefault();
          const answer = input.value;
          if (!answer.trim()) return;
          act(send, async () => {
            await post('api/answer', { id: l.id, answer: answer });
            refreshLoose();
          });
        });
        item.appendChild(form);
      } else if (!l.target) {
        const note = el('div', 'dim', 'the operator answers this on the dashboard');
        const url = data.dashboard && safeUrl(data.dashboard);
        if (url) {
          note.textContent = 'answer it on ';
          note.appendChild(link(url, 'the dashboard'));
        }
        item.appendChild(note);
      }
    } else if (l.kind === 'approval') {
      head.appendChild(el('span', 'badge peach', 'approval'));
      head.appendChild(el('span', 'from', l.approval_kind + ' \u00b7 ' + l.agent));
      head.appendChild(agoEl(l.requested_at, 'dim', '#' + l.id + ' \u00b7 '));
      if (l.commit_ref) item.appendChild(kv('commit', l.commit_ref));
      if (l.description) item.appendChild(markdown(l.description));
    } else if (l.kind === 'reminder') {
      head.appendChild(el('span', 'badge ' + (l.parked ? 'red' : 'blue'), l.parked ? 'reminder (parked)' : 'reminder'));
      head.appendChild(el('span', 'from', l.owner + (l.target ? ' \u2192 ' + l.target : '')));
      head.appendChild(el('span', 'dim', 'due ' + new Date(l.due_at * 1000).toLocaleString()));
      item.appendChild(markdown(l.message));
      if (l.last_error) item.appendChild(el('div', 'error-text', l.last_error));
    }
    return item;
  }

  // ---------------------------------------------------------------------
  // Turn stats: an SVG bar chart drawn with DOM calls.

  const METRICS = {
    cost: { label: 'cost per turn (USD)', value: (t) => t.cost_usd || 0, fmt: (v) => fmtUsd(v) },
    tokens: {
      label: 'tokens per turn',
      value: (t) => ctxTokens(t.usage) + t.usage.output_tokens,
      fmt: (v) => fmtNum(v),
    },
    duration: { label: 'duration per turn', value: (t) => t.duration_ms, fmt: (v) => fmtMs(Math.round(v)) },
  };

  async function refreshTurns() {
    try {
      const turns = await getJson('api/turns?limit=60');
      S.turns = turns;
      if (turns.length) {
        setLastTurn(turns[0]);
        const t = turns[0];
        setUsage(t.last_usage, t.usage, t.cost_usd, t.session_cost_usd);
      }
      renderStats();
    } catch (e) {
      $('chart').replaceChildren(emptyNote('stats unavailable: ' + (e.message || e)));
    }
  }

  function renderStats() {
    const metric = METRICS[S.metric];
    const turns = S.turns.slice().reverse();
    const chart = $('chart');
    chart.replaceChildren();
    if (!turns.length) {
      chart.appendChild(emptyNote('no turns yet'));
      $('stats-table').replaceChildren();
      return;
    }
    const W = 360;
    const H = 150;
    const pad = { l: 8, r: 8, t: 18, b: 16 };
    const values = turns.map(metric.value);
    const max = Math.max(...values, 1e-9);
    const plot = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, class: 'bars', role: 'img' });
    const title = svg('title', {});
    title.textContent = metric.label + ', oldest left';
    plot.appendChild(title);
    plot.appendChild(svg('line', { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: 'axis' }));
    const maxLabel = svg('text', { x: pad.l, y: 12, class: 'axis-label' });
    maxLabel.textContent = 'max ' + metric.fmt(max) + ' \u00b7 ' + metric.label;
    plot.appendChild(maxLabel);
    const slot = (W - pad.l - pad.r) / turns.length;
    const bw = Math.max(2, Math.min(24, slot * 0.7));
    turns.forEach((t, i) => {
      const v = values[i];
      const h = Math.max(v > 0 ? 1.5 : 0, (v / max) * (H - pad.t - pad.b));
      const x = pad.l + i * slot + (slot - bw) / 2;
      const bar = svg('rect', {
        x: x.toFixed(1),
        y: (H - pad.b - h).toFixed(1),
        width: bw.toFixed(1),
        height: h.toFixed(1),
        rx: 1.5,
        class: 'bar ' + (t.result_kind === 'ok' ? 'ok' : t.result_kind === 'failed' ? 'failed' : 'other'),
      });
      const tip = svg('title', {});
      tip.textContent = '#' + t.id + ' ' + t.result_kind + ' \u00b7 ' + metric.fmt(v) + ' \u00b7 from ' + t.wake_from +
        ' \u00b7 ' + new Date(t.started_at * 1000).toLocaleString();
      bar.appendChild(tip);
      plot.appendChild(bar);
    });
    chart.appendChild(plot);

    const table = el('table', 'turns');
    const head = el('tr');
    ['#', 'from', 'result', 'model', 'time', 'tokens/turn', 'cost/turn', 'session total', 'tools'].forEach((h) => head.appendChild(el('th', null, h)));
    table.appendChild(head);
    S.turns.slice(0, 20).forEach((t) => {
      const tr = el('tr', t.result_kind);
      [
        t.id,
        t.wake_from,
        t.result_kind,
        t.model,
        fmtMs(t.duration_ms),
        fmtNum(ctxTokens(t.usage) + t.usage.output_tokens),
        fmtUsd(t.cost_usd),
        t.session_cost_usd === undefined || t.session_cost_usd === null ? '\u2013' : fmtUsd(t.session_cost_usd),
        t.tool_call_count,
      ].forEach((c) => tr.appendChild(el('td', null, c)));
      table.appendChild(tr);
    });
    $('stats-table').replaceChildren(table);
  }

  // ---------------------------------------------------------------------
  // Wiring.

  function wire() {
    $('cancel').addEventListener('click', (e) => act(e.currentTarget, () => post('api/cancel')));
    $('login-start').addEventListener('click', (e) =>
      act(e.currentTarget, async () => renderLoginSession((await post('api/login/start')).session)),
    );
    $('login-cancel').addEventListener('click', (e) =>
      act(e.currentTarget, async () => {
        await post('api/login/cancel');
        await refreshLoginSession();
      }),
    );
    $('login-input-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = $('login-input');
      const line = input.value.trim();
      if (!line) return;
      act($('login-send'), async () => {
        await post('api/login/input', { line: line });
        input.value = '';
        await refreshLoginSession();
      });
    });
    $('compact').addEventListener('click', (e) => act(e.currentTarget, () => post('api/compact')));
    $('new-session').addEventListener('click', (e) =>
      act(e.currentTarget, async () => {
        await post('api/new-session');
        banner('the next turn starts a new session', 'info');
      }),
    );
    const model = $('model');
    function switchModel() {
      const value = model.value.trim();
      if (!value || value === S.model) return;
      act(null, async () => {
        try {
          await post('api/model', { model: value });
        } catch (e) {
          model.value = S.model;
          throw e;
        }
      });
    }
    model.addEventListener('change', switchModel);
    model.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        model.blur();
      } else if (e.key === 'Escape') {
        model.value = S.model;
        model.blur();
      }
    });

    const composer = $('composer');
    const message = $('message');
    function grow() {
      message.style.height = 'auto';
      message.style.height = Math.min(240, message.scrollHeight) + 'px';
    }
    message.addEventListener('input', grow);
    message.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        composer.requestSubmit();
      }
    });
    composer.addEventListener('submit', (e) => {
      e.preventDefault();
      const body = message.value;
      if (!body.trim()) return;
      act($('send'), async () => {
        await post('api/send', { body: body });
        message.value = '';
        grow();
        hive.sent = (hive.sent || 0) + 1;
        refreshInbox();
      });
    });

    document.querySelectorAll('.tab').forEach((tab) =>
      tab.addEventListener('click', () => {
        document.querySelectorAll('.tab').forEach((t) => t.classList.toggle('active', t === tab));
        document.querySelectorAll('.tab-body').forEach((b) => (b.hidden = b.id !== 'tab-' + tab.dataset.tab));
        if (tab.dataset.tab === 'inbox') refreshInbox();
        if (tab.dataset.tab === 'loose') refreshLoose();
        if (tab.dataset.tab === 'stats') refreshTurns();
      }),
    );
    document.querySelectorAll('.metric').forEach((m) =>
      m.addEventListener('click', () => {
        document.querySelectorAll('.metric').forEach((x) => x.classList.toggle('active', x === m));
        S.metric = m.dataset.metric;
        renderStats();
      }),
    );
  }

  function start() {
    term = window.HiveTerminal.create($('terminal'), { title: 'live', max: 3000 });
    wire();
    connect();
    refreshInbox();
    refreshTurns();
    // A local clock for the ages on the page (no request): time passes
    // without an event to say so.
    setInterval(() => window.HivePage.tick(), 1000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
