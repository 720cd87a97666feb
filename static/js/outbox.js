// Sending messages: what the user wrote waits in an outbox (kept in localStorage per user,
// across a reload) and goes out one at a time, in order, with its client_msg_id (and the ids
// of its uploaded files), until the server has stored it. The base of Actions (actions.js),
// whose store, api and realtime it uses; acceptMessage and noteBlockedIn are Actions' own.

import { ApiError, path } from './api.js';
import { toast } from './dom.js';

const OUTBOX_RETRY_FIRST_MS = 1000; // a queued send is tried again after this, doubling...
const OUTBOX_RETRY_MAX_MS = 10000; // ...up to this (and at once when the events are live again)
const OUTBOX_KEY = 'chat.outbox.'; // + user id: the unsent messages of that user, kept across a reload

/** An idempotency key for a send; crypto.randomUUID needs a secure context, this does not. */
function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `c-${[...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** Worth retrying by itself: the server was not reached, or was briefly unavailable. */
const transient = (err) => err instanceof ApiError && (err.status === 0 || err.status === 503 || err.status === 429);

export class OutboxActions {
  constructor() {
    this.flushing = false; // the outbox is being sent (one message at a time, in order)
    this.flushAgain = false;
    this.outboxTimer = null;
    this.outboxFailures = 0;
    this.sendOrder = 0;
  }

  /**
   * Show at once as pending and put it in the outbox; the outbox sends it (in order, after
   * what is already waiting) and the server's copy replaces it (same client_msg_id).
   */
  sendMessage(conversationId, body, attachments = [], replyTo = null) {
    const timeline = this.store.timeline(conversationId);
    const clientMsgId = newClientMsgId();
    timeline.pending.set(clientMsgId, {
      client_msg_id: clientMsgId,
      body,
      attachments, // the uploads (files.js): their ids go with the message
      reply_to: replyTo || undefined, // the quote shown meanwhile (views/replies.js); its id goes
      state: 'sending',
      created_at: new Date().toISOString(),
      order: this.nextOrder(),
    });
    if (this.outboxTimer) timeline.pending.get(clientMsgId).state = 'queued'; // the server is away
    this.saveOutbox();
    this.store.emit('timeline', conversationId);
    this.lastTypingSent.delete(conversationId);
    this.flushOutbox();
  }

  retry(conversationId, clientMsgId) {
    const pending = this.store.timeline(conversationId).pending.get(clientMsgId);
    if (!pending) return;
    pending.state = 'sending';
    pending.order = this.nextOrder(); // a retried message goes after those already waiting
    this.saveOutbox();
    this.store.emit('timeline', conversationId);
    this.flushOutbox();
  }

  nextOrder() {
    this.sendOrder = Math.max(this.sendOrder + 1, Date.now() * 1000);
    return this.sendOrder;
  }

  /** Every unsent message (waiting or failed), oldest first. */
  outboxEntries() {
    const entries = [];
    for (const [conversationId, timeline] of this.store.timelines) {
      for (const p of timeline.pending.values()) entries.push({ conversationId, pending: p });
    }
    return entries.sort((a, b) => a.pending.order - b.pending.order);
  }

  /** How many messages would be lost by signing out now. */
  unsentCount() {
    return this.outboxEntries().length;
  }

  outboxKey() {
    return this.me ? OUTBOX_KEY + this.me.id : null;
  }

  /** The outbox in localStorage (per user), so that a reload or a crash loses nothing. */
  saveOutbox() {
    const key = this.outboxKey();
    if (!key) return;
    const entries = this.outboxEntries().map(({ conversationId, pending: p }) => ({
      conversation_id: conversationId,
      client_msg_id: p.client_msg_id,
      body: p.body,
      attachments: p.attachments?.length ? p.attachments : undefined,
      reply_to: p.reply_to,
      created_at: p.created_at,
      order: p.order,
      failed: p.state === 'failed' ? p.error || 'Not sent' : null,
    }));
    try {
      if (entries.length) localStorage.setItem(key, JSON.stringify(entries));
      else localStorage.removeItem(key);
    } catch (err) {
      console.warn('could not keep the outbox', err);
    }
    this.store.emit('outbox');
  }

  /** At sign-in: what this user had not sent yet goes back into its timelines, then out. */
  restoreOutbox() {
    const key = this.outboxKey();
    if (!key) return;
    let entries = [];
    try {
      entries = JSON.parse(localStorage.getItem(key) || '[]');
    } catch {
      entries = [];
    }
    for (const e of Array.isArray(entries) ? entries : []) {
      if (!e || typeof e.conversation_id !== 'string' || typeof e.client_msg_id !== 'string' || typeof e.body !== 'string') continue;
      const timeline = this.store.timeline(e.conversation_id);
      if (timeline.pending.has(e.client_msg_id)) continue;
      timeline.pending.set(e.client_msg_id, {
        client_msg_id: e.client_msg_id,
        body: e.body,
        attachments: Array.isArray(e.attachments) ? e.attachments.filter((a) => a && typeof a.id === 'string') : [],
        reply_to: e.reply_to && typeof e.reply_to.id === 'string' ? e.reply_to : undefined,
        created_at: e.created_at || new Date().toISOString(),
        order: Number(e.order) || this.nextOrder(),
        state: e.failed ? 'failed' : 'queued',
        error: e.failed || undefined,
      });
      this.sendOrder = Math.max(this.sendOrder, Number(e.order) || 0);
      this.store.emit('timeline', e.conversation_id);
    }
    this.store.emit('outbox');
    this.flushOutbox();
  }

  /** Signing out on purpose: the unsent messages go with the session. */
  dropOutbox() {
    const key = this.outboxKey();
    if (key) localStorage.removeItem(key);
    for (const timeline of this.store.timelines.values()) timeline.pending.clear();
  }

  /** The connection is back (or may be): send what waits now rather than at the next retry. */
  connectionBack() {
    this.outboxFailures = 0;
    if (this.outboxTimer) {
      clearTimeout(this.outboxTimer);
      this.outboxTimer = null;
    }
    this.flushOutbox();
  }

  /**
   * Send the outbox one message at a time, oldest first. A message that cannot reach the
   * server (network, 503, 429) stays queued and so do the ones after it, until the next try;
   * one the server refuses (4xx) is "Not sent" with Retry and the rest go on.
   */
  async flushOutbox() {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    const session = this.session;
    try {
      do {
        this.flushAgain = false;
        for (;;) {
          if (session !== this.session) return;
          const next = this.outboxEntries().find((e) => e.pending.state !== 'failed');
          if (!next) break;
          const outcome = await this.deliver(next.conversationId, next.pending.client_msg_id);
          if (outcome === 'wait') {
            this.markWaiting();
            this.retryOutboxLater();
            return;
          }
        }
      } while (this.flushAgain);
      this.outboxFailures = 0;
    } finally {
      this.flushing = false;
    }
  }

  /** Everything behind a message that could not go out waits with it. */
  markWaiting() {
    for (const { conversationId, pending } of this.outboxEntries()) {
      if (pending.state === 'sending') {
        pending.state = 'queued';
        this.store.emit('timeline', conversationId);
      }
    }
  }

  retryOutboxLater() {
    if (this.outboxTimer) return;
    this.outboxFailures += 1;
    const ms = Math.min(OUTBOX_RETRY_MAX_MS, OUTBOX_RETRY_FIRST_MS * 2 ** (this.outboxFailures - 1));
    this.outboxTimer = setTimeout(() => {
      this.outboxTimer = null;
      this.flushOutbox();
    }, ms);
  }

  /** One send: 'sent', 'failed' (refused for good) or 'wait' (the server was not reached). */
  async deliver(conversationId, clientMsgId) {
    const timeline = this.store.timeline(conversationId);
    const pending = timeline.pending.get(clientMsgId);
    if (!pending) return 'sent'; // the server's copy already arrived as an event
    if (pending.state !== 'sending') {
      pending.state = 'sending';
      this.store.emit('timeline', conversationId);
    }
    const session = this.session;
    try {
      // Every attempt sends the same client_msg_id: the server returns the stored copy, never a second.
      const payload = { body: pending.body, client_msg_id: clientMsgId };
      if (pending.attachments?.length) payload.attachments = pending.attachments.map((a) => a.id);
      if (pending.reply_to) payload.reply_to = pending.reply_to.id;
      const reply = this.store.conversations.get(conversationId)?.encrypted
        ? { message: await this.e2e.send(conversationId, pending.body, clientMsgId, pending.attachments) } // e2e/session.js
        : await this.api.post(path`/api/conversations/${conversationId}/messages`, payload);
      if (session === this.session) this.acceptMessage(reply.message); // not into the next user's state
      return 'sent';
    } catch (err) {
      if (session !== this.session || !timeline.pending.has(clientMsgId)) return 'sent';
      if (err.status === 401) return 'wait'; // signing out; the outbox stays for next time
      if (transient(err)) {
        pending.state = 'queued';
        this.store.emit('timeline', conversationId);
        return 'wait';
      }
      pending.state = 'failed';
      pending.error = err.message;
      this.saveOutbox();
      if (err.code === 'blocked') this.noteBlockedIn(conversationId);
      this.store.emit('timeline', conversationId);
      toast(`Message not sent: ${err.message}`, 'error');
      return 'failed';
    }
  }
}
