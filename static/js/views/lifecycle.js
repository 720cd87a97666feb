// A message's later life in the chat view: the actions menu on one's own messages (Edit, Delete),
// editing in place, the "edited" marker and tombstones. The chat view (views/chat.js) asks for
// these pieces while it draws a message; the changes themselves go through actions.js.
import { confirmAction, h } from '../dom.js';
import { fullTime, parseTime } from '../format.js';

export const TOMBSTONE_TEXT = 'This message was deleted';

/** The tombstone's bubble: what is left of a deleted message. */
export function tombstoneBubble() {
  return h('div', { class: 'bubble tombstone', text: TOMBSTONE_TEXT });
}

/** "edited", with the time of the edit on hover (nothing for a message never edited). */
export function editedMarker(m) {
  if (!m.edited_at || m.deleted) return null;
  const when = fullTime(parseTime(m.edited_at));
  return h('span', { class: 'edited', text: 'edited', title: `Edited ${when}`, attrs: { 'aria-label': `Edited ${when}` } });
}

/**
 * The menu of a stored message: mine (Edit, Delete), or anyone's in a group I own or
 * administer or as a site moderator (Delete), and Report on anyone else's. A button (shown on hover and focus, reachable by Tab
 * from the message) opens it; arrow keys move in it, Escape closes it.
 * `onClose` runs once it closed (the chat view redraws what it held back meanwhile).
 * With `onReply`, Reply too (on anyone's message: views/replies.js).
 * `extra` items ({text, run}) go between Reply and Delete: React and Copy (views/reactions.js) on any message.
 */
export function messageMenu({ canEdit = true, canDelete = true, onReply, onEdit, onDelete, onReport = null, onClose, extra = [] }) {
  const button = h('button', {
    type: 'button',
    class: 'msg-menu-button',
    text: '⋯',
    tabIndex: -1,
    attrs: { 'aria-label': 'Message actions', 'aria-haspopup': 'menu', 'aria-expanded': 'false' },
  });
  const item = (text, run, danger = false) =>
    h('button', {
      type: 'button',
      class: danger ? 'msg-menu-item danger' : 'msg-menu-item',
      text,
      attrs: { role: 'menuitem', tabindex: '-1' },
      on: {
        click: () => {
          close(false);
          run();
        },
      },
    });
  const menu = h('div', { class: 'msg-menu', hidden: true, attrs: { role: 'menu', 'aria-label': 'Message actions' } },
    canEdit ? item('Edit', onEdit) : null,
    onReply ? item('Reply', onReply) : null,
    extra.map((x) => item(x.text, x.run)),
    canDelete ? item('Delete', onDelete, true) : null,
    onReport ? item('Report', onReport) : null,
  );
  const items = () => [...menu.querySelectorAll('[role="menuitem"]')];
  const outside = (event) => {
    if (!wrap.contains(event.target)) close(false);
  };
  function open() {
    menu.hidden = false;
    button.setAttribute('aria-expanded', 'true');
    wrap.closest('li')?.classList.add('menu-open');
    items()[0]?.focus();
    document.addEventListener('pointerdown', outside, true);
  }
  function close(refocus) {
    if (menu.hidden) return;
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    wrap.closest('li')?.classList.remove('menu-open');
    document.removeEventListener('pointerdown', outside, true);
    if (refocus) button.focus();
    onClose();
  }
  button.addEventListener('click', (event) => {
    event.stopPropagation();
    if (menu.hidden) open();
    else close(true);
  });
  button.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      open();
    }
  });
  menu.addEventListener('keydown', (event) => {
    const all = items();
    const i = all.indexOf(document.activeElement);
    const next = { ArrowDown: all[(i + 1) % all.length], ArrowUp: all[(i - 1 + all.length) % all.length], Home: all[0], End: all[all.length - 1] }[event.key];
    if (next) {
      event.preventDefault();
      next.focus();
    } else if (event.key === 'Escape' || event.key === 'Tab') {
      event.preventDefault();
      event.stopPropagation();
      close(true);
    }
  });
  const wrap = h('div', { class: 'msg-actions' }, button, menu);
  return wrap;
}

/**
 * The message's text as an editor in place of its bubble: Enter saves, Shift+Enter is a new
 * line, Escape cancels. `onSave(body)` resolves true once saved (the editor then goes).
 */
export function messageEditor({ m, onSave, onCancel }) {
  const input = h('textarea', {
    class: 'msg-editor',
    value: m.body || '',
    rows: Math.min(8, (m.body || '').split('\n').length),
    maxLength: 4000,
    attrs: { 'aria-label': 'Edit message', 'aria-describedby': 'msg-editor-hint' },
  });
  const hint = h('div', { class: 'msg-editor-hint', id: 'msg-editor-hint', text: 'Enter to save · Escape to cancel' });
  let saving = false;
  input.addEventListener('keydown', async (event) => {
    event.stopPropagation(); // the list's arrow keys move between messages, not in here
    if (event.key === 'Escape') {
      event.preventDefault();
      onCancel();
    } else if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (saving) return;
      const body = input.value.trim();
      if (body === (m.body || '').trim()) {
        onCancel(); // nothing changed: nothing to send
        return;
      }
      saving = true;
      input.setAttribute('aria-busy', 'true');
      const saved = await onSave(body);
      saving = false;
      input.removeAttribute('aria-busy');
      if (!saved) input.focus();
    }
  });
  // Focus once it is in the page, the caret at the end; unless it already has the focus
  // (the user, or a test's fill, got there first: their selection stays).
  requestAnimationFrame(() => {
    if (document.activeElement === input) return;
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  });
  return h('div', { class: 'msg-edit' }, input, hint);
}

/** Ask before deleting: a deleted message cannot come back. */
export function confirmDelete() {
  return confirmAction({
    title: 'Delete this message?',
    message: 'It is deleted for everyone in this conversation, with its files. This cannot be undone.',
    confirm: 'Delete',
  });
}
