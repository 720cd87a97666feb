// This browser's device in encrypted conversations: its keys (registered on first use), its
// sessions with other devices, sending (encrypt for every device the server expects, learnt
// from its 409 devices_changed) and reading (this device's own envelope). docs/e2e.md.

import * as c from './crypto.js';
import * as keystore from './keystore.js';

const PREKEYS_UPLOADED = 50; // at first, and again when the server says keys.low
const OPEN_ATTEMPTS = 5; // tabs of one session registering its device at once settle on one
const OPEN_RETRY_MS = 200;
const enc = new TextEncoder();
const dec = new TextDecoder();

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export class E2eClient {
  constructor(api, userId, device) {
    this.api = api;
    this.userId = userId;
    this.device = device;
    this.known = new Map(); // conversation id -> [{user_id, device_id}] to encrypt for
    this.onDevicesChanged = null; // (conversationId, addedUserIds, removedUserIds): a notice
  }

  async knownDevices(conversationId) {
    if (!this.known.has(conversationId)) {
      this.known.set(conversationId, (await keystore.get(`known:${this.userId}:${conversationId}`)) || null);
    }
    return this.known.get(conversationId);
  }

  /** The devices the server listed: kept, and a change from the last list announced. */
  async noteDevices(conversationId, devices) {
    const before = await this.knownDevices(conversationId);
    this.known.set(conversationId, devices);
    await keystore.put(`known:${this.userId}:${conversationId}`, devices);
    if (!before) return; // the first list: nothing changed that anyone saw
    const ids = (list) => new Set(list.map((d) => `${d.user_id}:${d.device_id}`));
    const was = ids(before);
    const now = ids(devices);
    const users = (list, other) => [...new Set(list.filter((d) => !other.has(`${d.user_id}:${d.device_id}`)).map((d) => d.user_id))];
    const added = users(devices, was);
    const removed = users(before, now);
    if (added.length || removed.length) this.onDevicesChanged?.(conversationId, added, removed);
  }

  /** This browser's device for the signed-in user: made and registered on first use. */
  static async open(api, userId) {
    const key = `device:${userId}`;
    for (let attempt = 0; attempt < OPEN_ATTEMPTS; attempt++) {
      let device = await keystore.get(key);
      const fresh = !device;
      if (fresh) device = await c.newDevice(randomId());
      const path = `/api/keys/devices/${device.deviceId}`;
      const body = await c.uploadBody(device, fresh ? PREKEYS_UPLOADED : 0);
      try {
        await api.request('PUT', path, { body });
      } catch (err) {
        if (err.code !== 'conflict') throw err;
        if (fresh) {
          // Another tab of this session registered its device first: take that one.
          await new Promise((resolve) => setTimeout(resolve, OPEN_RETRY_MS));
          continue;
        }
        // Signed in again: a new session. The device moves to it with the same keys.
        await api.request('DELETE', path);
        await api.request('PUT', path, { body: { ...body, one_time_prekeys: await c.newPrekeys(device, PREKEYS_UPLOADED) } });
      }
      await keystore.put(key, device);
      return new E2eClient(api, userId, device);
    }
    throw new Error('This session is another device already (its keys are not in this browser).');
  }

  get deviceId() {
    return this.device.deviceId;
  }

  async save() {
    await keystore.put(`device:${this.userId}`, this.device);
  }

  /** keys.low: top the one-time prekeys up. */
  async topUp() {
    const one_time_prekeys = await c.newPrekeys(this.device, PREKEYS_UPLOADED / 5);
    await this.save();
    await this.api.request('POST', `/api/keys/devices/${this.deviceId}/one-time-prekeys`, { body: { one_time_prekeys } });
  }

  sessionKey(peer) {
    return `session:${this.userId}:${this.deviceId}:${peer.user_id}:${peer.device_id}`;
  }

  async session(peer) {
    const stored = await keystore.get(this.sessionKey(peer));
    if (stored) return stored;
    const reply = await this.api.request('POST', '/api/keys/claim', { body: { user_id: peer.user_id, device_id: peer.device_id } });
    const [bundle] = reply.bundles;
    if (!bundle) throw new c.DecryptError('that device has no keys');
    return c.initiate(this.device, bundle);
  }

  /**
   * Encrypt `content` (an object: {body, ...}) for every device of the conversation, send it;
   * `attachments`: the ids of encrypted uploads (e2e/files.js) the content names.
   */
  async send(conversationId, content, clientMsgId, attachments = []) {
    const plaintext = enc.encode(JSON.stringify(content));
    const sealed = new Map();
    let peers = (await this.knownDevices(conversationId)) || [];
    for (let attempt = 0; attempt < 3; attempt++) {
      for (const peer of peers) {
        const id = `${peer.user_id}:${peer.device_id}`;
        if (sealed.has(id)) continue;
        const { session, envelope } = await c.encryptFor(await this.session(peer), peer, plaintext);
        await keystore.put(this.sessionKey(peer), session);
        sealed.set(id, envelope);
      }
      const wanted = new Set(peers.map((p) => `${p.user_id}:${p.device_id}`));
      const envelopes = [...sealed].filter(([id]) => wanted.has(id)).map(([, e]) => e);
      try {
        const reply = await this.api.request('POST', `/api/conversations/${conversationId}/messages`, {
          body: { envelopes, client_msg_id: clientMsgId, ...(attachments.length ? { attachments } : {}) },
        });
        return reply.message;
      } catch (err) {
        if (err.code !== 'devices_changed') throw err;
        peers = err.details.devices;
        await this.noteDevices(conversationId, peers);
      }
    }
    throw new Error('The devices of this conversation keep changing.');
  }

  /** The content of an encrypted message, or null when there is nothing for this device. */
  async read(message) {
    const envelope = (message.envelopes || []).find((e) => e.device_id === this.deviceId);
    if (!envelope) return null;
    const peer = { user_id: message.sender_id, device_id: message.sender_device_id };
    const stored = await keystore.get(this.sessionKey(peer));
    const { state, plaintext } = await c.decryptFrom(this.device, stored, envelope);
    await keystore.put(this.sessionKey(peer), state);
    if (envelope.type === 'prekey') await this.save(); // a one-time prekey was used up
    return JSON.parse(dec.decode(plaintext));
  }
}
