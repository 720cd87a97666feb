// Mentions in the chat view: in a group's message box, typing @ lists the members whose
// name starts with what follows (a listbox under the box: arrow keys move, Enter or Tab
// inserts "@name ", Escape closes); a message that mentions me is highlighted. The server
// resolves the names (chat/mentions.py): the message carries `mentions: [user_id]`.
import { h } from '../dom.js';

const SHOWN_MAX = 8; // members listed at once
const QUERY_RE = /(^|[^\w@])@([A-Za-z0-9_.-]*)$/; // an @name being typed, up to the caret

/** True when the message mentions me. */
export function mentionsMe(m, myId) {
  return Boolean(myId && Array.isArray(m.mentions) && m.mentions.includes(myId));
}

/**
 * The autocomplete of one message box. `members()` gives the members that may be mentioned
 * ([{user_id, username}], none outside a group). Its keydown listener must be added before the
 * composer's own (Enter sends): it takes Enter, Tab and Escape while the list is open.
 */
export function setupMentions({ input, members }) {
  const listbox = h('ul', { class: 'mention-list', id: 'mention-list', hidden: true, attrs: { role: 'listbox', 'aria-label': 'Members to mention' } });
  input.closest('form').append(listbox);
  input.setAttribute('aria-autocomplete', 'list');
  input.setAttribute('aria-controls', 'mention-list'); // (a textarea takes no aria-expanded)
  let matches = [];
  let active = 0;
  let start = -1; // where the @ being completed is in the box

  function query() {
    const caret = input.selectionStart;
    if (caret !== input.selectionEnd) return null;
    const match = QUERY_RE.exec(input.value.slice(0, caret));
    if (!match) return null;
    return { start: caret - match[2].length - 1, text: match[2].toLowerCase() };
  }

  function update() {
    const q = query();
    const candidates = q ? members().filter((m) => m.username.toLowerCase().startsWith(q.text)) : [];
    if (!q || !candidates.length) return close();
    start = q.start;
    matches = candidates.slice(0, SHOWN_MAX);
    active = Math.min(active, matches.length - 1);
    render();
  }

  function render() {
    listbox.replaceChildren(
      ...matches.map((m, i) =>
        h('li', {
          id: `mention-option-${i}`,
          class: i === active ? 'mention-option active' : 'mention-option',
          text: `@${m.username}`,
          attrs: { role: 'option', 'aria-selected': String(i === active) },
          on: {
            pointerdown: (event) => {
              event.preventDefault(); // the box keeps the focus
              insert(m);
            },
          },
        }),
      ),
    );
    listbox.hidden = false;
    input.setAttribute('aria-activedescendant', `mention-option-${active}`);
  }

  function close() {
    matches = [];
    active = 0;
    start = -1;
    listbox.hidden = true;
    listbox.replaceChildren();
    input.removeAttribute('aria-activedescendant');
  }

  function insert(member) {
    const caret = input.selectionStart;
    const text = `@${member.username} `;
    input.value = input.value.slice(0, start) + text + input.value.slice(caret);
    const at = start + text.length;
    input.setSelectionRange(at, at);
    close();
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }

  input.addEventListener('keydown', (event) => {
    if (listbox.hidden || !matches.length || event.isComposing) return;
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves) {
      active = (active + moves[event.key] + matches.length) % matches.length;
      render();
    } else if (event.key === 'Enter' || event.key === 'Tab') {
      insert(matches[active]);
    } else if (event.key === 'Escape') {
      close();
    } else {
      return;
    }
    event.preventDefault();
    event.stopImmediatePropagation(); // not a send, not the reply bar's Escape
  });
  input.addEventListener('input', update);
  input.addEventListener('click', update);
  input.addEventListener('blur', () => setTimeout(close, 0));
  return { close };
}
