// Reactions in the chat view: the React and Copy items of a message's actions menu, the chips
// under a message (emoji and count, highlighted when I reacted, a click toggles mine, who
// reacted on hover and focus), a long press opening a message's actions on touch screens, and,
// after the event queue was lost (hello resumed: false), messages.changes for every
// conversation loaded, so that edits, deletions and reactions missed reach what is shown.
import { path } from '../api.js';
import { h, toast } from '../dom.js';

const LONG_PRESS_MS = 500; // a touch held this long opens the message's actions
const MOVE_CANCELS_PX = 10; // a touch that moves this far is a scroll, not a press
const NAMES_SHOWN = 20; // the server lists the first 20 who reacted with each emoji
const CHANGES_PAGE = 100;
const CHANGES_PAGES_MAX = 50; // pages read per conversation in one catch-up

export class Reactions {
  constructor({ api, store, actions }) {
    this.api = api;
    this.store = store;
    this.actions = actions;
    this.cursors = new Map(); // conversation id -> change number the loaded history is at
  }

  /** React with `emoji` (add: true), take mine back (false), or toggle it (undefined). */
  async toggle(conversationId, m, emoji, add) {
    const mine = Boolean(m.reactions?.find((r) => r.emoji === emoji)?.me);
    const url = path`/api/conversations/${conversationId}/messages/${m.id}/reactions/${emoji}`;
    const adding = add ?? !mine;
    const reply = await this.actions.guard(adding ? this.api.put(url) : this.api.del(url), 'Could not react');
    if (reply?.message) this.actions.acceptChange(reply.message);
  }

  /** Note the conversation's change number before its history is first loaded. */
  async track(conversationId) {
    if (this.cursors.has(conversationId)) return;
    try {
      const reply = await this.api.get(path`/api/conversations/${conversationId}/changes`);
      if (!this.cursors.has(conversationId)) this.cursors.set(conversationId, reply.next || 0);
    } catch {
      // Without a number, a lost queue reloads that conversation instead (its stale mark).
    }
  }

  /** Apply every change missed by the conversations loaded (after hello resumed: false). */
  async catchUp() {
    await Promise.all([...this.cursors.keys()].map((id) => this.catchUpOne(id)));
  }

  async catchUpOne(conversationId) {
    let since = this.cursors.get(conversationId);
    for (let page = 0; page < CHANGES_PAGES_MAX; page++) {
      if (!this.store.timelines.get(conversationId)?.loaded) return;
      let reply;
      try {
        reply = await this.api.get(path`/api/conversations/${conversationId}/changes`, { since, limit: CHANGES_PAGE });
      } catch (err) {
        if (err?.status === 404 || err?.status === 403) this.cursors.delete(conversationId);
        return;
      }
      for (const change of reply.changes || []) this.actions.acceptChange(change.message);
      since = reply.next;
      this.cursors.set(conversationId, since);
      if (!reply.has_more) return;
    }
  }

  forget() {
    this.cursors.clear();
  }
}

/** The menu items every stored message has: React (the emoji picker chooses) and Copy. */
export function reactionMenuItems({ m, conv, reactions, picker }) {
  const items = [{ text: 'React', run: () => picker.pick((emoji) => reactions.toggle(conv.id, m, emoji, true)) }];
  if (m.body) items.push({ text: 'Copy', run: () => copyText(m.body) });
  return items;
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied.');
  } catch {
    toast('Could not copy: the browser did not allow it.', 'error');
  }
}

/** Who reacted, as the chip's tooltip says it. */
function whoReacted(r, store) {
  const names = r.user_ids.slice(0, NAMES_SHOWN).map((id) => (id === store.me?.id ? 'You' : store.nameOf(id)));
  const more = r.count - names.length;
  return `${names.join(', ')}${more > 0 ? ` and ${more} more` : ''} reacted with ${r.emoji}`;
}

/** The chips under a message (null when nobody reacted). */
export function reactionChips({ m, store, onToggle }) {
  if (!m.reactions?.length) return null;
  return h(
    'div',
    { class: 'reactions', attrs: { role: 'group', 'aria-label': 'Reactions' } },
    m.reactions.map((r) => {
      const who = whoReacted(r, store);
      return h(
        'button',
        {
          type: 'button',
          class: r.me ? 'reaction mine' : 'reaction',
          title: who,
          dataset: { emoji: r.emoji },
          attrs: { 'aria-pressed': r.me ? 'true' : 'false', 'aria-label': `${who} (${r.count})` },
          on: { click: () => onToggle(r.emoji) },
        },
        h('span', { class: 'reaction-emoji', text: r.emoji, attrs: { 'aria-hidden': 'true' } }),
        h('span', { class: 'reaction-count', text: String(r.count), attrs: { 'aria-hidden': 'true' } }),
      );
    }),
  );
}

/** A long press on a message (touch) opens its actions, as hovering shows them. */
export function setupLongPress(list) {
  let timer = null;
  let start = null;
  const cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  list.addEventListener('pointerdown', (event) => {
    if (event.pointerType !== 'touch') return;
    const button = event.target.closest('li.msg')?.querySelector('.msg-menu-button');
    if (!button || event.target.closest('button, a, textarea')) return;
    start = { x: event.clientX, y: event.clientY };
    cancel();
    timer = setTimeout(() => {
      timer = null;
      button.click();
    }, LONG_PRESS_MS);
  });
  list.addEventListener('pointermove', (event) => {
    if (timer && start && Math.hypot(event.clientX - start.x, event.clientY - start.y) > MOVE_CANCELS_PX) cancel();
  });
  for (const type of ['pointerup', 'pointercancel', 'pointerleave']) list.addEventListener(type, cancel);
  // The long press would also open the browser's own menu.
  list.addEventListener('contextmenu', (event) => {
    if (event.target.closest('li.msg') && matchMedia('(pointer: coarse)').matches) event.preventDefault();
  });
}
