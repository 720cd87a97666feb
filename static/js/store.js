// Client state: one place holds what the server told us; views subscribe to topics and redraw.
//
// Topics: 'me', 'transport', 'users' (names, presence), 'conversations', 'friends', 'requests',
// 'blocks', 'directory', 'timeline' (detail: conversation id), 'typing' (conversation id),
// 'receipts' (conversation id), 'active', 'outbox'.

const TYPING_SHOWN_MS = 6000; // the sender repeats typing every few seconds while it types

/** The messages of one conversation: confirmed ones sorted by seq, then our pending sends. */
export class Timeline {
  constructor(conversationId) {
    this.conversationId = conversationId;
    this.messages = [];
    this.byId = new Map();
    // Our sends not yet confirmed, in the order they were written: client_msg_id ->
    // {client_msg_id, body, state: 'sending'|'queued'|'failed', created_at, order}. 'queued'
    // waits for the connection (the outbox in actions.js keeps them across a reload).
    this.pending = new Map();
    this.loaded = false; // the newest page was read
    this.hasMore = true; // older messages exist on the server
    this.loadingOlder = false;
    this.stale = false; // may miss messages (the event queue was lost): catch up when shown
    this.reads = new Map(); // user id -> last read seq (read receipts of the others)
  }

  get lastSeq() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : 0;
  }

  get firstSeq() {
    return this.messages.length ? this.messages[0].seq : 0;
  }

  /** Merge messages; each appears once however often it arrives. Returns those that were new. */
  add(messages) {
    const fresh = [];
    for (const m of messages) {
      if (this.byId.has(m.id)) continue;
      this.byId.set(m.id, m);
      if (m.client_msg_id) this.pending.delete(m.client_msg_id);
      fresh.push(m);
    }
    if (!fresh.length) return fresh;
    const tail = this.lastSeq;
    if (fresh.every((m) => m.seq > tail)) {
      fresh.sort((a, b) => a.seq - b.seq);
      this.messages.push(...fresh);
    } else {
      this.messages.push(...fresh);
      this.messages.sort((a, b) => a.seq - b.seq);
    }
    return fresh;
  }

  /** A message we hold, in a newer state (edited, or a tombstone); false when not loaded. */
  replace(message) {
    if (!this.byId.has(message.id)) return false;
    this.byId.set(message.id, message);
    const i = this.messages.findIndex((m) => m.id === message.id);
    if (i >= 0) this.messages[i] = message;
    return true;
  }
}

export class Store {
  constructor() {
    this.listeners = new Map();
    this.reset();
  }

  reset() {
    this.me = null;
    this.transport = { mode: 'websocket', status: 'connecting' };
    this.users = new Map(); // id -> {id, username, last_seen, status}
    this.conversations = new Map();
    this.conversationsLoaded = false;
    // Each change an event or a reply makes (to a conversation, a friend, a request, a block)
    // ticks the clock: a list answer asked for before a change does not undo it (changedSince).
    this.clock = 0;
    this.changed = new Map(); // key (a conversation id, `friend:<user id>`, ...) -> clock
    this.timelines = new Map();
    this.friends = new Set();
    this.friendsLoaded = false;
    this.incoming = new Map(); // request id -> request
    this.outgoing = new Map();
    this.requestsLoaded = false;
    this.blocked = new Set(); // users I blocked
    this.blockedBy = new Set(); // users whose block stands against me (told by a presence event or a 403)
    this.directory = { query: '', ids: [], hasMore: false, loading: false, cursor: null };
    this.typing = new Map(); // conversation id -> Map(user id -> expires at)
    this.activeId = null;
    for (const timer of this.typingTimers || []) clearTimeout(timer);
    this.typingTimers = new Set();
  }

  on(topic, fn) {
    if (!this.listeners.has(topic)) this.listeners.set(topic, new Set());
    this.listeners.get(topic).add(fn);
    return () => this.listeners.get(topic).delete(fn);
  }

  emit(topic, detail) {
    for (const fn of this.listeners.get(topic) || []) {
      try {
        fn(detail);
      } catch (err) {
        console.error(`listener of ${topic} failed`, err);
      }
    }
  }

  // -- users and presence ---------------------------------------------------------------------

  /** Merge what the server says about a user; fields it did not send are kept. */
  upsertUser(user) {
    if (!user || !user.id) return;
    const prev = this.users.get(user.id) || {};
    const next = { ...prev };
    for (const [k, v] of Object.entries(user)) if (v !== undefined) next[k] = v;
    if (typeof user.presence === 'string') next.status = user.presence;
    else if (user.presence && typeof user.presence === 'object') {
      if (user.presence.status) next.status = user.presence.status;
      if (user.presence.last_seen !== undefined) next.last_seen = user.presence.last_seen;
    }
    this.users.set(user.id, next);
  }

  setPresence(userId, status, lastSeen) {
    const user = this.users.get(userId) || { id: userId };
    this.users.set(userId, { ...user, status, last_seen: lastSeen ?? user.last_seen ?? null });
    this.emit('users');
  }

  user(id) {
    return this.users.get(id) || null;
  }

  nameOf(id) {
    if (this.me && id === this.me.id) return this.me.username;
    return this.users.get(id)?.username || 'Unknown user';
  }

  statusOf(id) {
    if (this.me && id === this.me.id) return 'online'; // this very page is connected
    return this.users.get(id)?.status === 'online' ? 'online' : 'offline';
  }

  // -- conversations --------------------------------------------------------------------------

  upsertConversation(conv) {
    this.touchConversation(conv.id);
    const prev = this.conversations.get(conv.id);
    const next = { ...(prev || {}), ...conv };
    // A last message we already have that is newer than the one in a (stale) answer wins.
    if (prev?.last_message && conv.last_message && prev.last_message.seq > conv.last_message.seq) {
      next.last_message = prev.last_message;
    }
    for (const member of next.members || []) {
      // A deleted account stays a member of its DMs, as "Deleted user" (deleted: true).
      if (member.username) this.upsertUser({ id: member.user_id, username: member.username, deleted: member.deleted || undefined });
    }
    // A DM a block closes: when the block is not mine, it is the partner's (after a reload
    // nothing else says so until a send is refused).
    if (conv.kind === 'dm' && typeof conv.blocked === 'boolean' && this.me) {
      const partner = (next.members || []).find((m) => m.user_id !== this.me.id)?.user_id;
      if (partner && conv.blocked && !this.blocked.has(partner)) this.blockedBy.add(partner);
      if (partner && !conv.blocked) this.blockedBy.delete(partner);
    }
    this.conversations.set(conv.id, next);
    return next;
  }

  removeConversation(id) {
    this.touchConversation(id);
    this.conversations.delete(id);
  }

  touchConversation(id) {
    this.touch(id);
  }

  touch(key) {
    this.clock += 1;
    this.changed.set(key, this.clock);
  }

  /** Whether `key` (a conversation id, `friend:<user id>`, ...) changed after the clock read `mark`. */
  changedSince(key, mark) {
    return (this.changed.get(key) || 0) > mark;
  }

  /**
   * What a list answer asked for when the clock read `asked` leaves of `current`: the answer's
   * [id, value] entries, except those an event or a reply changed since (keys `kind:id`), which
   * stay as that change left them. Returns a Map.
   */
  merged(kind, current, loaded, asked) {
    const changed = (id) => this.changedSince(`${kind}:${id}`, asked);
    const next = new Map([...loaded].filter(([id]) => !changed(id)));
    for (const [id, value] of current) if (changed(id)) next.set(id, value);
    return next;
  }

  setFriend(userId, friend) {
    this.touch(`friend:${userId}`);
    if (friend) this.friends.add(userId);
    else this.friends.delete(userId);
  }

  setBlocked(userId, blocked) {
    this.touch(`block:${userId}`);
    if (blocked) this.blocked.add(userId);
    else this.blocked.delete(userId);
  }

  activity(conv) {
    const times = [conv.last_message?.created_at, conv.last_activity_at, conv.created_at].filter(Boolean);
    return times.length ? Math.max(...times.map((t) => Date.parse(t))) : 0;
  }

  /** Newest activity first. */
  sortedConversations() {
    return [...this.conversations.values()].sort((a, b) => this.activity(b) - this.activity(a));
  }

  /** For a DM, the other member's id. */
  partnerOf(conv) {
    if (!conv || conv.kind !== 'dm') return null;
    const other = (conv.members || []).find((m) => m.user_id !== this.me?.id);
    return other ? other.user_id : null;
  }

  titleOf(conv) {
    if (!conv) return '';
    if (conv.kind === 'dm') return this.nameOf(this.partnerOf(conv));
    return conv.name || 'Group';
  }

  dmWith(userId) {
    for (const conv of this.conversations.values()) if (!conv.encrypted && this.partnerOf(conv) === userId) return conv;
    return null;
  }

  encryptedDmWith(userId) {
    for (const conv of this.conversations.values()) if (conv.encrypted && this.partnerOf(conv) === userId) return conv;
    return null;
  }

  roleOf(conv, userId) {
    return (conv?.members || []).find((m) => m.user_id === userId)?.role || null;
  }

  timeline(conversationId) {
    let t = this.timelines.get(conversationId);
    if (!t) {
      t = new Timeline(conversationId);
      this.timelines.set(conversationId, t);
    }
    return t;
  }

  // -- typing ---------------------------------------------------------------------------------

  setTyping(conversationId, userId) {
    if (!this.typing.has(conversationId)) this.typing.set(conversationId, new Map());
    this.typing.get(conversationId).set(userId, Date.now() + TYPING_SHOWN_MS);
    this.emit('typing', conversationId);
    const timer = setTimeout(() => {
      this.typingTimers.delete(timer);
      this.emit('typing', conversationId);
    }, TYPING_SHOWN_MS + 50);
    this.typingTimers.add(timer);
  }

  clearTyping(conversationId, userId) {
    if (this.typing.get(conversationId)?.delete(userId)) this.emit('typing', conversationId);
  }

  typingIn(conversationId) {
    const now = Date.now();
    const who = this.typing.get(conversationId);
    if (!who) return [];
    return [...who.entries()].filter(([, until]) => until > now).map(([id]) => id);
  }
}
