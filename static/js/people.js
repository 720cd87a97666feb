// People: friends, friend requests, blocks, the directory and presence subscriptions, loaded
// and changed through the REST API and written into the store. A base of Actions (actions.js),
// whose store, api, realtime and guard() it uses, on OutboxActions (outbox.js).

import { ApiError, path } from './api.js';
import { OutboxActions } from './outbox.js';

const DIRECTORY_PAGE = 30;
export const MAX_PRESENCE_SUBSCRIBE = 1000; // the server's limit per queue

export class PeopleActions extends OutboxActions {
  constructor() {
    super();
    this.blocking = new Set(); // users this tab is blocking right now
  }

  // A list answer read before an event (a request accepted while it was on its way) does not
  // undo it: store.merged keeps what changed after the list was asked for.

  async loadFriends() {
    const store = this.store;
    const asked = store.clock;
    const reply = await this.guard(this.api.get('/api/friends'), 'Could not load friends');
    if (!reply) return;
    const users = (reply.friends || []).map((friend) => friend.user || friend);
    for (const user of users) store.upsertUser(user);
    const loaded = users.map((user) => [user.id, user.id]);
    store.friends = new Set(store.merged('friend', store.friends.entries(), loaded, asked).keys());
    store.friendsLoaded = true;
    store.emit('friends');
    store.emit('users');
  }

  async loadRequests() {
    const store = this.store;
    const asked = store.clock;
    const reply = await this.guard(this.api.get('/api/friends/requests'), 'Could not load friend requests');
    if (!reply) return;
    const incoming = new Map();
    const outgoing = new Map();
    for (const r of [...(reply.requests?.incoming || []), ...(reply.requests?.outgoing || [])]) {
      for (const key of ['from_user', 'to_user']) if (r[key]) store.upsertUser(r[key]);
      (this.isMine(r) ? outgoing : incoming).set(r.id, r);
    }
    store.incoming = store.merged('request', store.incoming, incoming, asked);
    store.outgoing = store.merged('request', store.outgoing, outgoing, asked);
    store.requestsLoaded = true;
    store.emit('requests');
    store.emit('users');
  }

  /** File a request an event or a reply brought under incoming or outgoing; remember its users. */
  noteRequest(request) {
    const store = this.store;
    for (const key of ['from_user', 'to_user']) if (request[key]) store.upsertUser(request[key]);
    store.touch(`request:${request.id}`);
    (this.isMine(request) ? store.outgoing : store.incoming).set(request.id, request);
  }

  isMine(request) {
    return (request.from_user_id ?? request.from_user?.id) === this.me?.id;
  }

  /** The other person of a request, from our side. */
  requestPeer(request) {
    const fromId = request.from_user_id ?? request.from_user?.id;
    const toId = request.to_user_id ?? request.to_user?.id;
    return fromId === this.me?.id ? toId : fromId;
  }

  forgetRequest(requestId) {
    const store = this.store;
    store.touch(`request:${requestId}`);
    const removed = store.incoming.delete(requestId) || store.outgoing.delete(requestId);
    if (removed) store.emit('requests');
    return removed;
  }

  async loadBlocks() {
    const store = this.store;
    const asked = store.clock;
    const reply = await this.guard(this.api.get('/api/blocks'), 'Could not load blocked users');
    if (!reply) return;
    const loaded = [];
    for (const entry of reply.blocks || []) {
      store.upsertUser(entry.user);
      loaded.push([entry.user.id, entry.user.id]);
    }
    store.blocked = new Set(store.merged('block', store.blocked.entries(), loaded, asked).keys());
    for (const id of store.blocked) store.blockedBy.delete(id); // my own block: the notice offers Unblock
    store.emit('blocks');
    store.emit('users');
  }

  /** The user directory: a page of users whose name starts with `query` (all without one). */
  async searchDirectory(query, { more = false } = {}) {
    const store = this.store;
    const dir = store.directory;
    const token = {};
    this.directoryToken = token;
    if (dir.query !== query) dir.ids = []; // another search: the old names do not match
    dir.query = query;
    dir.loading = true;
    store.emit('directory');
    const params = { limit: DIRECTORY_PAGE };
    if (query) params.q = query;
    if (more && dir.cursor) Object.assign(params, dir.cursor);
    const reply = await this.guard(this.api.get('/api/users', params), 'Could not load people');
    if (this.directoryToken !== token) return; // a newer search replaced this one
    dir.loading = false;
    if (reply) {
      const users = (reply.users || []).filter((u) => u.id !== this.me?.id);
      for (const u of reply.users || []) store.upsertUser(u);
      if (!more) dir.ids = [];
      const known = new Set(dir.ids);
      for (const u of users) if (!known.has(u.id)) dir.ids.push(u.id);
      dir.hasMore = Boolean(reply.has_more);
      dir.cursor = reply.next_after ? { after: reply.next_after } : null;
      this.subscribePresence(users.map((u) => u.id));
    }
    store.emit('directory');
    store.emit('users');
  }

  /** Ask for live presence of users who are neither friends nor DM partners (the directory). */
  async subscribePresence(userIds) {
    const queueId = this.realtime?.queueId;
    if (!queueId || !userIds.length) return;
    try {
      const reply = await this.api.post('/api/presence/subscribe', { queue_id: queueId, user_ids: userIds });
      for (const [id, status] of Object.entries(reply.presence || {})) {
        const user = this.store.users.get(id);
        if (user) this.store.users.set(id, { ...user, status });
      }
      this.store.emit('users');
    } catch (err) {
      // A queue replaced meanwhile: the next hello subscribes again. Nothing to tell the user.
      if (!(err instanceof ApiError && err.status === 404)) console.warn('presence subscribe failed', err);
    }
  }

  // -- people ---------------------------------------------------------------------------------

  /** The user with this friend code; throws ApiError (404 when nobody has it). */
  async findByCode(code) {
    const reply = await this.api.get(path`/api/users/by-code/${code}`);
    this.store.upsertUser(reply.user);
    this.subscribePresence([reply.user.id]);
    this.store.emit('users');
    return reply.user;
  }

  async requestFriend(userId) {
    const reply = await this.guard(this.api.post('/api/friends/requests', { user_id: userId }), 'Friend request failed');
    if (!reply) return false;
    if (reply.request) this.noteRequest(reply.request);
    if (reply.user) {
      // Asking someone who had asked us makes us friends at once.
      this.store.upsertUser(reply.user);
      this.store.setFriend(reply.user.id, true);
      this.forgetRequest(reply.request.id);
      this.store.emit('friends');
    } else {
      this.store.emit('requests');
    }
    this.store.emit('users');
    return true;
  }

  async acceptRequest(requestId) {
    const reply = await this.guard(this.api.post(path`/api/friends/requests/${requestId}/accept`), 'Could not accept');
    if (!reply) return;
    this.forgetRequest(requestId);
    this.store.upsertUser(reply.user);
    this.store.setFriend(reply.user.id, true);
    this.store.emit('friends');
    this.store.emit('users');
  }

  async declineRequest(requestId) {
    const reply = await this.guard(this.api.post(path`/api/friends/requests/${requestId}/decline`), 'Could not decline');
    if (reply) this.forgetRequest(requestId);
    this.store.emit('users');
  }

  async cancelRequest(requestId) {
    const reply = await this.guard(this.api.del(path`/api/friends/requests/${requestId}`), 'Could not cancel');
    if (reply) this.forgetRequest(requestId);
    this.store.emit('users');
  }

  async removeFriend(userId) {
    const reply = await this.guard(this.api.del(path`/api/friends/${userId}`), 'Could not remove the friend');
    if (!reply) return;
    this.store.setFriend(userId, false);
    this.store.emit('friends');
    this.store.emit('users');
  }

  async block(userId) {
    this.blocking.add(userId);
    let reply;
    try {
      reply = await this.guard(this.api.put(path`/api/blocks/${userId}`), 'Could not block');
    } finally {
      this.blocking.delete(userId);
    }
    if (!reply) return false;
    this.store.setBlocked(userId, true);
    this.store.blockedBy.delete(userId);
    this.store.setFriend(userId, false);
    for (const [id, r] of [...this.store.incoming, ...this.store.outgoing]) {
      if (this.requestPeer(r) === userId) this.forgetRequest(id);
    }
    this.store.emit('blocks');
    this.store.emit('friends');
    this.store.emit('users');
    return true;
  }

  async unblock(userId) {
    const reply = await this.guard(this.api.del(path`/api/blocks/${userId}`), 'Could not unblock');
    if (!reply) return;
    this.store.setBlocked(userId, false);
    this.store.emit('blocks');
    this.store.emit('users');
  }

  /**
   * The server says a block now stands (or no longer stands) between us and this user: on the
   * blocked side that is all it learns (the DM can no longer be answered); on the blocker's
   * side, another tab's block or unblock.
   */
  blockChanged(userId, blocked) {
    const store = this.store;
    if (blocked) {
      if (!store.blocked.has(userId) && !this.blocking.has(userId)) {
        store.blockedBy.add(userId);
        // Another tab of mine may have blocked: the list of blocks says which.
        this.loadBlocks();
      }
    } else {
      store.blockedBy.delete(userId);
      this.loadBlocks();
    }
    store.emit('blocks');
    store.emit('users');
  }
}
