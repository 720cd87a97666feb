// The sidebar: who I am, the live transport, conversations, people, friend requests.

import { $, avatar, confirmAction, dot, h, renderKeyed, setFieldError, setupTabs, toast, withBusy } from '../dom.js';
import { previewText } from '../files.js';
import { parseTime, presenceText, shortWhen } from '../format.js';
import { checkFriendCode, normalizeFriendCode } from '../validation.js';

const SEARCH_DELAY_MS = 250;
const CLOCK_TICK_MS = 30000; // "last seen 3 min ago" and "14:05" labels age

const TRANSPORT_LABELS = {
  connecting: () => 'Connecting…',
  reconnecting: () => 'Reconnecting…',
  live: (mode) => (mode === 'longpoll' ? 'Live · long-polling' : 'Live · WebSocket'),
};

export function setupSidebar({ store, actions, openConversation }) {
  const selectTab = setupTabs(document.querySelector('#sidebar .tabs'), (id) => {
    // Newcomers show up when the directory is looked at again.
    if (id === 'tab-people' && store.me && !store.directory.loading) actions.searchDirectory(store.directory.query);
  });

  // -- header ---------------------------------------------------------------------------------

  store.on('me', () => {
    const me = store.me;
    if (!me) return;
    $('me-name').textContent = me.username;
    $('me-avatar').replaceWith(Object.assign(avatar(me.username), { id: 'me-avatar' }));
    $('my-code').textContent = me.friend_code || '';
  });

  $('copy-code').addEventListener('click', async () => {
    const code = store.me?.friend_code;
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code);
      toast(`Friend code ${code} copied.`, 'success');
    } catch {
      // No clipboard permission (or an insecure origin): select it so Ctrl+C works.
      const range = document.createRange();
      range.selectNodeContents($('my-code'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast('Press Ctrl+C (⌘C) to copy the selected code.');
    }
  });

  store.on('transport', () => {
    const { mode, status } = store.transport;
    const box = $('transport');
    box.dataset.mode = mode;
    box.dataset.status = status;
    $('transport-label').textContent = TRANSPORT_LABELS[status](mode);
  });

  // -- conversations --------------------------------------------------------------------------

  function previewOf(conv) {
    const m = conv.last_message;
    if (!m) return conv.kind === 'group' ? 'Group created' : 'No messages yet';
    const who = m.sender_id === store.me?.id ? 'You' : conv.kind === 'group' ? store.nameOf(m.sender_id) : '';
    const text = previewText(m);
    return who ? `${who}: ${text}` : text;
  }

  function renderConversations() {
    const list = $('conversation-list');
    const all = store.sortedConversations();
    const convs = all.filter((c) => !c.request); // message requests: views/privacy.js
    $('conversations-loader').hidden = store.conversationsLoaded;
    $('conversations-empty').hidden = !store.conversationsLoaded || convs.length > 0;
    let unreadChats = 0;
    renderKeyed(
      list,
      convs,
      (c) => c.id,
      (c) => {
        const partner = store.partnerOf(c);
        return JSON.stringify([
          store.titleOf(c),
          previewOf(c),
          c.unread_count || 0,
          shortWhen(parseTime(c.last_message?.created_at)),
          partner ? store.statusOf(partner) : '',
          store.activeId === c.id,
        ]);
      },
      (c) => {
        const partner = store.partnerOf(c);
        const title = store.titleOf(c);
        const unread = c.unread_count || 0;
        const when = parseTime(c.last_message?.created_at);
        const button = h(
          'button',
          {
            type: 'button',
            class: unread ? 'conv unread' : 'conv',
            dataset: { conversationId: c.id, focus: 'open' },
            attrs: store.activeId === c.id ? { 'aria-current': 'true' } : {},
            on: { click: () => openConversation(c.id) },
          },
          avatar(title, { status: partner ? store.statusOf(partner) : null, group: c.kind === 'group' }),
          h(
            'span',
            { class: 'row-main' },
            h('span', { class: 'row-top' }, c.encrypted ? h('span', { class: 'lock', title: 'End-to-end encrypted', text: '🔒' }) : null, h('span', { class: 'name', text: title }), c.encrypted ? h('span', { class: 'sr-only', text: ', encrypted' }) : null, partner ? h('span', { class: 'sr-only', text: `, ${store.statusOf(partner)}` }) : null, when ? h('time', { class: 'when', dateTime: c.last_message.created_at, text: shortWhen(when) }) : null),
            h(
              'span',
              { class: 'row-bottom' },
              h('span', { class: 'preview', text: previewOf(c) }),
              unread ? h('span', { class: 'badge unread-badge', text: String(unread), attrs: { 'aria-label': `${unread} unread` } }) : null,
            ),
          ),
        );
        return h('li', {}, button);
      },
    );
    for (const c of all) if (c.unread_count) unreadChats += 1;
    $('chats-badge').hidden = unreadChats === 0;
    $('chats-badge').textContent = String(unreadChats);
  }

  // -- people ---------------------------------------------------------------------------------

  function relationOf(userId) {
    if (store.blocked.has(userId)) return 'blocked';
    if (store.friends.has(userId)) return 'friend';
    for (const r of store.outgoing.values()) if (actions.requestPeer(r) === userId) return 'outgoing';
    for (const r of store.incoming.values()) if (actions.requestPeer(r) === userId) return 'incoming';
    return 'none';
  }

  function requestWith(userId, map) {
    for (const r of map.values()) if (actions.requestPeer(r) === userId) return r;
    return null;
  }

  const action = (label, fn, { kind = '', focus = label } = {}) => {
    const button = h('button', {
      type: 'button',
      class: `btn small ${kind}`.trim(),
      text: label,
      dataset: { focus },
    });
    button.addEventListener('click', () => withBusy(button, fn));
    return button;
  };

  /** Block after asking; true when blocked. */
  async function confirmBlock(userId) {
    const name = store.nameOf(userId);
    const sure = await confirmAction({
      title: `Block ${name}?`,
      message: `${name} will no longer be able to message you, send you friend requests or see when you are online. Your friendship ends. You can unblock later.`,
      confirm: 'Block',
    });
    return sure && actions.block(userId);
  }

  async function confirmRemoveFriend(userId) {
    const name = store.nameOf(userId);
    const sure = await confirmAction({
      title: `Remove ${name} from your friends?`,
      message: `You can send ${name} a new friend request later.`,
      confirm: 'Remove friend',
    });
    if (sure) await actions.removeFriend(userId);
  }

  /**
   * The rarely used and destructive actions of a person sit behind a "More" button (a
   * disclosure), not as a red button on every row.
   */
  function moreMenu(userId, items) {
    const menuId = `more-${userId}-${Math.random().toString(36).slice(2, 8)}`;
    const toggle = h('button', {
      type: 'button',
      class: 'btn small ghost more-toggle',
      text: 'More…',
      dataset: { focus: 'more' },
      attrs: { 'aria-expanded': 'false', 'aria-controls': menuId, 'aria-label': `More actions for ${store.nameOf(userId)}` },
    });
    const setOpen = (open) => {
      toggle.setAttribute('aria-expanded', String(open));
      menu.hidden = !open;
    };
    // Choosing an item closes the menu (its confirmation dialog returns focus to the toggle).
    const menu = h(
      'div',
      { class: 'row-menu', id: menuId, hidden: true },
      items.map(([label, fn]) =>
        action(label, () => {
          setOpen(false);
          toggle.focus();
          return fn();
        }, { kind: 'ghost' }),
      ),
    );
    toggle.addEventListener('click', () => setOpen(toggle.getAttribute('aria-expanded') !== 'true'));
    menu.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        setOpen(false);
        toggle.focus();
      }
    });
    return [toggle, menu];
  }

  async function message(userId) {
    const conv = store.dmWith(userId) || (await actions.openDm(userId));
    if (conv) openConversation(conv.id);
  }

  async function messageEncrypted(userId) {
    const conv = store.encryptedDmWith(userId) || (await actions.openDm(userId, true));
    if (conv) openConversation(conv.id);
  }

  function personActions(userId) {
    switch (relationOf(userId)) {
      case 'blocked':
        return [action('Unblock', () => actions.unblock(userId))];
      case 'friend':
        return [
          action('Message', () => message(userId), { kind: 'primary' }),
          ...moreMenu(userId, [
            ['New encrypted chat', () => messageEncrypted(userId)],
            ['Remove friend', () => confirmRemoveFriend(userId)],
            ['Block', () => confirmBlock(userId)],
          ]),
        ];
      case 'outgoing': {
        const r = requestWith(userId, store.outgoing);
        return [h('span', { class: 'tag', text: 'Request sent' }), action('Cancel request', () => actions.cancelRequest(r.id), { kind: 'ghost' })];
      }
      case 'incoming': {
        const r = requestWith(userId, store.incoming);
        return [
          action('Accept', () => actions.acceptRequest(r.id), { kind: 'primary' }),
          action('Decline', () => actions.declineRequest(r.id), { kind: 'ghost' }),
        ];
      }
      default:
        return [
          action('Add friend', () => actions.requestFriend(userId), { kind: 'primary' }),
          action('Message', () => message(userId)),
          ...moreMenu(userId, [
            ['New encrypted chat', () => messageEncrypted(userId)],
            ['Block', () => confirmBlock(userId)],
          ]),
        ];
    }
  }

  function personSignature(userId) {
    const u = store.user(userId) || {};
    return JSON.stringify([u.username, store.statusOf(userId), presenceText(u.status, u.last_seen), relationOf(userId)]);
  }

  function personRow(userId, actionsFor = personActions) {
    const u = store.user(userId) || { id: userId };
    const status = store.statusOf(userId);
    const blocked = store.blocked.has(userId);
    return h(
      'li',
      { class: 'row person', dataset: { userId, status } },
      avatar(u.username || '?'),
      h(
        'div',
        { class: 'row-main' },
        h('span', { class: 'row-title' }, blocked ? null : dot(status), h('span', { class: 'name', text: u.username || 'Unknown user' })),
        h('span', { class: 'row-sub presence', text: blocked ? 'blocked' : presenceText(status, u.last_seen) }),
        h('div', { class: 'row-actions' }, actionsFor(userId)),
      ),
    );
  }

  const renderPeople = (list, ids, actionsFor) =>
    renderKeyed(list, ids, (id) => id, (id) => personSignature(id), (id) => personRow(id, actionsFor));

  function renderFriends() {
    const ids = [...store.friends].sort((a, b) => store.nameOf(a).localeCompare(store.nameOf(b)));
    renderPeople($('friend-list'), ids);
    $('friends-empty').hidden = !store.friendsLoaded || ids.length > 0;
  }

  function renderDirectory() {
    const dir = store.directory;
    const ids = dir.ids.filter((id) => !store.friends.has(id) && !store.blocked.has(id));
    renderPeople($('directory-list'), ids);
    $('directory-loader').hidden = !dir.loading || ids.length > 0; // a refresh keeps the list in place
    $('directory-empty').hidden = dir.loading || ids.length > 0;
    $('directory-more').hidden = dir.loading || !dir.hasMore;
  }

  function renderBlocks() {
    const ids = [...store.blocked];
    renderPeople($('block-list'), ids);
    $('blocks-empty').hidden = ids.length > 0;
  }

  let codeResult = null;
  function renderCodeResult() {
    // Once a friend, the person is listed under Friends: no need to show it twice.
    if (codeResult && store.friends.has(codeResult)) codeResult = null;
    renderPeople($('code-result'), codeResult ? [codeResult] : []);
  }

  function renderRequests() {
    const incoming = [...store.incoming.values()];
    const outgoing = [...store.outgoing.values()];
    const requestActions = (request, incomingSide) => () =>
      incomingSide
        ? [
            action('Accept', () => actions.acceptRequest(request.id), { kind: 'primary' }),
            action('Decline', () => actions.declineRequest(request.id), { kind: 'ghost' }),
          ]
        : [action('Cancel request', () => actions.cancelRequest(request.id), { kind: 'ghost' })];
    const render = (list, requests, incomingSide) =>
      renderKeyed(
        list,
        requests,
        (r) => r.id,
        (r) => personSignature(actions.requestPeer(r)),
        (r) => personRow(actions.requestPeer(r), requestActions(r, incomingSide)),
      );
    render($('incoming-list'), incoming, true);
    render($('outgoing-list'), outgoing, false);
    $('incoming-empty').hidden = incoming.length > 0;
    $('outgoing-empty').hidden = outgoing.length > 0;
    $('requests-badge').hidden = incoming.length === 0;
    $('requests-badge').textContent = String(incoming.length);
    $('tab-requests').setAttribute('aria-label', incoming.length ? `Requests, ${incoming.length} incoming` : 'Requests');
  }

  function renderAllPeople() {
    renderFriends();
    renderDirectory();
    renderBlocks();
    renderCodeResult();
    renderRequests();
  }

  // Views redraw once per burst of changes, not once per event.
  const scheduled = new Set();
  const schedule = (fn) => {
    if (scheduled.has(fn)) return;
    scheduled.add(fn);
    queueMicrotask(() => {
      scheduled.delete(fn);
      fn();
    });
  };
  for (const topic of ['conversations', 'active', 'users']) store.on(topic, () => schedule(renderConversations));
  for (const topic of ['users', 'friends', 'requests', 'blocks', 'directory']) store.on(topic, () => schedule(renderAllPeople));
  setInterval(() => store.emit('users'), CLOCK_TICK_MS);

  // -- forms ----------------------------------------------------------------------------------

  let searchTimer = null;
  $('user-search').addEventListener('input', (event) => {
    clearTimeout(searchTimer);
    const query = event.target.value.trim();
    searchTimer = setTimeout(() => actions.searchDirectory(query), SEARCH_DELAY_MS);
  });
  $('directory-more').addEventListener('click', (event) =>
    withBusy(event.currentTarget, () => actions.searchDirectory(store.directory.query, { more: true })),
  );

  const codeInput = $('code-input');
  codeInput.addEventListener('input', () => setFieldError(codeInput, ''));
  $('code-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const problem = checkFriendCode(codeInput.value);
    setFieldError(codeInput, problem);
    if (problem) {
      codeInput.focus();
      return;
    }
    const code = normalizeFriendCode(codeInput.value);
    if (store.me && normalizeFriendCode(store.me.friend_code || '') === code) {
      setFieldError(codeInput, 'That is your own friend code.');
      return;
    }
    try {
      const user = await withBusy(event.submitter || $('code-form').querySelector('button'), () => actions.findByCode(code));
      codeResult = user.id;
      renderCodeResult();
    } catch (err) {
      codeResult = null;
      renderCodeResult();
      setFieldError(codeInput, err.status === 404 ? 'Nobody has this friend code.' : err.message);
      if (err.status !== 404 && err.status !== 400) toast(err.message, 'error');
    }
  });

  return {
    selectTab,
    confirmBlock,
    reset() {
      codeResult = null;
      codeInput.value = '';
      $('user-search').value = '';
      setFieldError(codeInput, '');
      for (const id of ['conversation-list', 'friend-list', 'directory-list', 'block-list', 'code-result', 'incoming-list', 'outgoing-list']) {
        $(id).replaceChildren();
      }
      // Nothing of the signed-out user stays in the (hidden) header either.
      $('me-name').textContent = '';
      $('my-code').textContent = '';
      $('me-avatar').replaceWith(Object.assign(avatar(''), { id: 'me-avatar' }));
      const box = $('transport');
      box.dataset.mode = 'websocket';
      box.dataset.status = 'connecting';
      $('transport-label').textContent = TRANSPORT_LABELS.connecting('websocket');
      selectTab('tab-chats');
    },
  };
}
