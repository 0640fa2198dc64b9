// Untrusted text for both pages, as `window.HiveText`:
// - `markdown(src)`: markdown to DOM — fenced code, headings, quotes, lists,
//   rules, paragraphs; inline code, bold, italics, http(s) links. Anything
//   else (HTML included) stays literal text: every node is built with
//   createElement / createTextNode, never parsed from a string.
// - `eventSentence(body)`: a helper event core put in an inbox (a JSON
//   body from `system`) as one sentence, or null when `body` is no event.
(function () {
  'use strict';

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function safeUrl(url) {
    return /^https?:\/\/[^\s]+$/i.test(url) ? url : null;
  }

  const INLINE =
    /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s](?:[^*]*[^*\s])?)\*|\b_([^_\s](?:[^_]*[^_\s])?)_\b|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()"']*[^\s<>()"'.,;:!?])/g;

  function inline(text, parent) {
    // A fresh regex per call: the recursion below must not move our cursor.
    const re = new RegExp(INLINE.source, 'g');
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      last = re.lastIndex;
      if (m[1] !== undefined) {
        parent.appendChild(el('code', null, m[2]));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const b = el('strong');
        inline(m[3] !== undefined ? m[3] : m[4], b);
        parent.appendChild(b);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const i = el('em');
        inline(m[5] !== undefined ? m[5] : m[6], i);
        parent.appendChild(i);
      } else if (m[7] !== undefined) {
        const url = safeUrl(m[8]);
        if (url) {
          parent.appendChild(link(url, m[7]));
        } else {
          parent.appendChild(document.createTextNode(m[0]));
        }
      } else if (m[9] !== undefined) {
        parent.appendChild(link(m[9], m[9]));
      }
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
    return parent;
  }
  function link(url, label) {
    const a = el('a');
    if (label === url) a.textContent = url;
    else inline(label, a);
    a.href = url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer nofollow';
    return a;
  }

  function markdown(src) {
    const root = el('div', 'md');
    const lines = String(src).replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    let para = [];
    function flush() {
      if (para.length) {
        root.appendChild(inline(para.join('\n'), el('p')));
        para = [];
      }
    }
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if ((m = /^\s*(```+|~~~+)\s*([\w+-]*)\s*$/.exec(line))) {
        flush();
        const fence = m[1];
        const body = [];
        i++;
        while (i < lines.length && lines[i].trim() !== fence) body.push(lines[i++]);
        i++;
        const pre = el('pre');
        const code = el('code', null, body.join('\n'));
        if (m[2]) code.dataset.lang = m[2];
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      if ((m = /^(#{1,6})\s+(.*)$/.exec(line))) {
        flush();
        root.appendChild(inline(m[2], el('h' + Math.min(6, m[1].length + 2), 'md-h')));
        i++;
        continue;
      }
      if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) {
        flush();
        root.appendChild(el('hr'));
        i++;
        continue;
      }
      if (/^\s*>/.test(line)) {
        flush();
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ''));
        const bq = el('blockquote');
        bq.appendChild(markdown(quoted.join('\n')));
        root.appendChild(bq);
        continue;
      }
      if ((m = /^\s*([-*+]|\d{1,9}[.)])\s+/.exec(line))) {
        flush();
        const ordered = /\d/.test(m[1]);
        const list = el(ordered ? 'ol' : 'ul');
        while (i < lines.length && (m = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(lines[i]))) {
          const item = el('li');
          let text = m[2];
          const task = /^\[([ xX])\]\s+(.*)$/.exec(text);
          if (task) {
            item.appendChild(el('span', 'task', task[1] === ' ' ? '\u2610 ' : '\u2611 '));
            text = task[2];
          }
          i++;
          // Continuation lines (indented, not a new item).
          while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*+]|\d{1,9}[.)])\s+/.test(lines[i])) {
            text += '\n' + lines[i++].trim();
          }
          inline(text, item);
          list.appendChild(item);
        }
        root.appendChild(list);
        continue;
      }
      if (line.trim() === '') {
        flush();
        i++;
        continue;
      }
      para.push(line);
      i++;
    }
    flush();
    return root;
  }

  const clip = (t, n) => {
    const s = String(t);
    return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
  };
  const quoted = (t) => '\u201c' + clip(t, 120) + '\u201d';
  const because = (note) => (note ? ': ' + clip(note, 160) : '');

  // One sentence per helper event (see hive-proto's `HelperEvent`).
  const SENTENCES = {
    approval_resolved: (e) =>
      'approval #' + e.id + ' (' + e.agent + (e.commit_ref ? ' @ ' + String(e.commit_ref).slice(0, 12) : '') + ') was ' + e.status + because(e.note),
    spawned: (e) => (e.ok ? e.agent + ' was spawned' : e.agent + "'s spawn failed" + because(e.note)),
    rebuilt: (e) => (e.ok ? e.agent + ' was rebuilt' : e.agent + "'s rebuild failed" + because(e.note)),
    killed: (e) => e.agent + ' was stopped',
    destroyed: (e) => e.agent + ' was destroyed (its state is kept)',
    container_crash: (e) => e.agent + "'s container crashed" + because(e.note),
    question_asked: (e) =>
      e.asker + ' asks (#' + e.id + ') ' + quoted(e.question) + (e.options && e.options.length ? ' \u2014 ' + (e.multi ? 'any of ' : 'one of ') + e.options.map((o) => clip(o, 40)).join(' / ') : ''),
    question_answered: (e) => e.answerer + ' answered #' + e.id + ' ' + quoted(e.question) + ': ' + clip(e.answer, 160),
    needs_login: (e) => e.agent + ' needs a login',
    logged_in: (e) => e.agent + ' logged in',
    needs_update: (e) => e.agent + ' needs an update (a rebuild applies it)',
  };

  function eventSentence(body) {
    let e = null;
    try {
      e = JSON.parse(body);
    } catch (err) {
      return null;
    }
    if (!e || typeof e !== 'object' || typeof e.event !== 'string') return null;
    const say = SENTENCES[e.event];
    if (say) {
      try {
        return say(e);
      } catch (err) {
        // A malformed event falls through to the generic line.
      }
    }
    const parts = [e.event.replace(/_/g, ' ')];
    for (const [k, v] of Object.entries(e)) {
      if (k === 'event' || v === '' || v === null) continue;
      parts.push(k + ' ' + clip(typeof v === 'string' ? v : JSON.stringify(v), 80));
    }
    return parts.join(', ');
  }

  window.HiveText = { markdown, eventSentence };
})();
