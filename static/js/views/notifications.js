// The notification centre: the bell in the sidebar's header with the unread count, and its
// list (newest first, "Mark all read"; an entry with a conversation opens it). Kept current by
// notification.new and notifications.read, which every tab of the user receives.

import { $, h, toast } from '../dom.js';
import { fullTime, parseTime, shortWhen } from '../format.js';

const PAGE = 20;

/** What a notification says, as text. */
export function notificationText(n) {
  const who = n.actor?.username ?? 'Someone';
  const data = n.data || {};
  switch (n.kind) {
    case 'friend.request':
      return `${who} sent you a friend request`;
    case 'friend.accepted':
      return `${who} accepted your friend request`;
    case 'group.added':
      return `${who} added you to ${data.name ?? 'a group'}`;
    case 'mention':
      return data.excerpt ? `${who} mentioned you: ${data.excerpt}` : `${who} mentioned you`;
    case 'invitation':
      return `${who} invited you to ${data.game || 'a game'}`;
    case 'invitation.answered':
      return `${who} ${data.status === 'accepted' ? 'accepted' : 'declined'} your invitation to ${data.game || 'a game'}`;
    case 'system':
      return [data.title, data.body].filter(Boolean).join(': ');
    default:
      return 'New notification';
  }
}

export function setupNotifications({ api, openConversation }) {
  const bell = $('notifications-bell');
  const badge = $('notifications-badge');
  const panel = $('notifications-panel');
  const list = $('notification-list');
  const more = $('notifications-more');
  let items = []; // newest first
  let unread = 0;
  let hasMore = false;
  let changes = 0; // events applied: an answer asked for before one is older than they are

  function showCount() {
    badge.hidden = unread === 0;
    badge.textContent = unread > 99 ? '99+' : String(unread);
    bell.setAttribute('aria-label', unread ? `Notifications, ${unread} unread` : 'Notifications');
  }

  function entry(n) {
    const when = parseTime(n.created_at);
    const body = [
      h('span', { class: 'notification-text', text: notificationText(n) }),
      h('time', {
        class: 'notification-time',
        text: shortWhen(when),
        attrs: { datetime: n.created_at, title: fullTime(when) },
      }),
    ];
    const props = { class: 'notification', dataset: { read: String(n.read), kind: n.kind } };
    if (!n.conversation_id) return h('li', {}, h('div', props, ...body));
    const open = () => {
      if (!n.read) markRead([n.id]);
      close();
      openConversation(n.conversation_id);
    };
    return h('li', {}, h('button', { ...props, type: 'button', on: { click: open } }, ...body));
  }

  function render() {
    showCount();
    list.replaceChildren(...items.map(entry));
    $('notifications-empty').hidden = items.length > 0;
    more.hidden = !hasMore;
  }

  async function load(before = null) {
    try {
      let asked;
      let page;
      // An event that came while the page was on its way is newer than it: ask again (a new
      // notification would be missing, the count too low).
      for (let tries = 0; tries < 3 && asked !== changes; tries += 1) {
        asked = changes;
        page = await api.get('/api/notifications', { limit: PAGE, before });
      }
      const fresh = asked === changes; // else still changing after three: the events' word stands
      if (before) {
        const have = new Set(items.map((n) => n.id));
        items = [...items, ...page.notifications.filter((n) => !have.has(n.id))];
      } else {
        const shown = new Set(page.notifications.map((n) => n.id));
        items = [...(fresh ? [] : items.filter((n) => !shown.has(n.id))), ...page.notifications];
      }
      if (fresh) unread = page.unread_count;
      hasMore = page.has_more;
      render();
    } catch (err) {
      if (err.status !== 401) toast(`Notifications could not be loaded: ${err.message}`, 'error');
    }
  }

  async function markRead(ids) {
    const reply = await api.post('/api/notifications/read', ids ? { ids } : { all: true });
    for (const n of items) if (!ids || ids.includes(n.id)) n.read = true;
    unread = reply.unread_count;
    render();
  }

  function open() {
    panel.hidden = false;
    bell.setAttribute('aria-expanded', 'true');
    load();
  }

  function close() {
    if (panel.hidden) return;
    panel.hidden = true;
    bell.setAttribute('aria-expanded', 'false');
  }

  bell.addEventListener('click', () => (panel.hidden ? open() : close()));
  // Escape closes the list from inside it or from the bell (a dialog's Escape is the dialog's).
  document.addEventListener('keydown', (event) => {
    const at = document.activeElement;
    if (event.key !== 'Escape' || panel.hidden) return;
    if (!(panel.contains(at) || at === bell || at === document.body)) return;
    close();
    bell.focus();
  });
  // Not disabled while it runs: the focus stays on it (a disabled button drops it).
  $('notifications-read-all').addEventListener('click', () =>
    markRead(null).catch((err) => toast(err.message, 'error')),
  );
  more.addEventListener('click', () => load(items.at(-1)?.id ?? null));

  return {
    load,
    onEvent(event) {
      if (event.type === 'notification.new') {
        changes += 1;
        const n = event.notification;
        if (!items.some((i) => i.id === n.id)) items.unshift(n);
        unread = event.unread_count;
        render();
      } else if (event.type === 'notifications.read') {
        changes += 1;
        unread = event.unread_count;
        if (unread === 0) for (const n of items) n.read = true;
        render();
        if (unread && !panel.hidden) load(); // which ones: the list says
      }
    },
    reset() {
      close();
      items = [];
      unread = 0;
      hasMore = false;
      render();
    },
  };
}
