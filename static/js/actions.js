// What the user can do, and what the server tells us: REST calls and events, written into the
// store. Views call these and never talk to the server themselves. Friends, requests, blocks
// and the directory are in people.js, sending in outbox.js: the classes this one extends.

import { path } from './api.js';
import { toast } from './dom.js';
import { uploadFile } from './files.js';
import { MAX_PRESENCE_SUBSCRIBE, PeopleActions } from './people.js';
import { noteGroupEvent } from './system.js';

const HISTORY_PAGE = 50;
const TYPING_EVERY_MS = 3000; // the server relays each typing call; the others show it ~6 s
const CATCH_UP_PAGES = 20; // at most this many pages of missed messages before giving up
const READ_DELAY_MS = 250; // a burst of messages in the open conversation: one read call

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Actions extends PeopleActions {
  constructor(api, store, realtime = null) {
    super();
    this.api = api;
    this.store = store;
    this.realtime = realtime;
    this.lastTypingSent = new Map();
    this.readSent = new Map(); // conversation id -> seq we told the server
    this.conversationsReload = null;
    this.conversationsFetching = false; // the reload above is waiting for its answer
    this.conversationsAgain = false; // and was asked for again meanwhile
    this.session = 0; // bumped at sign-out
  }

  /**
   * Run a request; on failure show a toast and return null (every failure gets one). An
   * answer that arrives after sign-out is dropped: it belongs to the previous session.
   */
  async guard(promise, what) {
    const session = this.session;
    try {
      const reply = await promise;
      return session === this.session ? reply : null;
    } catch (err) {
      if (err?.name === 'AbortError' || session !== this.session) return null;
      // A 401 signs the page out, which says so itself.
      if (err?.status !== 401) toast(what ? `${what}: ${err.message}` : err.message, 'error');
      return null;
    }
  }

  get me() {
    return this.store.me;
  }

  // -- loading state --------------------------------------------------------------------------

  /** Re-read everything: at sign-in, and whenever the event queue could not be resumed. */
  async resync() {
    const store = this.store;
    for (const t of store.timelines.values()) t.stale = true;
    await Promise.all([
      this.loadConversations(),
      this.loadFriends(),
      this.loadRequests(),
      this.loadBlocks(),
      this.searchDirectory(store.directory.query),
    ]);
    // The open conversation gets what it missed (a first opening is the router's business).
    const active = store.activeId && store.timelines.get(store.activeId);
    if (active?.loaded && store.conversations.has(store.activeId)) await this.catchUp(store.activeId);
  }

  /** Forget what belonged to the signed-out user. */
  reset() {
    this.session += 1;
    this.lastTypingSent.clear();
    this.readSent.clear();
    clearTimeout(this.readTimer);
    clearTimeout(this.outboxTimer);
    this.outboxTimer = null;
    this.outboxFailures = 0;
  }

  async loadConversations() {
    const store = this.store;
    const asked = store.clock;
    const reply = await this.guard(this.api.get('/api/conversations'), 'Could not load conversations');
    if (!reply) return;
    // What an event (or another answer) changed while this one was on its way is newer than
    // it: a group created then stays, one we left does not come back.
    const seen = new Set();
    for (const conv of reply.conversations || []) {
      seen.add(conv.id);
      if (store.changedSince(conv.id, asked)) continue;
      store.upsertConversation(conv);
      this.noteReads(conv);
    }
    for (const id of [...store.conversations.keys()]) {
      if (!seen.has(id) && !store.changedSince(id, asked)) store.removeConversation(id);
    }
    store.conversationsLoaded = true;
    store.emit('conversations');
    store.emit('users');
    // Group members who are not friends: their dots stay live too.
    const others = new Set();
    for (const conv of store.conversations.values()) {
      for (const m of conv.members || []) if (m.user_id !== this.me?.id && !store.friends.has(m.user_id)) others.add(m.user_id);
    }
    this.subscribePresence([...others].slice(0, MAX_PRESENCE_SUBSCRIBE));
  }

  /** Coalesce reloads asked for by several events at once. */
  reloadConversationsSoon() {
    // Asked again while the list is on its way: that answer may be older than what asked (a
    // second message of a new conversation), so the list is loaded once more after it.
    if (this.conversationsReload) {
      if (this.conversationsFetching) this.conversationsAgain = true;
      return this.conversationsReload;
    }
    this.conversationsReload = (async () => {
      try {
        do {
          this.conversationsAgain = false;
          await sleep(100);
          this.conversationsFetching = true;
          try {
            await this.loadConversations();
          } finally {
            this.conversationsFetching = false;
          }
        } while (this.conversationsAgain);
      } finally {
        this.conversationsReload = null;
      }
    })();
    return this.conversationsReload;
  }

  /** Read pointers of the other members, when the conversation carries them. */
  noteReads(conv) {
    const timeline = this.store.timeline(conv.id);
    for (const [userId, seq] of Object.entries(conv.reads || {})) {
      if (userId !== this.me?.id && Number.isInteger(seq)) {
        timeline.reads.set(userId, Math.max(seq, timeline.reads.get(userId) || 0));
      }
    }
  }

  // -- conversations --------------------------------------------------------------------------

  /** Encrypted messages decrypted for this device (e2e/session.js); the others as they are. */
  async opened(messages) {
    return this.e2e && messages.some((m) => m.encrypted) ? this.e2e.openAll(messages) : messages;
  }

  async openDm(userId, encrypted = false) {
    const body = encrypted ? { user_id: userId, encrypted } : { user_id: userId };
    const reply = await this.guard(this.api.post('/api/conversations/dm', body), 'Could not open the conversation');
    if (!reply) return null;
    const conv = this.store.upsertConversation(reply.conversation);
    this.noteReads(conv);
    this.store.emit('conversations');
    return conv;
  }

  /** Make the conversation current: newest page (or what was missed), then mark it read. */
  async showConversation(conversationId) {
    const timeline = this.store.timeline(conversationId);
    if (!timeline.loaded) await this.loadLatest(conversationId);
    else if (timeline.stale) await this.catchUp(conversationId);
    this.markRead(conversationId);
  }

  async loadLatest(conversationId) {
    const timeline = this.store.timeline(conversationId);
    await this.changes?.track(conversationId); // views/reactions.js: messages.changes' cursor
    const reply = await this.guard(
      this.api.get(path`/api/conversations/${conversationId}/messages`, { limit: HISTORY_PAGE }),
      'Could not load messages',
    );
    if (!reply) return;
    const pendingBefore = timeline.pending.size;
    timeline.add(await this.opened(reply.messages || []));
    if (timeline.pending.size !== pendingBefore) this.saveOutbox();
    timeline.hasMore = Boolean(reply.has_more);
    timeline.loaded = true;
    timeline.stale = false;
    this.store.emit('timeline', conversationId);
  }

  /** The page before the oldest message shown. */
  async loadOlder(conversationId) {
    const timeline = this.store.timeline(conversationId);
    if (timeline.loadingOlder || !timeline.hasMore || !timeline.loaded) return;
    timeline.loadingOlder = true;
    this.store.emit('timeline', conversationId);
    const reply = await this.guard(
      this.api.get(path`/api/conversations/${conversationId}/messages`, {
        before_seq: timeline.firstSeq,
        limit: HISTORY_PAGE,
      }),
      'Could not load older messages',
    );
    timeline.loadingOlder = false;
    if (reply) {
      timeline.add(await this.opened(reply.messages || []));
      timeline.hasMore = Boolean(reply.has_more);
    }
    this.store.emit('timeline', conversationId);
  }

  /** Everything after the newest message we have (after the event queue was lost). */
  async catchUp(conversationId) {
    const timeline = this.store.timeline(conversationId);
    if (!timeline.messages.length) return this.loadLatest(conversationId);
    for (let page = 0; page < CATCH_UP_PAGES; page++) {
      const reply = await this.guard(
        this.api.get(path`/api/conversations/${conversationId}/messages`, {
          after_seq: timeline.lastSeq,
          limit: HISTORY_PAGE,
        }),
        'Could not load new messages',
      );
      if (!reply) return;
      const pendingBefore = timeline.pending.size;
      timeline.add(await this.opened(reply.messages || []));
      if (timeline.pending.size !== pendingBefore) this.saveOutbox();
      this.store.emit('timeline', conversationId);
      if (!reply.has_more || !(reply.messages || []).length) break;
    }
    timeline.stale = false;
  }

  /** A DM refused with 403 blocked: whoever blocked, the composer gives way to a notice. */
  noteBlockedIn(conversationId) {
    const partner = this.store.partnerOf(this.store.conversations.get(conversationId));
    if (partner && !this.store.blocked.has(partner) && !this.store.blockedBy.has(partner)) {
      this.store.blockedBy.add(partner);
      this.store.emit('blocks');
    }
  }

  /** A stored message, from our send's answer or from an event: shown once, list updated. */
  acceptMessage(message) {
    const store = this.store;
    const cid = message.conversation_id;
    const timeline = store.timeline(cid);
    const hadPending = message.client_msg_id && timeline.pending.has(message.client_msg_id);
    const fresh = timeline.add([message]);
    if (hadPending) this.saveOutbox();
    const conv = store.conversations.get(cid);
    if (!conv) {
      this.reloadConversationsSoon();
    } else if (!conv.last_message || conv.last_message.seq < message.seq) {
      conv.last_message = message;
      const mine = message.sender_id === this.me?.id;
      if (fresh.length && !mine && !this.isWatching(cid)) conv.unread_count = (conv.unread_count || 0) + 1;
      store.emit('conversations');
    }
    if (fresh.length) {
      store.clearTyping(cid, message.sender_id);
      store.emit('timeline', cid);
      if (this.isWatching(cid)) this.markReadSoon(cid);
    }
  }

  /** A message edited or deleted (a reply or a lifecycle event): the timeline and the
   * conversation's last message show it as it is now. */
  acceptChange(message) {
    const store = this.store;
    const cid = message.conversation_id;
    if (store.timeline(cid).replace(message)) store.emit('timeline', cid);
    const conv = store.conversations.get(cid);
    if (conv?.last_message?.id === message.id) {
      conv.last_message = message;
      store.emit('conversations');
    }
  }

  /** Replace the body of a message of mine; the stored message, or null (a toast said why). */
  async editMessage(conversationId, messageId, body) {
    const url = path`/api/conversations/${conversationId}/messages/${messageId}`;
    const reply = await this.guard(this.api.patch(url, { body }), 'Could not edit the message');
    if (reply?.message) this.acceptChange(reply.message);
    return reply?.message || null;
  }

  /** Delete a message (mine, or any in a group I own or administer); the tombstone, or null. */
  async deleteMessage(conversationId, messageId) {
    const url = path`/api/conversations/${conversationId}/messages/${messageId}`;
    const reply = await this.guard(this.api.del(url), 'Could not delete the message');
    if (reply?.message) this.acceptChange(reply.message);
    return reply?.message || null;
  }

  /** Invite the conversation to a game (views/invitations.js); the message, or null. */
  async sendInvitation(conversationId, game, ttlSecs) {
    const url = path`/api/conversations/${conversationId}/invitations`;
    const reply = await this.guard(this.api.post(url, { game, ttl_secs: ttlSecs }), 'Could not send the invitation');
    if (reply?.message) this.acceptMessage(reply.message);
    return reply?.message || null;
  }

  /** Accept, decline or cancel an invitation; the message as changed, or null. */
  async answerInvitation(invitationId, verb) {
    const reply = await this.guard(this.api.post(path`/api/invitations/${invitationId}/${verb}`, {}), 'Could not answer the invitation');
    if (reply?.message) this.acceptChange(reply.message);
    return reply?.message || null;
  }

  /** The user has this conversation in front of them. */
  isWatching(conversationId) {
    return this.store.activeId === conversationId && document.visibilityState === 'visible';
  }

  markReadSoon(conversationId) {
    clearTimeout(this.readTimer);
    this.readTimer = setTimeout(() => {
      if (this.isWatching(conversationId)) this.markRead(conversationId);
    }, READ_DELAY_MS);
  }

  async markRead(conversationId) {
    const store = this.store;
    const timeline = store.timeline(conversationId);
    const conv = store.conversations.get(conversationId);
    const seq = Math.max(timeline.lastSeq, conv?.last_message?.seq || 0);
    if (conv && conv.unread_count) {
      conv.unread_count = 0;
      store.emit('conversations');
    }
    if (!seq || (this.readSent.get(conversationId) || 0) >= seq) return;
    this.readSent.set(conversationId, seq);
    if (conv && (conv.read_seq || 0) < seq) conv.read_seq = seq;
    try {
      await this.api.post(path`/api/conversations/${conversationId}/read`, { seq });
    } catch (err) {
      this.readSent.delete(conversationId);
      if (![401, 403, 404].includes(err.status)) toast(`Could not mark as read: ${err.message}`, 'error');
    }
  }

  /** Upload one file for a message to come: the server's upload object (files.js). */
  upload(file, options) {
    return uploadFile(this.api, file, options);
  }

  /** Tell the others we are typing, at most every few seconds. */
  typing(conversationId) {
    const now = Date.now();
    if (now - (this.lastTypingSent.get(conversationId) || 0) < TYPING_EVERY_MS) return;
    this.lastTypingSent.set(conversationId, now);
    this.api.post(path`/api/conversations/${conversationId}/typing`).catch(() => {
      // Typing is a hint; a failure is not worth a toast (the send will report real trouble).
    });
  }

  // -- groups ---------------------------------------------------------------------------------

  /** Throws ApiError so the dialog can show it next to the field. */
  async createGroup(name, memberIds) {
    const reply = await this.api.post('/api/groups', { name, member_ids: memberIds });
    const conv = this.store.upsertConversation(reply.conversation);
    this.store.emit('conversations');
    return conv;
  }

  async renameGroup(conversationId, name) {
    const reply = await this.api.patch(path`/api/groups/${conversationId}`, { name });
    this.applyGroup(reply.conversation);
  }

  async addMembers(conversationId, userIds) {
    const reply = await this.guard(
      this.api.post(path`/api/groups/${conversationId}/members`, { user_ids: userIds }),
      'Could not add the member',
    );
    if (reply?.conversation) this.applyGroup(reply.conversation);
    return Boolean(reply);
  }

  async removeMember(conversationId, userId) {
    const reply = await this.guard(
      this.api.del(path`/api/groups/${conversationId}/members/${userId}`),
      userId === this.me?.id ? 'Could not leave the group' : 'Could not remove the member',
    );
    if (!reply) return false;
    if (userId === this.me?.id) this.dropConversation(conversationId);
    else if (reply.conversation) this.applyGroup(reply.conversation);
    return true;
  }

  async setRole(conversationId, userId, role) {
    const reply = await this.guard(
      this.api.patch(path`/api/groups/${conversationId}/members/${userId}`, { role }),
      'Could not change the role',
    );
    if (reply?.conversation) this.applyGroup(reply.conversation);
  }

  /** A group as the server now has it; gone from our list when we are no longer in it. */
  applyGroup(conv) {
    if (!conv) return;
    if (!(conv.members || []).some((m) => m.user_id === this.me?.id)) {
      if (this.store.conversations.has(conv.id)) {
        this.dropConversation(conv.id);
        toast(`You are no longer in ${conv.name || 'the group'}.`);
      }
      return;
    }
    this.store.upsertConversation(this.keepReadState(conv));
    this.store.emit('conversations');
    this.store.emit('users');
  }

  /**
   * A group as a reply or an event has it, without undoing what we know of our own reading: a
   * read_seq below ours (an answer computed before our read landed) never lowers it or brings
   * an unread badge back, and the conversation in front of the user has nothing unread.
   */
  keepReadState(conv) {
    const prev = this.store.conversations.get(conv.id);
    const known = Math.max(prev?.read_seq || 0, this.readSent.get(conv.id) || 0);
    const next = { ...conv };
    if (prev && 'read_seq' in conv && (conv.read_seq || 0) < known) {
      next.read_seq = known;
      next.unread_count = Math.min(conv.unread_count || 0, prev.unread_count || 0);
    }
    if (this.isWatching(conv.id)) next.unread_count = 0;
    return next;
  }

  dropConversation(conversationId) {
    this.store.removeConversation(conversationId);
    const hadPending = this.store.timelines.get(conversationId)?.pending.size;
    this.store.timelines.delete(conversationId);
    if (hadPending) this.saveOutbox(); // nowhere to send them any more
    this.store.emit('conversations');
    if (this.store.activeId === conversationId) this.store.emit('active');
  }

  // -- events ---------------------------------------------------------------------------------

  handleEvent(event) {
    const store = this.store;
    switch (event.type) {
      case 'message.new':
        if (event.message?.encrypted) this.opened([event.message]).then(([m]) => this.acceptMessage(m));
        else this.acceptMessage(event.message);
        break;
      case 'keys.low':
        this.e2e?.topUp().catch((err) => console.warn('could not add one-time prekeys', err));
        break;
      case 'message.updated':
      case 'message.deleted':
      case 'message.reactions':
      case 'invitation.updated':
        if (event.message) this.acceptChange(event.message);
        break;
      case 'conversation.read': {
        if (event.user_id === this.me?.id) {
          const conv = store.conversations.get(event.conversation_id);
          if (conv && event.seq > (conv.read_seq || 0)) conv.read_seq = event.seq;
          if (conv && event.seq >= (conv.last_message?.seq || 0) && conv.unread_count) {
            conv.unread_count = 0;
            store.emit('conversations');
          }
        } else {
          const reads = store.timeline(event.conversation_id).reads;
          reads.set(event.user_id, Math.max(event.seq, reads.get(event.user_id) || 0));
          store.emit('receipts', event.conversation_id);
        }
        break;
      }
      case 'typing':
        if (event.user_id !== this.me?.id) store.setTyping(event.conversation_id, event.user_id);
        break;
      case 'presence':
        store.setPresence(event.user_id, event.status, event.last_seen);
        if (event.blocked === true || event.blocked === false) this.blockChanged(event.user_id, event.blocked);
        break;
      case 'friend.request':
        if (event.request) {
          this.noteRequest(event.request);
          store.emit('requests');
          store.emit('users');
          if (this.requestPeer(event.request) && store.incoming.has(event.request.id)) {
            toast(`${store.nameOf(this.requestPeer(event.request))} sent you a friend request.`);
          }
        }
        break;
      case 'friend.request.cancelled':
      case 'friend.request.declined':
        if (event.request) this.forgetRequest(event.request.id);
        store.emit('users');
        break;
      case 'friend.accepted': {
        // The new friend comes with its presence: from now on its changes reach us too.
        const wasMine = event.request && store.outgoing.has(event.request.id);
        if (event.request) this.forgetRequest(event.request.id);
        store.upsertUser(event.user);
        store.setFriend(event.user.id, true);
        store.emit('friends');
        store.emit('users');
        if (wasMine) toast(`${store.nameOf(event.user.id)} accepted your friend request.`, 'success');
        break;
      }
      case 'friend.removed':
        store.setFriend(event.user.id, false);
        store.emit('friends');
        store.emit('users');
        break;
      case 'group.created':
      case 'group.updated':
      case 'group.member_added':
      case 'group.member_removed':
        noteGroupEvent(store, event); // "alice added bob": before the store takes the change
        if (event.conversation) this.applyGroup(event.conversation);
        else this.reloadConversationsSoon();
        break;
      default:
        break;
    }
  }
}
