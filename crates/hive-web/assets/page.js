// What the dashboard, its task board and every agent's page share:
// `window.HivePage` — the element builder (text only, never HTML), the
// clocks (`ago`, `clock`, `dur`, and `tick`, which keeps every
// `data-at` element's age current), the banner, and the live sync (the
// event stream subscribed first and buffered, then the snapshot, then
// the buffered events the snapshot did not already hold).
'use strict';
window.HivePage = (function () {
  // Builds an element: `props` set attributes, `class`, `text` (a text
  // node), `data` (dataset), `on<event>` handlers and the boolean DOM
  // properties; `kids` are nodes or text.
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = String(dv);
        else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
        else if (k === 'checked' || k === 'disabled' || k === 'value' || k === 'hidden' || k === 'open') el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }

  const now = () => Math.floor(Date.now() / 1000);
  // A wire timestamp in unix seconds: host.sock types carry RFC 3339
  // strings (`requested_at`, `asked_at`, …), events carry integers.
  function secs(t) {
    return typeof t === 'string' ? Math.floor(Date.parse(t) / 1000) : t;
  }
  function dur(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }
  // How long ago `t` was; a dash when there is no time.
  function ago(t) {
    if (t === null || t === undefined || t === 0 || t === '') return '\u2013';
    const s = Math.max(0, now() - secs(t));
    if (isNaN(s)) return '\u2013';
    if (s < 5) return 'just now';
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    if (s < 86400) return Math.floor(s / 3600) + 'h ago';
    return Math.floor(s / 86400) + 'd ago';
  }
  // Local wall-clock time of `t`, HH:MM:SS.
  function clock(t) {
    const d = new Date(secs(t) * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  }
  // An element showing how long ago `t` was, kept current by `tick`.
  function agoEl(t, cls, prefix) {
    t = secs(t);
    return h('span', {
      class: cls || 'muted',
      data: { at: t, prefix: prefix || '' },
      title: t ? new Date(t * 1000).toLocaleString() : null,
      text: (prefix || '') + ago(t),
    });
  }
  // Re-renders every `data-at` age below `root` (the whole page by
  // default): a time passes without any event to say so.
  function tick(root) {
    for (const el of (root || document).querySelectorAll('[data-at]')) {
      el.textContent = (el.dataset.prefix || '') + ago(Number(el.dataset.at));
    }
  }

  // A dismissable alert: `what` in bold (optional), then the message.
  function banner(what, message, kind, onDismiss) {
    const el = h(
      'div',
      { class: 'banner ' + (kind || ''), role: 'alert' },
      what ? h('span', { class: 'what', text: what }) : null,
      h('span', { class: 'msg', text: message }),
      h('button', {
        type: 'button',
        class: 'ghost',
        title: 'dismiss',
        text: '\u2715',
        onclick: () => (onDismiss ? onDismiss(el) : el.remove()),
      })
    );
    return el;
  }

  // Keeps a page in step with a server: subscribes to the SSE stream at
  // `url` first, buffering its events; then `snapshot()` loads the state
  // and answers the `seq` it holds; then every buffered event past that
  // `seq` goes to `apply`, and every later one as it comes. On a reconnect
  // the same again (events missed meanwhile are in the new snapshot).
  // `onState` hears 'syncing', 'live', 'reconnecting', 'closed' and
  // ('failed', error). `onEvent` sees every event, buffered or not.
  function live(opts) {
    let buffer = [];
    let ready = false;
    let generation = 0;
    const state = opts.onState || (() => {});
    async function resync() {
      const gen = ++generation;
      ready = false;
      state('syncing');
      try {
        const seq = await opts.snapshot();
        if (gen !== generation) return;
        const pending = buffer;
        buffer = [];
        ready = true;
        for (const ev of pending) if (!(ev.seq <= seq)) opts.apply(ev);
        state('live');
      } catch (e) {
        if (gen === generation) state('failed', e);
      }
    }
    function connect() {
      const es = new EventSource(opts.url);
      es.onopen = () => {
        // Subscribed: buffer from here, then take the snapshot.
        buffer = [];
        resync();
      };
      es.onmessage = (e) => {
        let ev;
        try {
          ev = JSON.parse(e.data);
        } catch (err) {
          return;
        }
        if (opts.onEvent) opts.onEvent(ev);
        if (ready) opts.apply(ev);
        else buffer.push(ev);
      };
      es.onerror = () => {
        // The browser reconnects by itself; `open` resyncs.
        ready = false;
        buffer = [];
        const closed = es.readyState === EventSource.CLOSED;
        state(closed ? 'closed' : 'reconnecting');
        if (closed) setTimeout(connect, 3000);
      };
    }
    connect();
  }

  return { h, now, secs, dur, ago, clock, agoEl, tick, banner, live };
})();
