// Group creation (name + friends) and the group panel: members with roles, add, remove,
// promote, rename, leave.

import { $, avatar, confirmAction, dot, h, renderKeyed, setFieldError, withBusy } from '../dom.js';
import { checkGroupName } from '../validation.js';

const ROLE_LABELS = { owner: 'Owner', admin: 'Admin', member: 'Member' };
const ROLE_RANK = { owner: 0, admin: 1, member: 2 };

export function setupGroups({ store, actions, openConversation }) {
  const createDialog = $('group-dialog');
  const panel = $('members-dialog');
  const nameInput = $('group-name');
  let panelId = null; // the group shown in the panel

  // -- create ---------------------------------------------------------------------------------

  function openCreate() {
    nameInput.value = '';
    setFieldError(nameInput, '');
    $('group-form-error').textContent = '';
    const friends = [...store.friends].sort((a, b) => store.nameOf(a).localeCompare(store.nameOf(b)));
    $('group-friends').replaceChildren(
      ...friends.map((id) =>
        h(
          'li',
          {},
          h(
            'label',
            {},
            h('input', { type: 'checkbox', name: 'member', value: id }),
            avatar(store.nameOf(id), { status: store.statusOf(id) }),
            h('span', { text: store.nameOf(id) }),
          ),
        ),
      ),
    );
    $('group-friends-empty').hidden = friends.length > 0;
    createDialog.showModal();
    nameInput.focus();
  }

  $('new-group').addEventListener('click', openCreate);
  $('group-cancel').addEventListener('click', () => createDialog.close());
  nameInput.addEventListener('input', () => nameInput.getAttribute('aria-invalid') && setFieldError(nameInput, checkGroupName(nameInput.value)));

  $('group-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const problem = checkGroupName(nameInput.value);
    setFieldError(nameInput, problem);
    if (problem) {
      nameInput.focus();
      return;
    }
    const memberIds = [...$('group-friends').querySelectorAll('input:checked')].map((box) => box.value);
    try {
      const conv = await withBusy($('group-create'), () => actions.createGroup(nameInput.value.trim(), memberIds));
      createDialog.close();
      openConversation(conv.id);
    } catch (err) {
      if (err.field === 'name') setFieldError(nameInput, err.message);
      else $('group-form-error').textContent = err.message;
    }
  });

  // -- the group panel ------------------------------------------------------------------------

  function renderPanel() {
    const conv = store.conversations.get(panelId);
    if (!conv) {
      if (panel.open) panel.close();
      return;
    }
    const meId = store.me?.id;
    const myRole = store.roleOf(conv, meId);
    const canManage = myRole === 'owner' || myRole === 'admin';
    $('members-dialog-title').textContent = conv.name || 'Group';
    $('rename-form').hidden = !canManage;
    if (document.activeElement !== $('rename-input')) $('rename-input').value = conv.name || '';

    const members = [...(conv.members || [])].sort(
      (a, b) => ROLE_RANK[a.role] - ROLE_RANK[b.role] || store.nameOf(a.user_id).localeCompare(store.nameOf(b.user_id)),
    );
    renderKeyed(
      $('member-list'),
      members,
      (m) => m.user_id,
      (m) => JSON.stringify([store.nameOf(m.user_id), m.role, store.statusOf(m.user_id), myRole]),
      (m) => {
        const buttons = [];
        const self = m.user_id === meId;
        if (canManage && !self && m.role !== 'owner') {
          // Roles are the owner's to give; admins add and remove members.
          if (myRole === 'owner' && m.role === 'member') buttons.push(button('Make admin', () => actions.setRole(conv.id, m.user_id, 'admin'), 'promote'));
          if (myRole === 'owner' && m.role === 'admin') buttons.push(button('Make member', () => actions.setRole(conv.id, m.user_id, 'member'), 'demote'));
          if (myRole === 'owner' || m.role === 'member') {
            buttons.push(button('Remove', () => confirmRemove(conv, m.user_id), 'remove', 'ghost danger'));
          }
        }
        return h(
          'li',
          { class: 'row member', dataset: { userId: m.user_id, role: m.role } },
          avatar(store.nameOf(m.user_id)),
          h(
            'div',
            { class: 'row-main' },
            h(
              'span',
              { class: 'row-title' },
              dot(store.statusOf(m.user_id)),
              h('span', { class: 'name', text: self ? `${store.nameOf(m.user_id)} (you)` : store.nameOf(m.user_id) }),
              h('span', { class: 'tag role', text: ROLE_LABELS[m.role] || m.role }),
            ),
            buttons.length ? h('div', { class: 'row-actions' }, buttons) : null,
          ),
        );
      },
    );

    const inGroup = new Set(members.map((m) => m.user_id));
    const candidates = [...store.friends].filter((id) => !inGroup.has(id));
    $('add-member-form').hidden = !canManage;
    const select = $('add-member-select');
    const chosen = select.value;
    select.replaceChildren(
      h('option', { value: '', text: candidates.length ? 'Choose a friend…' : 'All your friends are in the group' }),
      ...candidates.map((id) => h('option', { value: id, text: store.nameOf(id) })),
    );
    if (candidates.includes(chosen)) select.value = chosen;
  }

  async function confirmRemove(conv, userId) {
    const name = store.nameOf(userId);
    const sure = await confirmAction({
      title: `Remove ${name}?`,
      message: `${name} will no longer be in ${conv.name || 'the group'}: no new messages, no sending. What was said before stays readable to ${name}.`,
      confirm: 'Remove',
    });
    if (sure) await actions.removeMember(conv.id, userId);
  }

  function button(label, fn, focus, kind = '') {
    const b = h('button', { type: 'button', class: `btn small ${kind}`.trim(), text: label, dataset: { focus } });
    b.addEventListener('click', () => withBusy(b, fn));
    return b;
  }

  $('rename-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('rename-input');
    const problem = checkGroupName(input.value);
    setFieldError(input, problem);
    if (problem) return;
    try {
      await withBusy($('rename-form').querySelector('button'), () => actions.renameGroup(panelId, input.value.trim()));
      input.blur();
      renderPanel();
    } catch (err) {
      setFieldError(input, err.message);
    }
  });

  $('add-member-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const userId = $('add-member-select').value;
    if (!userId) return;
    await withBusy($('add-member-form').querySelector('button'), () => actions.addMembers(panelId, [userId]));
  });

  $('leave-group').addEventListener('click', async (event) => {
    const button = event.currentTarget;
    const conv = store.conversations.get(panelId);
    const id = panelId;
    const sure = await confirmAction({
      title: `Leave ${conv?.name || 'the group'}?`,
      message: 'You will no longer get its messages or be able to write there. Someone in the group has to add you again to come back.',
      confirm: 'Leave group',
    });
    if (!sure || id !== panelId) return;
    const left = await withBusy(button, () => actions.removeMember(id, store.me.id));
    if (left && panel.open) panel.close();
  });
  $('members-close').addEventListener('click', () => panel.close());
  panel.addEventListener('close', () => {
    panelId = null;
  });

  for (const topic of ['conversations', 'users', 'friends']) store.on(topic, () => panelId && renderPanel());

  return {
    openPanel(conversationId) {
      panelId = conversationId;
      setFieldError($('rename-input'), '');
      renderPanel();
      panel.showModal();
    },
    closeAll() {
      if (panel.open) panel.close();
      if (createDialog.open) createDialog.close();
    },
  };
}
