// Replies in the chat view: the reply bar above the composer (what the next message answers;
// Escape or its × cancels), the quote on a reply (who and the start of what they wrote, or
// "deleted message") that jumps to the original and highlights it, loading the original's
// page with around_seq when it is not loaded yet. The chat view (views/chat.js) asks for
// these pieces; the send goes through the outbox (outbox.js) with reply_to.
import { h } from '../dom.js';
import { path } from '../api.js';

export const DELETED_QUOTE = 'deleted message';
const EXCERPT_CHARS = 100; // as the server cuts it (chat/replies.py)
const HIGHLIGHT_MS = 2000; // how long the original stays highlighted after a jump
const AROUND_PAGE = 50; // messages loaded around an original that was not loaded
const FILL_PAGES = 40; // pages at most loaded between it and what was loaded (then it stops)

/** What the reply shows of the message it quotes: the current state of the original when we
 * hold it (edited, deleted since), else what the server said. */
export function quoteState(quote, timeline) {
  const original = timeline?.byId.get(quote.id);
  if (quote.deleted || original?.deleted) return { deleted: true, text: DELETED_QUOTE };
  const body = original ? original.body || '' : quote.excerpt || '';
  const segments = [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(body)];
  const text = segments.length > EXCERPT_CHARS ? `${segments.slice(0, EXCERPT_CHARS - 1).map((s) => s.segment).join('')}…` : body;
  return { deleted: false, text: text || 'attachment' };
}

/** The quote on a reply: a button that jumps to the original. */
export function replyQuote({ quote, timeline, nameOf, onJump }) {
  const state = quoteState(quote, timeline);
  const who = nameOf(quote.sender_id);
  return h(
    'button',
    {
      type: 'button',
      class: state.deleted ? 'reply-quote deleted' : 'reply-quote',
      dataset: { replyTo: quote.id, replySeq: quote.seq },
      attrs: { 'aria-label': state.deleted ? 'Reply to a deleted message' : `Reply to ${who}: ${state.text}. Show the original` },
      on: {
        click: (event) => {
          event.stopPropagation();
          onJump(quote);
        },
      },
    },
    state.deleted ? null : h('span', { class: 'reply-quote-sender', text: who }),
    h('span', { class: 'reply-quote-text', text: state.text }),
  );
}

/** A signature of the quote's state, for the chat view's redraw-when-changed. */
export function quoteSignature(m, timeline) {
  return m.reply_to ? quoteState(m.reply_to, timeline).text : '';
}

/**
 * The reply bar above the composer. `set(message)` shows it for that message, `clear()`
 * hides it; `quote()` is the reply_to the next send carries (null when none). Escape in the
 * message box cancels it (when nothing else took the key first).
 */
export function setupReplyBar({ input, nameOf }) {
  let target = null;
  const text = h('span', { class: 'reply-bar-text' });
  const cancel = h('button', { type: 'button', class: 'reply-bar-cancel', text: '×', attrs: { 'aria-label': 'Cancel reply' } });
  const bar = h('div', { class: 'reply-bar', id: 'reply-bar', hidden: true, attrs: { role: 'status' } }, text, cancel);
  input.closest('form').before(bar);
  cancel.addEventListener('click', () => {
    clear();
    input.focus();
  });
  input.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && target) {
      event.preventDefault();
      clear();
    }
  });
  function set(m) {
    target = { id: m.id, seq: m.seq, sender_id: m.sender_id, excerpt: quoteState({ id: m.id, excerpt: m.body }, null).text };
    text.replaceChildren(h('span', { class: 'reply-bar-label', text: `Replying to ${nameOf(m.sender_id)}` }), h('span', { class: 'reply-bar-excerpt', text: target.excerpt }));
    bar.hidden = false;
    input.focus();
  }
  function clear() {
    target = null;
    bar.hidden = true;
    text.replaceChildren();
  }
  return { set, clear, quote: () => target };
}

/** The page around `seq` (messages.history around_seq), then the pages between it and what
 * was loaded, so that the timeline stays without holes. True once the seq is loaded. */
export async function loadAround(actions, conversationId, seq) {
  const timeline = actions.store.timeline(conversationId);
  const url = path`/api/conversations/${conversationId}/messages`;
  const reply = await actions.guard(actions.api.get(url, { around_seq: seq, limit: AROUND_PAGE }), 'Could not load the original message');
  if (!reply) return false;
  const page = reply.messages || [];
  const loadedFirst = timeline.firstSeq;
  let after = page.length ? page[page.length - 1].seq : seq;
  for (let i = 0; loadedFirst && after < loadedFirst - 1 && i < FILL_PAGES; i++) {
    const more = await actions.guard(actions.api.get(url, { after_seq: after, limit: AROUND_PAGE }), 'Could not load messages');
    const got = (more?.messages || []).filter((m) => m.seq < loadedFirst);
    if (!more || !more.messages?.length) break;
    page.push(...got);
    after = more.messages[more.messages.length - 1].seq;
  }
  timeline.add(page);
  timeline.hasMore = Boolean(reply.has_more_before);
  actions.store.emit('timeline', conversationId);
  return page.some((m) => m.seq === seq);
}

/** Scroll to the message at seq in the list and highlight it for a moment; false when it is
 * not in the list. */
export function highlightMessage(list, seq) {
  const node = list.querySelector(`li.msg[data-seq="${CSS.escape(String(seq))}"]`);
  if (!node) return false;
  node.scrollIntoView({ block: 'center' });
  node.classList.remove('highlighted');
  void node.offsetWidth; // restart the animation when jumping to it again
  node.classList.add('highlighted');
  node.focus({ preventScroll: true });
  setTimeout(() => node.classList.remove('highlighted'), HIGHLIGHT_MS);
  return true;
}
