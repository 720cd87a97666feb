// The open conversation: history with scroll-back, pending sends, receipts, typing, the composer
// (its attachments and the image viewer: views/files.js).

import { $, avatar, confirmAction, h, hueOf, setFieldError, toast } from '../dom.js';
import { dayKey, dayLabel, fullTime, parseTime, presenceText, timeOfDay } from '../format.js';
import { renderAttachments } from '../files.js';
import { renderMarkup } from '../markup.js';
import { rememberGroups, systemLines } from '../system.js';
import { checkBody } from '../validation.js';
import { setupEmojiPicker } from './emoji.js';
import { setupComposerFiles, setupViewer } from './files.js';
import { confirmDelete, editedMarker, messageEditor, messageMenu, tombstoneBubble } from './lifecycle.js';
import { invitationCard, invitationSignature, setupInviteAction } from './invitations.js';
import { mentionsMe, setupMentions } from './mentions.js';
import { highlightMessage, loadAround, quoteSignature, replyQuote, setupReplyBar } from './replies.js';
import { setupSafety } from './safety.js';
import { reactionChips, reactionMenuItems, setupLongPress } from './reactions.js';

const LOAD_OLDER_WITHIN_PX = 150; // start loading older messages this close to the top
const AT_BOTTOM_PX = 48; // closer than this to the bottom counts as "following" new messages
const COMPOSER_MAX_PX = 160;
const GROUP_WITHIN_MS = 5 * 60 * 1000; // one sender's messages this close together form a group

export function setupChat({ store, actions, reactions, openGroupPanel, closeConversation, reportMessage = null }) {
  const scroller = $('messages');
  const list = $('message-list');
  const input = $('composer-input');
  let current = null; // the conversation id shown
  let following = true; // scrolled to the bottom: new messages keep it there
  const drafts = new Map(); // conversation id -> unsent text, kept while switching
  let unread = null; // {count, seq}: where "New messages" goes in the conversation opened
  let seenSeq = null; // the newest message of the others seen at the bottom (for the pill)
  let placedAt = 0; // scrollTop when `following` was last decided
  let editingKey = null; // the key of the message of mine being edited in place (views/lifecycle.js)
  const emojiPicker = setupEmojiPicker({ input }); // its button goes before the message box
  // Before the composer's keydown (Enter sends): the list takes Enter, Tab, Escape while open.
  const mentions = setupMentions({ input, members: () => mentionable(store.conversations.get(current)) });
  const replyBar = setupReplyBar({ input, nameOf: (id) => store.nameOf(id) });
  setupLongPress(list); // a long touch opens a message's actions (views/reactions.js)
  const files = setupComposerFiles({ actions, input, current: () => current, onReady: (id) => id === current && send({ auto: true }) });
  const viewer = setupViewer(list);

  // -- header ---------------------------------------------------------------------------------

  function renderHeader() {
    const conv = store.conversations.get(current);
    if (!conv) return;
    const title = store.titleOf(conv);
    $('chat-title').textContent = conv.encrypted ? `🔒 ${title}` : title; // end-to-end encrypted
    const partner = store.partnerOf(conv);
    $('chat-safety').hidden = !(conv.encrypted && partner);
    $('chat-export').hidden = !conv.encrypted; // the server's export holds ciphertext only
    const blocked = partner && store.blocked.has(partner);
    const status = partner && !blocked ? store.statusOf(partner) : null;
    $('chat-avatar').replaceWith(Object.assign(avatar(title, { status, group: !partner }), { id: 'chat-avatar' }));
    $('chat-pane').dataset.status = status || '';
    if (partner) {
      const user = store.user(partner) || {};
      $('chat-subtitle').textContent = user.deleted ? 'account deleted' : blocked ? 'blocked' : presenceText(status, user.last_seen);
      $('chat-members').hidden = true;
      const block = $('chat-block');
      block.hidden = Boolean(user.deleted);
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
  setupSafety({ store, actions, current: () => current });
  $('chat-back').addEventListener('click', () => closeConversation());

  // -- messages -------------------------------------------------------------------------------

  /** How many of the others have read up to `seq` (read receipts of my messages). */
  function readersOf(conv, timeline, seq) {
    const partner = store.partnerOf(conv);
    if (partner) return (timeline.reads.get(partner) || 0) >= seq ? 1 : 0;
    let n = 0;
    for (const [userId, readSeq] of timeline.reads) if (userId !== store.me?.id && readSeq >= seq) n += 1;
    return n;
  }

  /** The unread divider goes before the first of the `count` newest messages of the others. */
  function placeDivider(timeline) {
    if (!unread || unread.seq !== null || !timeline.loaded) return;
    let left = unread.count;
    unread.seq = 0;
    for (let i = timeline.messages.length - 1; i >= 0 && left > 0; i--) {
      const m = timeline.messages[i];
      if (m.sender_id === store.me?.id) continue;
      unread.seq = m.seq;
      left -= 1;
    }
  }

  function buildItems(conv, timeline) {
    const items = [];
    const meId = store.me?.id;
    const isGroup = conv.kind === 'group';
    placeDivider(timeline);
    // The newest of my stored messages says Sent or Read; so does the newest one read, when an
    // even newer one is not. Older ones carry the tick only.
    let newestMine = 0;
    let newestRead = 0;
    for (const m of timeline.messages) {
      if (m.sender_id !== meId) continue;
      newestMine = m.seq;
      if (readersOf(conv, timeline, m.seq)) newestRead = m.seq;
    }
    const lines = systemLines(timeline).filter((line) => !timeline.hasMore || line.afterSeq >= timeline.firstSeq);
    let nextLine = 0;
    let prevDay = null;
    let prev = null; // the previous message item, while a run of one sender's messages lasts
    const addDay = (date) => {
      const key = dayKey(date);
      if (key === prevDay) return;
      items.push({ kind: 'day', key: `d-${key}`, label: dayLabel(date) });
      prevDay = key;
      prev = null;
    };
    const flushLines = (beforeSeq) => {
      while (nextLine < lines.length && lines[nextLine].afterSeq < beforeSeq) {
        const line = lines[nextLine++];
        addDay(parseTime(line.at));
        items.push({ kind: 'system', key: `s-${line.id}`, label: line.text });
        prev = null;
      }
    };
    const push = (m, state) => {
      const date = parseTime(m.created_at) || new Date();
      addDay(date);
      if (unread?.seq && m.seq === unread.seq && state === 'sent') {
        items.push({ kind: 'unread', key: 'unread', label: 'New messages' });
        prev = null;
      }
      const mine = state !== 'sent' || m.sender_id === meId;
      const sender = mine ? meId : m.sender_id;
      const groupStart = !prev || prev.sender !== sender || date - prev.date > GROUP_WITHIN_MS;
      let delivery = '';
      let label = '';
      if (mine && state === 'sent') {
        const readers = readersOf(conv, timeline, m.seq);
        delivery = readers ? 'read' : 'sent';
        if (m.seq === newestMine || m.seq === newestRead) {
          label = !readers ? 'Sent' : isGroup ? `Read by ${readers}` : 'Read';
        }
      } else if (mine) {
        delivery = state === 'failed' ? 'failed' : 'sending';
      }
      const item = {
        kind: 'msg',
        // Keyed by client_msg_id when there is one: the pending bubble becomes the stored one.
        key: m.client_msg_id ? `c-${m.client_msg_id}` : `m-${m.id}`,
        m,
        state,
        mine,
        date,
        sender,
        groupStart,
        showSender: isGroup && !mine && groupStart,
        delivery,
        label,
      };
      items.push(item);
      prev = item;
    };
    for (const m of timeline.messages) {
      flushLines(m.seq);
      push(m, 'sent');
    }
    flushLines(Infinity);
    for (const p of timeline.pending.values()) push(p, p.state === 'failed' ? 'failed' : p.state || 'sending');
    return items;
  }

  function signature(item) {
    if (item.kind !== 'msg') return `${item.kind}|${item.label}`;
    const { m } = item;
    const fileIds = (m.attachments || []).map((a) => a.id);
    const life = [m.edited_at, m.deleted, item.key === editingKey, quoteSignature(m, store.timeline(current)), m.reactions, invitationSignature(m)];
    return JSON.stringify([m.id, m.body, fileIds, item.state, item.delivery, item.label, item.showSender, item.groupStart, store.nameOf(item.sender), life]);
  }

  function renderItem(item, conv) {
    // Plain list items (no separator role): the log is a list, and axe's `list` rule holds.
    if (item.kind === 'day') return h('li', { class: 'day', text: item.label });
    if (item.kind === 'unread') return h('li', { class: 'unread-divider' }, h('span', { text: item.label }));
    if (item.kind === 'system') return h('li', { class: 'system-line', text: item.label });
    const { m, state, mine } = item;
    const classes = ['msg', mine ? 'mine' : 'theirs', item.groupStart ? 'group-start' : 'group-more'];
    if (state !== 'sent') classes.push(state === 'failed' ? 'failed' : 'pending');
    if (mentionsMe(m, store.me?.id)) classes.push('mentions-me');
    const when = fullTime(item.date);
    const meta = h('div', { class: 'meta' }, h('time', { dateTime: m.created_at, title: when, text: timeOfDay(item.date) }));
    if (item.delivery) {
      const ticks = { sending: '◷', sent: '✓', read: '✓✓', failed: '!' }[item.delivery];
      meta.append(h('span', { class: 'tick', text: ticks, dataset: { delivery: item.delivery }, attrs: { 'aria-hidden': 'true' } }));
    }
    // 'queued' (the outbox waits for the connection) and any other unconfirmed state: on its way.
    if (state !== 'sent' && state !== 'failed') meta.append(h('span', { class: 'status', text: state === 'queued' ? 'Waiting for connection…' : 'Sending…' }));
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
    const edited = editedMarker(m);
    if (edited) meta.append(edited);
    if (item.label) meta.append(h('span', { class: item.delivery === 'read' ? 'receipt' : 'status', text: item.label }));
    else if (item.delivery === 'sent' || item.delivery === 'read') {
      meta.append(h('span', { class: 'sr-only', text: item.delivery === 'read' ? 'Read' : 'Sent' }));
    }
    return h(
      'li',
      {
        class: classes.join(' '),
        tabIndex: -1,
        title: `${mine ? 'You' : store.nameOf(m.sender_id)}, ${when}`,
        dataset: { state, delivery: item.delivery, seq: m.seq ?? '', sender: m.sender_id ?? store.me?.id ?? '' },
      },
      item.showSender ? h('span', { class: 'sender', text: store.nameOf(m.sender_id), style: { '--hue': hueOf(store.nameOf(m.sender_id)) } }) : null,
      ...messageContent(item, conv),
      meta,
    );
  }

  /** A message whose menu is open or that is being edited stays as it is while the rest redraws
   * (a receipt must not close the menu or throw away the text being typed); it is redrawn once
   * that ends, or at once when it is deleted. */
  function inUse(node, item) {
    if (item.kind !== 'msg' || item.m.deleted) return false;
    return node.classList.contains('menu-open') || (item.key === editingKey && Boolean(node.querySelector('.msg-edit')));
  }

  /** The bubble (or the tombstone, or the editor) and attachments, with the actions menu on a
   * stored message of mine. */
  function messageContent(item, conv) {
    const { m, state, mine } = item;
    if (m.deleted) return [tombstoneBubble()];
    if (m.invitation) return [invitationCard({ m, me: store.me?.id, conv, nameOf: (id) => store.nameOf(id), onAnswer: (id, verb) => actions.answerInvitation(id, verb) })];
    const editing = item.key === editingKey;
    const stored = state === 'sent' && m.id;
    // A group's owner and admins may delete anyone's message (not edit it).
    const role = conv.members?.find((member) => member.user_id === store.me?.id)?.role;
    // So may the site's moderators and administrators (PROTOCOL.md section 8).
    const siteStaff = store.me?.role === 'moderator' || store.me?.role === 'admin';
    const moderates = conv.kind === 'group' && (role === 'owner' || role === 'admin' || siteStaff);
    const menu = stored && !editing;
    const onReply = () => replyBar.set(m);
    const onReport = !mine && reportMessage ? () => reportMessage(conv.id, m) : null;
    const extra = reactionMenuItems({ m, conv, reactions, picker: emojiPicker });
    return [
      menu ? messageMenu({ canEdit: mine, canDelete: mine || moderates, onReply, extra, onEdit: () => startEditing(item.key), onDelete: () => deleteMessage(conv.id, m), onReport, onClose: () => queueMicrotask(renderMessages) }) : null,
      m.reply_to ? replyQuote({ quote: m.reply_to, timeline: store.timeline(conv.id), nameOf: (id) => store.nameOf(id), onJump: (quote) => jumpTo(conv.id, quote.seq) }) : null,
      m.attachments?.length ? renderAttachments(m.attachments) : null,
      editing
        ? messageEditor({ m, onSave: (body) => saveEdit(conv.id, m, body), onCancel: () => stopEditing(item.key) })
        : // Message text is text: renderMarkup builds links and formatting as nodes, never HTML.
          m.body ? h('div', { class: 'bubble' }, renderMarkup(m.body)) : null,
      stored ? reactionChips({ m, store, onToggle: (emoji) => reactions.toggle(conv.id, m, emoji) }) : null,
    ];
  }

  /** Show the message at seq, loading its page first when it is not loaded (a reply's quote). */
  async function jumpTo(conversationId, seq) {
    following = false;
    if (highlightMessage(list, seq)) return;
    if (!(await loadAround(actions, conversationId, seq)) || current !== conversationId) return;
    renderMessages();
    highlightMessage(list, seq);
  }

  /** The members a group message may mention (not me); none in a DM. */
  function mentionable(conv) {
    if (conv?.kind !== 'group') return [];
    return (conv.members || []).filter((member) => member.user_id !== store.me?.id && !member.deleted);
  }

  function startEditing(key) {
    editingKey = key;
    renderMessages();
  }

  function stopEditing(key) {
    if (editingKey !== key) return;
    editingKey = null;
    renderMessages();
    list.querySelector(`li[data-key="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
  }

  async function saveEdit(conversationId, m, body) {
    const error = body || !m.attachments?.length ? checkBody(body) : ''; // files may go alone
    if (error) {
      toast(error, 'error');
      return false;
    }
    const saved = await actions.editMessage(conversationId, m.id, body);
    if (saved) stopEditing(editingKey);
    return Boolean(saved);
  }

  async function deleteMessage(conversationId, m) {
    if (!(await confirmDelete())) return;
    await actions.deleteMessage(conversationId, m.id);
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

  function atBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < AT_BOTTOM_PX;
  }

  /** The newest message of the others: what the "New messages" pill is about. */
  function newestOthersSeq(timeline) {
    for (let i = timeline.messages.length - 1; i >= 0; i--) {
      if (timeline.messages[i].sender_id !== store.me?.id) return timeline.messages[i].seq;
    }
    return 0;
  }

  function setPill(visible) {
    pill.hidden = !visible;
  }

  function renderMessages() {
    const conv = store.conversations.get(current);
    if (!conv) return;
    const timeline = store.timeline(current);
    // Scrolled since we last placed it, and its scroll event not handled yet: judge by now.
    if (Math.abs(scroller.scrollTop - placedAt) > 1) following = atBottom();
    const anchor = following ? null : scrollAnchor();
    const items = buildItems(conv, timeline);
    const old = new Map();
    for (const child of list.children) old.set(child.dataset.key, child);
    const active = list.contains(document.activeElement) ? document.activeElement : null;
    const focusedKey = active?.closest('li')?.dataset.key;
    const focused = focusedKey ? { key: focusedKey, onButton: active.classList.contains('msg-menu-button') } : null;
    const nodes = items.map((item) => {
      const sig = signature(item);
      const existing = old.get(item.key);
      if (existing && (existing.dataset.sig === sig || inUse(existing, item))) return existing;
      const node = renderItem(item, conv);
      node.dataset.key = item.key;
      node.dataset.sig = sig;
      return node;
    });
    // The nodes that go first, then the new ones in between: a node that stays is never moved
    // (moving a node drops the focus inside it, say on the item of an open menu).
    const kept = new Set(nodes);
    for (const child of [...list.children]) if (!kept.has(child)) child.remove();
    nodes.forEach((node, i) => {
      if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
    });
    updateTabStop();
    if (focused && !list.contains(document.activeElement)) {
      // Redrawn: the focus goes back to the same message, on its actions button if it was there.
      const node = list.querySelector(`li[data-key="${CSS.escape(focused.key)}"]`);
      const target = focused.onButton ? node?.querySelector('.msg-menu-button') : node;
      target?.focus({ preventScroll: true });
    }

    $('history-loader').hidden = !(timeline.loadingOlder || !timeline.loaded);
    $('history-start').hidden = !(timeline.loaded && !timeline.hasMore);
    if (following) scroller.scrollTop = scroller.scrollHeight;
    else if (anchor) {
      // By key: the node itself may have been redrawn (it no longer starts its group).
      const node = list.querySelector(`li[data-key="${CSS.escape(anchor.node.dataset.key)}"]`);
      if (node) scroller.scrollTop = node.offsetTop - anchor.offset;
    }

    placedAt = scroller.scrollTop;
    placedHeight = scroller.clientHeight;

    // A message of the others arrived while scrolled up: the pill says so.
    const newest = newestOthersSeq(timeline);
    if (following || seenSeq === null) seenSeq = newest;
    setPill(!following && newest > seenSeq);
    maybeLoadOlder();
  }

  function maybeLoadOlder() {
    const timeline = store.timeline(current);
    if (!timeline.loaded || timeline.loadingOlder || !timeline.hasMore) return;
    // Also when the first page does not fill the view: there is nothing to scroll yet.
    if (scroller.scrollTop < LOAD_OLDER_WITHIN_PX) actions.loadOlder(current);
  }

  // The list's height when it was last placed: a scroll event that comes with a new height
  // (the keyboard opened, a bar appeared above the composer) is the resize, not the reader,
  // and must not stop the following.
  let placedHeight = scroller.clientHeight;
  scroller.addEventListener('scroll', () => {
    if (scroller.clientHeight !== placedHeight && following) {
      keepBottom();
      return;
    }
    following = atBottom();
    placedAt = scroller.scrollTop;
    if (following && current) {
      seenSeq = newestOthersSeq(store.timeline(current));
      setPill(false);
    }
    if (current) maybeLoadOlder();
  });

  function scrollToBottom() {
    scroller.scrollTop = scroller.scrollHeight;
    placedAt = scroller.scrollTop;
    following = true;
    if (current) seenSeq = newestOthersSeq(store.timeline(current));
    setPill(false);
  }

  const pill = h(
    'button',
    { type: 'button', class: 'new-pill', id: 'new-messages-pill', hidden: true },
    'New messages',
    h('span', { class: 'new-pill-arrow', text: '↓', attrs: { 'aria-hidden': 'true' } }),
  );
  pill.addEventListener('click', () => {
    scrollToBottom();
    scroller.focus({ preventScroll: true });
  });
  scroller.append(h('div', { class: 'new-pill-dock' }, pill));

  // The on-screen keyboard (or any resize) shrinks the list: the newest messages stay in view
  // when they were in view before.
  function keepBottom() {
    placedHeight = scroller.clientHeight;
    if (!current || !following) return;
    scroller.scrollTop = scroller.scrollHeight;
    placedAt = scroller.scrollTop;
  }
  window.visualViewport?.addEventListener('resize', keepBottom);
  new ResizeObserver(keepBottom).observe(scroller);

  // Messages are focusable (their time shows on focus) with one tab stop: the arrow keys move
  // between them (roving tabindex), Home and End go to the oldest and newest loaded.
  let tabStopKey = null;
  function updateTabStop() {
    const msgs = list.querySelectorAll('li.msg');
    let stop = tabStopKey ? list.querySelector(`li.msg[data-key="${CSS.escape(tabStopKey)}"]`) : null;
    if (!stop) stop = msgs[msgs.length - 1] || null;
    for (const node of msgs) {
      node.tabIndex = node === stop ? 0 : -1;
      // Its actions button is a tab stop only with the message: one Tab from it reaches it.
      const menuButton = node.querySelector('.msg-menu-button');
      if (menuButton) menuButton.tabIndex = node === stop ? 0 : -1;
    }
  }
  list.addEventListener('focusin', (event) => {
    const node = event.target.closest('li.msg');
    if (!node) return;
    tabStopKey = node.dataset.key;
    updateTabStop();
  });
  list.addEventListener('keydown', (event) => {
    const node = event.target.closest('li.msg');
    if (!node || event.target !== node) return;
    const msgs = [...list.querySelectorAll('li.msg')];
    const i = msgs.indexOf(node);
    const next = { ArrowUp: msgs[i - 1], ArrowDown: msgs[i + 1], Home: msgs[0], End: msgs[msgs.length - 1] }[event.key];
    if (!next) return;
    event.preventDefault();
    next.focus();
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
    rememberGroups(store);
    if (!current) return;
    if (!store.conversations.has(current)) return;
    renderHeader();
  });

  // -- composer -------------------------------------------------------------------------------

  // In a DM a block (or the partner's deleted account) stands in: the composer gives way to a
  // notice saying so.
  const notice = h('div', { class: 'composer-notice', id: 'composer-notice', hidden: true, attrs: { role: 'status' } });
  $('composer').before(notice);
  setupInviteAction({ actions, store });

  function renderComposer() {
    const partner = store.partnerOf(store.conversations.get(current));
    const mine = partner && store.blocked.has(partner);
    const theirs = partner && !mine && store.blockedBy.has(partner);
    const gone = partner && store.user(partner)?.deleted;
    $('composer').hidden = Boolean(mine || theirs || gone);
    notice.hidden = !(mine || theirs || gone);
    if (gone) {
      notice.replaceChildren(h('span', { text: 'This account was deleted; it cannot receive messages.' }));
    } else if (mine) {
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

  /** Send what the composer holds; with files still uploading, once they are done (`auto`). */
  function send({ auto = false } = {}) {
    if (files.busy(current)) {
      files.sendWhenReady(current);
      return;
    }
    const uploads = files.uploads(current);
    // Files cancelled while the send waited, and nothing typed: nothing to send, no error.
    if (auto && !uploads.length && !input.value.trim()) return;
    const problem = uploads.length && !input.value.trim() ? '' : checkBody(input.value);
    setFieldError(input, problem);
    if (problem) return;
    actions.sendMessage(current, input.value.trim(), uploads, replyBar.quote());
    replyBar.clear();
    files.clear(current);
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
        replyBar.clear();
        mentions.close();
        emojiPicker.close();
        viewer.close();
        if (current !== null) drafts.set(current, input.value);
        list.replaceChildren();
        following = true;
        seenSeq = null;
        tabStopKey = null;
        setPill(false);
        const unreadCount = store.conversations.get(conversationId)?.unread_count || 0;
        unread = unreadCount > 0 ? { count: unreadCount, seq: null } : null;
        input.value = drafts.get(conversationId) || '';
        setFieldError(input, '');
        fitComposer();
      }
      current = conversationId;
      renderHeader();
      renderComposer();
      renderMessages();
      renderTyping();
      files.render();
      await actions.showConversation(conversationId);
      if (current === conversationId) renderMessages();
    },
    hide() {
      emojiPicker.close();
      viewer.close();
      if (current !== null) drafts.set(current, input.value);
      current = null;
      unread = null;
      setPill(false);
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
      files.reset();
      drafts.clear();
      input.value = '';
    },
    get current() {
      return current;
    },
  };
}
