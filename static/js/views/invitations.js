// Invitations (to a game): the card an invitation message shows in the chat, with a live
// countdown and its answers, and the composer's "Invite to a game" dialog. The card's final
// state comes from invitation.updated (actions.js takes it as any change of a message).

import { $, h, setFieldError } from '../dom.js';

const STATUS_TEXT = {
  pending: 'Waiting for an answer',
  accepted: 'Accepted',
  declined: 'Declined',
  cancelled: 'Cancelled',
  expired: 'Expired',
};

/** "4:59" left, or null once the time is up. */
function remaining(expiresAt) {
  const secs = Math.ceil((Date.parse(expiresAt) - Date.now()) / 1000);
  if (secs <= 0) return null;
  const hours = Math.floor(secs / 3600);
  const mins = Math.floor((secs % 3600) / 60);
  const rest = String(secs % 60).padStart(2, '0');
  return hours ? `${hours}:${String(mins).padStart(2, '0')}:${rest}` : `${mins}:${rest}`;
}

/** The state as now: a pending invitation whose time is up is expired, event or not. */
export function invitationStatus(inv) {
  return inv.status === 'pending' && !remaining(inv.expires_at) ? 'expired' : inv.status;
}

/** The signature part of an invitation (the chat redraws a message when it changes). */
export const invitationSignature = (m) => (m.invitation ? [m.invitation.status, m.invitation.match_id] : null);

/** The card of an invitation message: who invites to what, the time left, and the buttons of
 * whoever may answer (the invited: Accept / Decline; the inviter: Cancel). */
export function invitationCard({ m, me, conv, nameOf, onAnswer }) {
  const inv = m.invitation;
  // Whom it is for: `to`, or in a DM the other member; in a group without `to`, every member.
  const invitee = inv.to || (conv.kind === 'dm' ? conv.members?.find((x) => x.user_id !== inv.from)?.user_id : null);
  const whom = invitee ? (invitee === me ? 'you' : nameOf(invitee)) : 'everyone';
  const mine = inv.from === me;
  const mayAnswer = !mine && (!inv.to || inv.to === me);
  const status = h('p', { class: 'invitation-status', attrs: { 'aria-live': 'polite' } });
  const buttons = h('div', { class: 'invitation-actions' });
  const answer = (verb, label) =>
    h('button', {
      type: 'button',
      class: verb === 'accept' ? 'btn primary' : 'btn',
      text: label,
      attrs: { 'aria-label': `${label} the invitation to ${inv.game}` },
      on: { click: (event) => { event.currentTarget.disabled = true; onAnswer(inv.id, verb); } },
    });
  const card = h(
    'div',
    { class: 'invitation-card', dataset: { status: inv.status, invitationId: inv.id } },
    h('p', { class: 'invitation-title', text: `${mine ? 'You' : nameOf(inv.from)} invited ${whom} to ${inv.game}` }),
    status,
    buttons,
  );
  let timer = null;
  const tick = () => {
    const now = invitationStatus(inv);
    card.dataset.status = now;
    const left = now === 'pending' ? remaining(inv.expires_at) : null;
    status.textContent = left ? `${STATUS_TEXT.pending}, ${left} left` : STATUS_TEXT[now] || now;
    if (now !== 'pending') {
      buttons.replaceChildren();
      clearInterval(timer);
    }
    if (!card.isConnected && timer !== null && card.dataset.seen) clearInterval(timer);
    if (card.isConnected) card.dataset.seen = '1';
  };
  if (invitationStatus(inv) === 'pending') {
    if (mayAnswer) buttons.append(answer('accept', 'Accept'), answer('decline', 'Decline'));
    if (mine) buttons.append(answer('cancel', 'Cancel'));
    timer = setInterval(tick, 1000);
  }
  tick();
  return card;
}

/** The composer's "Invite to a game" button and its dialog. */
export function setupInviteAction({ actions, store }) {
  const game = h('input', { id: 'invite-game', type: 'text', maxLength: 64, required: true, attrs: { 'aria-describedby': 'invite-game-error' } });
  const minutes = h('input', { id: 'invite-minutes', type: 'number', min: 1, max: 1440, value: 10 });
  const dialog = h(
    'dialog',
    { class: 'invite-dialog', id: 'invite-dialog', attrs: { 'aria-labelledby': 'invite-heading' } },
    h(
      'form',
      { method: 'dialog', on: { submit: (event) => submit(event) } },
      h('h2', { id: 'invite-heading', text: 'Invite to a game' }),
      h('label', { text: 'Game', attrs: { for: 'invite-game' } }),
      game,
      h('p', { class: 'field-error', id: 'invite-game-error' }),
      h('label', { text: 'Minutes to answer', attrs: { for: 'invite-minutes' } }),
      minutes,
      h(
        'div',
        { class: 'invite-buttons' },
        h('button', { type: 'button', class: 'btn', text: 'Cancel', on: { click: () => dialog.close() } }),
        h('button', { type: 'submit', class: 'btn primary', id: 'invite-send', text: 'Send invitation' }),
      ),
    ),
  );
  document.body.append(dialog);
  async function submit(event) {
    event.preventDefault();
    const name = game.value.trim();
    if (!name) {
      setFieldError(game, 'Name the game.');
      return;
    }
    const mins = Number(minutes.value) || 10;
    const ttl = Math.min(86400, Math.max(10, Math.round(mins * 60)));
    dialog.close();
    if (store.activeId) await actions.sendInvitation(store.activeId, name, ttl);
  }
  const button = h('button', {
    type: 'button',
    class: 'btn ghost small invite-open',
    id: 'invite-open',
    text: '🎲',
    title: 'Invite to a game',
    attrs: { 'aria-label': 'Invite to a game' },
    on: {
      click: () => {
        game.value = '';
        setFieldError(game, '');
        dialog.showModal();
        game.focus();
      },
    },
  });
  $('chat-members').before(button); // in the header: the composer row is full on a phone
}
