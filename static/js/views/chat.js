// The open conversation: history with scroll-back, pending sends, receipts, typing, the composer.

import { $, avatar, confirmAction, h, hueOf, setFieldError } from '../dom.js';
import { dayKey, dayLabel, fullTime, parseTime, presenceText, timeOfDay } from '../format.js';
import { checkBody } from '../validation.js';

const LOAD_OLDER_WITHIN_PX = 150; // start loading older messages this close to the top
const AT_BOTTOM_PX = 48; // closer than this to the bottom counts as "following" new messages
const COMPOSER_MAX_PX = 160;

export function setupChat({ store, actions, openGroupPanel, closeConversation }) {
  const scroller = $('messages');
  const list = $('message-list');
  const input = $('composer-input');
  let current = null; // the conversation id shown
  let following = true; // scrolled to the bottom: new messages keep it there
  const drafts = new Map(); // conversation id -> unsent text, kept while switching

  // -- header ---------------------------------------------------------------------------------

  function renderHeader() {
    const conv = store.conversations.get(current);
    if (!conv) return;
    const title = store.titleOf(conv);
    $('chat-title').textContent = title;
    const partner = store.partnerOf(conv);
    const blocked = partner && store.blocked.has(partner);
    const status = partner && !blocked ? store.statusOf(partner) : null;
    $('chat-avatar').replaceWith(Object.assign(avatar(title, { status, group: !partner }), { id: 'chat-avatar' }));
    $('chat-pane').dataset.status = status || '';
    if (partner) {
      const user = store.user(partner) || {};
      $('chat-subtitle').textContent = blocked ? 'blocked' : presenceText(status, user.last_seen);
      $('chat-members').hidden = true;
      const block = $('chat-block');
      block.hidden = false;
      block.textContent = blocked ? 'Unblock' : 'Block';
    } else {
      const count = (conv.members || []).length;
      $('chat-subtitle').textContent = `${count} member${count === 1 ? '' : 's'}`;
      $('chat-members').hidden = false;
      $('chat-block').hidden = true;
    }
  }

  $('chat-block').addEventListener('click', async () => {
    const partner = store.partnerOf(store.conversations.get(current));
    if (!partner) return;
    if (store.blocked.has(partner)) await actions.unblock(partner);
    else {
      const name = store.nameOf(partner);
      const sure = await confirmAction({
        title: `Block ${name}?`,
        message: `${name} will no longer be able to message you or see when you are online. You can unblock later.`,
        confirm: 'Block',
      });
      if (sure) await actions.block(partner);
    }
    renderHeader();
    renderComposer();
  });
  $('chat-members').addEventListener('click', () => openGroupPanel(current));
  $('chat-back').addEventListener('click', () => closeConversation());

  // -- messages -------------------------------------------------------------------------------

  /** The seq up to which the DM partner has read (receipts are shown on 1:1 chats only). */
  function partnerReadSeq(conv, timeline) {
    const partner = store.partnerOf(conv);
    return partner ? timeline.reads.get(partner) || 0 : 0;
  }

  function buildItems(conv, timeline) {
    const items = [];
    const meId = store.me?.id;
    const isGroup = conv.kind === 'group';
    const readSeq = partnerReadSeq(conv, timeline);
    // "Read" sits on my newest message the partner has read, "Sent" on my newest if it is later.
    let readMark = 0;
    let lastMine = 0;
    for (const m of timeline.messages) {
      if (m.sender_id !== meId) continue;
      lastMine = m.seq;
      if (m.seq <= readSeq) readMark = m.seq;
    }
    let prevDay = null;
    let prevSender = null;
    const push = (m, state) => {
      const date = parseTime(m.created_at) || new Date();
      const key = dayKey(date);
      if (key !== prevDay) {
        items.push({ kind: 'day', key: `d-${key}`, label: dayLabel(date) });
        prevDay = key;
        prevSender = null;
      }
      const mine = state !== 'sent' || m.sender_id === meId;
      const sender = mine ? meId : m.sender_id;
      items.push({
        kind: 'msg',
        // Keyed by client_msg_id when there is one: the pending bubble becomes the stored one.
        key: m.client_msg_id ? `c-${m.client_msg_id}` : `m-${m.id}`,
        m,
        state,
        mine,
        date,
        showSender: isGroup && !mine && sender !== prevSender,
        receipt: !mine || state !== 'sent' || isGroup ? '' : m.seq === readMark ? 'Read' : m.seq === lastMine ? 'Sent' : '',
      });
      prevSender = sender;
    };
    for (const m of timeline.messages) push(m, 'sent');
    for (const p of timeline.pending.values()) push(p, p.state);
    return items;
  }

  function renderItem(item, conv) {
    if (item.kind === 'day') return h('li', { class: 'day', text: item.label, attrs: { role: 'separator' } });
    const { m, state, mine } = item;
    const classes = ['msg', mine ? 'mine' : 'theirs'];
    if (state !== 'sent') classes.push(state === 'failed' ? 'failed' : 'pending');
    const meta = h('div', { class: 'meta' }, h('time', { dateTime: m.created_at, title: fullTime(item.date), text: timeOfDay(item.date) }));
    if (state === 'sending') meta.append(h('span', { class: 'status', text: 'Sending…' }));
    if (state === 'queued') meta.append(h('span', { class: 'status', text: 'Waiting for connection…' }));
    if (state === 'failed') {
      meta.append(
        h('span', { class: 'status', text: 'Not sent' }),
        h('button', {
          type: 'button',
          class: 'retry',
          text: 'Retry',
          attrs: { 'aria-label': 'Retry sending this message' },
          on: { click: () => actions.retry(conv.id, m.client_msg_id) },
        }),
      );
    }
    if (item.receipt) meta.append(h('span', { class: item.receipt === 'Read' ? 'receipt' : 'status', text: item.receipt }));
    return h(
      'li',
      { class: classes.join(' '), dataset: { state, seq: m.seq ?? '', sender: m.sender_id ?? store.me?.id ?? '' } },
      item.showSender ? h('span', { class: 'sender', text: store.nameOf(m.sender_id), style: { '--hue': hueOf(store.nameOf(m.sender_id)) } }) : null,
      // Message text is text: textContent, never HTML.
      h('div', { class: 'bubble', text: m.body }),
      meta,
    );
  }

  /** The first message at least partly visible, and its offset from the viewport top. (Not a
   * day separator: the one above the oldest message moves up when older messages arrive.) */
  function scrollAnchor() {
    const top = scroller.scrollTop;
    for (const node of list.children) {
      if (node.classList.contains('msg') && node.offsetTop + node.offsetHeight > top) {
        return { node, offset: node.offsetTop - top };
      }
    }
    return null;
  }

  function renderMessages() {
    const conv = store.conversations.get(current);
    if (!conv) return;
    const timeline = store.timeline(current);
    const anchor = following ? null : scrollAnchor();
    const items = buildItems(conv, timeline);
    const old = new Map();
    for (const child of list.children) old.set(child.dataset.key, child);
    const nodes = items.map((item) => {
      const sig = item.kind === 'day' ? item.label : `${item.m.id}|${item.state}|${item.receipt}|${item.showSender}`;
      const existing = old.get(item.key);
      if (existing && existing.dataset.sig === sig) return existing;
      const node = renderItem(item, conv);
      node.dataset.key = item.key;
      node.dataset.sig = sig;
      return node;
    });
    nodes.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
    });
    while (list.children.length > nodes.length) list.lastElementChild.remove();

    $('history-loader').hidden = !(timeline.loadingOlder || !timeline.loaded);
    $('history-start').hidden = !(timeline.loaded && !timeline.hasMore);
    if (following) scroller.scrollTop = scroller.scrollHeight;
    else if (anchor && anchor.node.isConnected) scroller.scrollTop = anchor.node.offsetTop - anchor.offset;
    maybeLoadOlder();
  }

  function maybeLoadOlder() {
    const timeline = store.timeline(current);
    if (!timeline.loaded || timeline.loadingOlder || !timeline.hasMore) return;
    // Also when the first page does not fill the view: there is nothing to scroll yet.
    if (scroller.scrollTop < LOAD_OLDER_WITHIN_PX) actions.loadOlder(current);
  }

  scroller.addEventListener('scroll', () => {
    following = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < AT_BOTTOM_PX;
    if (current) maybeLoadOlder();
  });

  function renderTyping() {
    const ids = current ? store.typingIn(current).filter((id) => id !== store.me?.id) : [];
    const names = ids.map((id) => store.nameOf(id));
    let text = '';
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = 'Several people are typing…';
    $('typing').textContent = text;
  }

  store.on('timeline', (id) => id === current && renderMessages());
  store.on('receipts', (id) => id === current && renderMessages());
  store.on('typing', (id) => id === current && renderTyping());
  store.on('users', () => {
    if (!current) return;
    renderHeader();
  });
  store.on('blocks', () => {
    if (!current) return;
    renderHeader();
    renderComposer();
  });
  store.on('conversations', () => {
    if (!current) return;
    if (!store.conversations.has(current)) return;
    renderHeader();
  });

  // -- composer -------------------------------------------------------------------------------

  // In a DM a block stands in: the composer gives way to a notice saying so.
  const notice = h('div', { class: 'composer-notice', id: 'composer-notice', hidden: true, attrs: { role: 'status' } });
  $('composer').before(notice);

  function renderComposer() {
    const partner = store.partnerOf(store.conversations.get(current));
    const mine = partner && store.blocked.has(partner);
    const theirs = partner && !mine && store.blockedBy.has(partner);
    $('composer').hidden = Boolean(mine || theirs);
    notice.hidden = !(mine || theirs);
    if (mine) {
      const unblock = h('button', { type: 'button', class: 'btn small', text: 'Unblock' });
      unblock.addEventListener('click', async () => {
        unblock.disabled = true;
        await actions.unblock(partner);
        unblock.disabled = false;
      });
      notice.replaceChildren(h('span', { text: `You blocked ${store.nameOf(partner)}.` }), unblock);
    } else if (theirs) {
      notice.replaceChildren(h('span', { text: "You can't reply to this conversation." }));
    } else {
      notice.replaceChildren();
    }
  }

  function fitComposer() {
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, COMPOSER_MAX_PX)}px`;
  }

  function send() {
    const problem = checkBody(input.value);
    setFieldError(input, problem);
    if (problem) return;
    actions.sendMessage(current, input.value.trim());
    input.value = '';
    drafts.delete(current);
    fitComposer();
    following = true;
    renderMessages();
  }

  input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  input.addEventListener('input', () => {
    fitComposer();
    // Too long shows as you type; "empty" only after a send, and goes once you type.
    const problem = input.value.trim() ? checkBody(input.value) : '';
    if (problem || input.getAttribute('aria-invalid')) setFieldError(input, problem);
    if (input.value.trim() && current) actions.typing(current);
  });
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    send();
    input.focus();
  });

  // -- opening and closing --------------------------------------------------------------------

  return {
    async show(conversationId) {
      const changed = current !== conversationId;
      $('chat-empty').hidden = true;
      $('chat-pane').hidden = false;
      if (changed) {
        if (current !== null) drafts.set(current, input.value);
        list.replaceChildren();
        following = true;
        input.value = drafts.get(conversationId) || '';
        setFieldError(input, '');
        fitComposer();
      }
      current = conversationId;
      renderHeader();
      renderComposer();
      renderMessages();
      renderTyping();
      await actions.showConversation(conversationId);
      if (current === conversationId) renderMessages();
    },
    hide() {
      if (current !== null) drafts.set(current, input.value);
      current = null;
      list.replaceChildren();
      $('chat-pane').hidden = true;
      $('chat-empty').hidden = false;
    },
    focusComposer() {
      input.focus();
    },
    /** Sign-out: nothing typed by this user may stay for the next one. */
    reset() {
      this.hide();
      drafts.clear();
      input.value = '';
    },
    get current() {
      return current;
    },
  };
}
