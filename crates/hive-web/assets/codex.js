// The agent page's rows for the codex engine: the lines of `codex exec
// --json` (codex-cli 0.147.0) as they reach the live stream — thread.started,
// turn.started, item.started / item.updated / item.completed (agent_message,
// reasoning, command_execution, file_change, mcp_tool_call, web_search,
// todo_list, error), turn.completed, turn.failed, error. agent.js asks
// HiveCodex.rows(frame, helpers) for every stream frame first; null means
// "not codex's". Everything from the agent is text nodes (helpers.el sets
// textContent), or the shared markdown renderer's elements.
'use strict';
(function () {
  const TOOL_ITEMS = ['command_execution', 'mcp_tool_call', 'web_search'];

  function fileChange(h, item) {
    const box = h.el('div', 'tool-args diff');
    // codex reports which files changed and how, not their contents: the
    // rows read like a diff header per file.
    (item.changes || []).forEach((c) => {
      const kind = c.kind === 'add' ? 'add' : c.kind === 'delete' ? 'del' : 'kv';
      const mark = c.kind === 'add' ? '+ ' : c.kind === 'delete' ? '- ' : '~ ';
      box.appendChild(h.el('div', kind, mark + (c.path || '') + ' (' + (c.kind || 'update') + ')'));
    });
    const row = h.el('div', 'row tool');
    row.dataset.tool = 'file_change';
    const n = (item.changes || []).length;
    row.appendChild(h.rowHead('\u2192', 'file change \u00b7 ' + n + ' file' + (n === 1 ? '' : 's') +
      (item.status && item.status !== 'completed' ? ' \u00b7 ' + item.status : ''), 'tool'));
    row.appendChild(box);
    return row;
  }

  // A tool call as it starts (item.started): name and arguments.
  function callRow(h, item) {
    const row = h.el('div', 'row tool');
    if (item.type === 'command_execution') {
      row.dataset.tool = 'command_execution';
      row.appendChild(h.rowHead('\u2192', 'shell ' + h.firstLine(item.command || '', 80), 'tool'));
      row.appendChild(h.pre('$ ' + (item.command || ''), 'bash'));
    } else if (item.type === 'mcp_tool_call') {
      const name = 'mcp__' + item.server + '__' + item.tool;
      row.dataset.tool = name;
      if (item.server === 'hive') row.className += ' hive';
      row.appendChild(h.rowHead('\u2192', h.toolLabel(name, item.arguments), 'tool'));
      row.appendChild(h.toolCall(name, item.arguments));
    } else {
      row.dataset.tool = item.type;
      row.appendChild(h.rowHead('\u2192', 'web search ' + (item.query || ''), 'tool'));
    }
    return row;
  }

  // A tool call's outcome (item.completed).
  function resultRow(h, item) {
    let name;
    let text;
    let failed = item.status === 'failed';
    if (item.type === 'command_execution') {
      name = 'shell';
      text = item.aggregated_output || '';
      if (item.exit_code !== null && item.exit_code !== undefined) {
        name += ' exit ' + item.exit_code;
        failed = failed || item.exit_code !== 0;
      }
    } else if (item.type === 'mcp_tool_call') {
      name = 'mcp__' + item.server + '__' + item.tool;
      if (item.error) {
        failed = true;
        text = typeof item.error === 'string' ? item.error : item.error.message || JSON.stringify(item.error);
      } else {
        text = h.resultText(item.result && item.result.content);
      }
    } else {
      name = 'web search';
      text = item.query || '';
    }
    const row = h.el('div', 'row result' + (failed ? ' error' : ''));
    const lines = text.split('\n').length;
    const summary = (failed ? '\u2717 ' : '\u2190 ') + name + ' \u00b7 ' +
      (text.trim() ? h.firstLine(text, 90) : '(empty)') + (lines > 1 ? '  [' + lines + ' lines]' : '');
    row.appendChild(h.details(summary, h.pre(text), false));
    return row;
  }

  function todoRow(h, item) {
    const row = h.el('div', 'row tool');
    row.dataset.tool = 'todo_list';
    row.appendChild(h.rowHead('\u2192', 'plan', 'tool'));
    const list = h.el('ul', 'todos');
    (item.items || []).forEach((t) => {
      list.appendChild(h.el('li', 'todo ' + (t.completed ? 'completed' : ''), (t.completed ? '\u2611 ' : '\u2610 ') + (t.text || '')));
    });
    row.appendChild(list);
    return row;
  }

  function itemRows(h, frame) {
    const item = frame.item || {};
    if (frame.type === 'item.started') {
      return TOOL_ITEMS.includes(item.type) ? [callRow(h, item)] : [];
    }
    if (frame.type === 'item.updated') return [];
    switch (item.type) {
      case 'agent_message': {
        if (!item.text || !item.text.trim()) return [];
        const row = h.el('div', 'row assistant');
        row.appendChild(h.rowHead('\u25c6', 'assistant', 'assistant'));
        row.appendChild(h.markdown(item.text));
        return [row];
      }
      case 'reasoning': {
        const row = h.el('div', 'row thinking');
        row.appendChild(h.details('\u2234 reasoning', h.pre(item.text || ''), false));
        return [row];
      }
      case 'command_execution':
      case 'mcp_tool_call':
      case 'web_search':
        return [resultRow(h, item)];
      case 'file_change':
        return [fileChange(h, item)];
      case 'todo_list':
        return [todoRow(h, item)];
      case 'error': {
        const row = h.el('div', 'row system');
        row.appendChild(h.rowHead('!', 'codex: ' + (item.message || ''), 'system'));
        return [row];
      }
      default: {
        const row = h.el('div', 'row system');
        row.appendChild(h.details('\u2699 ' + (item.type || 'item'), h.pre(JSON.stringify(item, null, 2)), false));
        return [row];
      }
    }
  }

  // The rows of one stream frame, or null when it is not a codex line.
  function rows(frame, h) {
    const type = String(frame.type || '');
    if (type === 'thread.started') {
      const row = h.el('div', 'row system');
      row.appendChild(h.rowHead('\u2699', 'codex session ' + String(frame.thread_id || '').slice(0, 13), 'system'));
      return [row];
    }
    if (type === 'turn.started') return [];
    if (type.startsWith('item.')) return itemRows(h, frame);
    if (type === 'turn.completed') {
      const u = frame.usage || {};
      const row = h.el('div', 'row result-line');
      row.appendChild(h.rowHead('\u2261', 'turn completed \u00b7 ' + h.fmtNum(u.input_tokens) + ' in (' +
        h.fmtNum(u.cached_input_tokens) + ' cached) \u00b7 ' + h.fmtNum(u.output_tokens) + ' out (session)', 'result-line'));
      return [row];
    }
    if (type === 'turn.failed') {
      const row = h.el('div', 'row result-line error');
      row.appendChild(h.rowHead('\u2261', 'turn failed \u00b7 ' + ((frame.error && frame.error.message) || ''), 'result-line'));
      return [row];
    }
    if (type === 'error') {
      const row = h.el('div', 'row system');
      row.appendChild(h.rowHead('!', 'codex: ' + (frame.message || ''), 'system'));
      return [row];
    }
    return null;
  }

  // The login panel's words for a codex agent (the page is claude's by
  // default): the key variable, the login it drives, what to paste.
  function login(l, $) {
    if (l.engine !== 'codex') return;
    $('login-key').textContent = 'OPENAI_API_KEY=\u2026';
    $('login-command').textContent = 'codex login --with-api-key';
    $('login-input').placeholder = 'paste an OpenAI API key';
  }

  window.HiveCodex = { rows: rows, login: login };
})();
