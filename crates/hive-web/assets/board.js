// The task board on the dashboard: columns by status, dependencies on each
// card, and the operator's create / assign / cancel. It lives off the
// dashboard's one stream: dashboard.js hands it the snapshot's `tasks` and
// every `task_changed` event after it (so the same seq dedupe applies), and
// every action changes the board only through the event it causes.
(function () {
  const COLUMNS = ['open', 'claimed', 'blocked', 'done', 'cancelled'];
  const tasks = new Map(); // id -> task
  const $ = (id) => document.getElementById(id);

  // Text-only DOM (page.js): untrusted titles are always text nodes.
  const { h } = window.HivePage;

  function say(text, bad) {
    const el = $('board-status');
    if (!el) return;
    el.textContent = text;
    el.classList.toggle('bad', Boolean(bad));
  }

  // dashboard.js's POST (JSON in, `{"ok":…}` out, throws the error).
  async function post(path, body, what) {
    try {
      await window.__hive.post(path, body);
      say(what + ': done', false);
      return true;
    } catch (e) {
      say(what + ' failed: ' + e.message, true);
      return false;
    }
  }

  function card(t) {
    const deps = (t.depends_on || []).map((d) => {
      const dep = tasks.get(d);
      const done = dep && dep.status === 'done';
      return h('span', { class: 'dep' + (done ? ' met' : ''), title: dep ? dep.title : '', text: '#' + d });
    });
    const who = t.assignee ? (t.status === 'open' ? 'for ' + t.assignee : t.assignee) : null;
    const actions = [];
    if (t.status !== 'done' && t.status !== 'cancelled') {
      const input = h('input', { class: 'assign-to', placeholder: 'agent', 'aria-label': 'assign #' + t.id + ' to' });
      actions.push(
        h('form', {
          class: 'row-form assign',
          onsubmit: (e) => {
            e.preventDefault();
            const agent = input.value.trim();
            if (agent) post('/api/tasks/' + t.id + '/assign', { agent }, 'assign #' + t.id);
          },
        }, input, h('button', { type: 'submit', class: 'ghost', text: 'assign' })),
        h('button', {
          type: 'button',
          class: 'ghost cancel',
          text: 'cancel',
          onclick: () => post('/api/tasks/' + t.id + '/cancel', {}, 'cancel #' + t.id),
        })
      );
    }
    return h(
      'div',
      { class: 'task ' + t.status + (t.claimable ? ' claimable' : ''), 'data-id': String(t.id) },
      h('div', { class: 'task-head' },
        h('span', { class: 'task-id', text: '#' + t.id }),
        h('span', { class: 'task-title', text: t.title }),
        t.claimable ? h('span', { class: 'badge green', text: 'claimable' }) : null),
      who ? h('div', { class: 'task-who', text: who }) : null,
      deps.length ? h('div', { class: 'task-deps' }, h('span', { class: 'muted', text: 'after ' }), ...deps) : null,
      t.reason ? h('div', { class: 'task-reason', text: t.reason }) : null,
      actions.length ? h('div', { class: 'task-actions' }, ...actions) : null
    );
  }

  function render() {
    const root = $('board');
    if (!root) return;
    const sorted = [...tasks.values()].sort((a, b) => a.rank - b.rank || a.id - b.id);
    for (const status of COLUMNS) {
      const col = root.querySelector('.board-col[data-status="' + status + '"] .cards');
      const mine = sorted.filter((t) => t.status === status);
      col.replaceChildren(...mine.map(card));
      root.querySelector('.board-col[data-status="' + status + '"] .count').textContent = String(mine.length);
    }
  }

  function setup() {
    const root = $('board');
    if (!root || root.childElementCount) return;
    for (const status of COLUMNS) {
      root.append(h('div', { class: 'board-col', 'data-status': status },
        h('h3', null, status + ' ', h('span', { class: 'count', text: '0' })),
        h('div', { class: 'cards' })));
    }
    $('task-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const title = $('task-title').value.trim();
      const after = $('task-after').value.split(/[\s,#]+/).filter(Boolean).map(Number);
      const assignee = $('task-assignee').value.trim();
      if (!title) return;
      if (after.some((n) => !Number.isInteger(n))) {
        say('after: task ids, such as 3, 4', true);
        return;
      }
      const ok = await post('/api/tasks', { title, depends_on: after, assignee: assignee || null }, 'add task');
      if (ok) {
        $('task-title').value = '';
        $('task-after').value = '';
        $('task-assignee').value = '';
      }
    });
  }

  window.HiveBoard = {
    // The snapshot's tasks replace the board.
    snapshot(list) {
      setup();
      tasks.clear();
      for (const t of list || []) tasks.set(t.id, t);
      render();
    },
    // One `task_changed`: upsert by id (core sends one for each dependent
    // a completion made claimable).
    changed(t) {
      setup();
      tasks.set(t.id, t);
      render();
    },
    tasks,
  };
})();
