// Privacy: the "who may start a conversation with me" setting, and message requests (a DM a
// stranger started: listed under "Message requests" until I reply or accept it).

import { path } from '../api.js';
import { $, avatar, h, renderKeyed, toast, withBusy } from '../dom.js';
import { previewText } from '../files.js';
import { parseTime, shortWhen } from '../format.js';

export function setupPrivacy({ api, store, actions, openConversation }) {
  const toasted = new Set(); // request conversations already announced with a toast

  function requests() {
    return store.sortedConversations().filter((c) => c.request);
  }

  function previewOf(conv) {
    return conv.last_message ? previewText(conv.last_message) : 'No messages yet';
  }

  function renderList() {
    const list = requests();
    $('dm-requests').hidden = list.length === 0;
    renderKeyed(
      $('dm-request-list'),
      list,
      (c) => c.id,
      (c) => JSON.stringify([store.titleOf(c), previewOf(c), c.unread_count || 0, store.activeId === c.id]),
      (c) => {
        const title = store.titleOf(c);
        const when = parseTime(c.last_message?.created_at);
        const unread = c.unread_count || 0;
        return h(
          'li',
          {},
          h(
            'button',
            {
              type: 'button',
              class: unread ? 'conv unread' : 'conv',
              dataset: { conversationId: c.id, focus: 'open' },
              attrs: store.activeId === c.id ? { 'aria-current': 'true' } : {},
              on: { click: () => openConversation(c.id) },
            },
            avatar(title),
            h(
              'span',
              { class: 'row-main' },
              h(
                'span',
                { class: 'row-top' },
                h('span', { class: 'name', text: title }),
                when ? h('time', { class: 'when', dateTime: c.last_message.created_at, text: shortWhen(when) }) : null,
              ),
              h(
                'span',
                { class: 'row-bottom' },
                h('span', { class: 'preview', text: previewOf(c) }),
                unread ? h('span', { class: 'badge unread-badge', text: String(unread), attrs: { 'aria-label': `${unread} unread` } }) : null,
              ),
            ),
          ),
        );
      },
    );
  }

  function renderBar() {
    const conv = store.activeId && store.conversations.get(store.activeId);
    const bar = $('request-bar');
    bar.hidden = !conv?.request;
    if (conv?.request) {
      $('request-bar-text').textContent = `${store.titleOf(conv)} wants to message you. Reply or accept to move the conversation out of your requests.`;
    }
  }

  const render = () => {
    renderList();
    renderBar();
  };
  let scheduled = false;
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      render();
    });
  };
  for (const topic of ['conversations', 'active', 'users']) store.on(topic, schedule);

  function settle(conversationId) {
    const conv = store.conversations.get(conversationId);
    if (conv?.request) {
      conv.request = false;
      store.emit('conversations');
    }
  }

  async function accept(conversationId) {
    const reply = await actions.guard(api.post(path`/api/conversations/${conversationId}/accept`), 'Could not accept');
    if (reply?.conversation) {
      store.upsertConversation(reply.conversation);
      store.emit('conversations');
    }
  }

  $('request-accept').addEventListener('click', (event) => {
    const id = store.activeId;
    if (id) withBusy(event.currentTarget, () => accept(id));
  });

  return {
    /** Called with every event after the store has taken it. */
    async onEvent(event) {
      if (event.type === 'conversation.accepted') {
        settle(event.conversation_id);
        return;
      }
      if (event.type !== 'message.new' || !event.message) return;
      const m = event.message;
      if (m.sender_id === store.me?.id) return;
      let conv = store.conversations.get(m.conversation_id);
      if (!conv) {
        await actions.reloadConversationsSoon();
        conv = store.conversations.get(m.conversation_id);
      }
      if (conv?.request && !toasted.has(conv.id)) {
        toasted.add(conv.id);
        toast(`${store.nameOf(m.sender_id)} wants to message you.`);
      }
    },
    /** {dm_policy}; throws ApiError. */
    async getSettings() {
      return (await api.get('/api/me/settings')).settings;
    },
    async setDmPolicy(policy) {
      return (await api.patch('/api/me/settings', { dm_policy: policy })).settings;
    },
    reset() {
      toasted.clear();
      $('dm-request-list').replaceChildren();
      $('dm-requests').hidden = true;
      $('request-bar').hidden = true;
    },
  };
}
