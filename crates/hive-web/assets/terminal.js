// The terminal component shared by hyperhive's pages: a scrolling pane of
// lines that sticks to the bottom while the reader is there, and otherwise
// counts what arrived below in a "new" pill. Lines are DOM nodes or plain
// text; nothing here ever parses HTML.
'use strict';
(function () {
  function create(root, opts) {
    opts = opts || {};
    const max = opts.max || 1000;
    root.classList.add('term');
    const chrome = document.createElement('div');
    chrome.className = 'term-chrome';
    for (let i = 0; i < 3; i++) {
      const dot = document.createElement('span');
      dot.className = 'dot';
      chrome.appendChild(dot);
    }
    const title = document.createElement('span');
    title.textContent = opts.title || '';
    chrome.appendChild(title);
    const body = document.createElement('div');
    body.className = 'term-body';
    if (opts.height) body.style.maxHeight = opts.height;
    const pill = document.createElement('button');
    pill.type = 'button';
    pill.className = 'term-pill';
    root.append(chrome, body, pill);

    let stuck = true;
    let unseen = 0;
    let litTimer = null;

    function atBottom() {
      return body.scrollTop + body.clientHeight >= body.scrollHeight - 4;
    }
    function toBottom() {
      body.scrollTop = body.scrollHeight;
      unseen = 0;
      pill.classList.remove('show');
    }
    body.addEventListener('scroll', () => {
      stuck = atBottom();
      if (stuck) {
        unseen = 0;
        pill.classList.remove('show');
      }
    });
    pill.addEventListener('click', () => {
      stuck = true;
      toBottom();
    });

    function line(content, cls, animate) {
      let node = content;
      if (!(content instanceof Node)) {
        node = document.createElement('div');
        node.textContent = String(content);
      }
      node.classList.add('term-line');
      if (cls) node.classList.add(...String(cls).split(' ').filter(Boolean));
      if (animate === false) node.classList.add('no-anim');
      return node;
    }

    const api = {
      el: root,
      body: body,
      // Appends one line (a Node, or text); `animate: false` for backfill.
      append(content, cls, animate) {
        const node = line(content, cls, animate);
        body.appendChild(node);
        while (body.childElementCount > max) body.firstElementChild.remove();
        if (stuck) {
          toBottom();
        } else {
          unseen += 1;
          pill.textContent = '\u2193 ' + unseen + ' new';
          pill.classList.add('show');
        }
        return node;
      },
      // Replaces every line with `lines` (text), scrolled to the bottom.
      setLines(lines, cls) {
        body.replaceChildren();
        for (const l of lines) body.appendChild(line(l, cls, false));
        stuck = true;
        toBottom();
      },
      clear() {
        body.replaceChildren();
        toBottom();
      },
      setTitle(text) {
        title.textContent = text;
      },
      // Lights the chrome for a few seconds (activity).
      flash(ms) {
        root.classList.add('lit');
        clearTimeout(litTimer);
        litTimer = setTimeout(() => root.classList.remove('lit'), ms || 4000);
      },
    };
    return api;
  }

  window.HiveTerminal = { create: create };
})();
