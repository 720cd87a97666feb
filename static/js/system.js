// System lines in a group's timeline ("alice added bob", "bob left", "alice renamed the group
// to …"), made from the group.* events as they arrive. History has no such records: the lines
// live in memory, in the timeline of the conversation, for as long as the page is open.
//
// group.updated says only who changed the group, not what changed: each group's last known
// state (name, roles) is kept beside its timeline and compared with the event's. That state
// is taken from the conversation list once, then moved on by events only, so that the reply
// to the user's own change (which may come before its event) does not hide the change.

const ROLE_NAMES = { owner: 'the owner', admin: 'an admin', member: 'a member' };

function stateOf(conv) {
  return { name: conv.name || '', roles: new Map((conv.members || []).map((m) => [m.user_id, m.role])) };
}

/** Remember the state of every group that has none yet (call when the list is loaded). */
export function rememberGroups(store) {
  for (const conv of store.conversations.values()) {
    if (conv.kind !== 'group') continue;
    const timeline = store.timeline(conv.id);
    if (!timeline.groupState) timeline.groupState = stateOf(conv);
  }
}

/** The lines of the system messages of one conversation, oldest first. */
export const systemLines = (timeline) => timeline.system || [];

let nextLineId = 1;

/** A line of our own in a conversation's timeline, after its newest message (e2e notices). */
export function addSystemLine(store, conversationId, text) {
  const timeline = store.timeline(conversationId);
  const line = { id: nextLineId++, text, afterSeq: timeline.lastSeq, at: new Date().toISOString() };
  timeline.system = [...systemLines(timeline), line];
  store.emit('timeline', conversationId);
}

/** Turn a group event into system lines of its conversation (before the store applies it). */
export function noteGroupEvent(store, event) {
  const conv = event.conversation;
  if (!conv || !conv.id) return;
  const meId = store.me?.id;
  const timeline = store.timeline(conv.id);
  const before = timeline.groupState || null;
  const after = stateOf(conv);
  timeline.groupState = after;
  if (event.type === 'group.member_removed' && event.user_id === meId) return; // the group goes
  const usernames = new Map((conv.members || []).map((m) => [m.user_id, m.username]));
  const who = (id, start = false) => (id === meId ? (start ? 'You' : 'you') : usernames.get(id) || store.nameOf(id));
  const names = (ids) => ids.map((id) => who(id)).join(', ');
  const lines = [];
  switch (event.type) {
    case 'group.created': {
      const owner = [...after.roles].find(([, role]) => role === 'owner')?.[0];
      lines.push(owner ? `${who(owner, true)} created the group` : 'The group was created');
      break;
    }
    case 'group.member_added': {
      const added = (event.user_ids || []).filter((id) => id !== event.by);
      if (added.length) lines.push(`${who(event.by, true)} added ${names(added)}`);
      break;
    }
    case 'group.member_removed':
      lines.push(event.user_id === event.by ? `${who(event.user_id, true)} left` : `${who(event.by, true)} removed ${who(event.user_id)}`);
      if (before) {
        for (const [id, role] of after.roles) {
          if (role === 'owner' && before.roles.get(id) !== 'owner') lines.push(`${who(id, true)} ${id === meId ? 'are' : 'is'} now the owner`);
        }
      }
      break;
    case 'group.updated':
      if (!before) break; // what changed cannot be told
      if (after.name !== before.name) lines.push(`${who(event.by, true)} renamed the group to “${after.name}”`);
      for (const [id, role] of after.roles) {
        const was = before.roles.get(id);
        if (was && was !== role) lines.push(`${who(event.by, true)} made ${who(id)} ${ROLE_NAMES[role] || role}`);
      }
      break;
    default:
      break;
  }
  if (!lines.length) return;
  // The event comes after every message up to the group's last seq, and before any later one.
  const afterSeq = Number.isInteger(conv.last_seq) ? conv.last_seq : timeline.lastSeq;
  const at = new Date().toISOString();
  timeline.system = [...systemLines(timeline), ...lines.map((text) => ({ id: nextLineId++, text, afterSeq, at }))];
  store.emit('timeline', conv.id);
}
