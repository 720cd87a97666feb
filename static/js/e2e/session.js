// The app's side of end-to-end encryption: this browser's device for the signed-in user,
// messages of encrypted conversations opened before they are shown, sends encrypted, safety
// numbers. Decryptions run one at a time (a ratchet's state is read and written back), and
// each plaintext is kept in IndexedDB by message id: a message key works once, so history
// read again shows what was decrypted the first time.

import { E2eClient } from './client.js';
import { b64d, safetyNumber } from './crypto.js';
import { reveal, sealedFiles } from './files.js';
import * as keystore from './keystore.js';

export const UNDECRYPTABLE = 'This message cannot be decrypted on this device.';

export class E2eSession {
  constructor(api, me) {
    this.api = api;
    this.me = me;
    this.client = null;
    this.chain = Promise.resolve(); // decryptions and sends, one at a time
    this.onDevicesChanged = null; // set by the app: a notice in the conversation
    // Made at sign-in, in the background; what needs it waits (a failure is kept, not thrown).
    this.ready = E2eClient.open(api, me.id).then(
      (client) => {
        this.client = client;
        client.onDevicesChanged = (...change) => this.onDevicesChanged?.(...change);
        return client;
      },
      (err) => {
        console.warn('end-to-end encryption is unavailable here', err);
        return null;
      },
    );
  }

  serial(work) {
    const run = this.chain.then(work);
    this.chain = run.catch(() => {});
    return run;
  }

  /** The messages with each encrypted one's body decrypted (or marked undecryptable). */
  async openAll(messages) {
    const client = await this.ready;
    return Promise.all(messages.map((m) => (m.encrypted && !m.deleted ? this.open(client, m) : m)));
  }

  open(client, message) {
    return this.serial(async () => {
      const kept = (await keystore.get(`plain:${message.id}`)) || (await keystore.get(`plain:cmid:${message.client_msg_id}`));
      if (kept) return reveal({ ...message, body: kept.body }, kept);
      let content = null;
      try {
        content = client ? await client.read(message) : null;
      } catch (err) {
        console.warn('could not decrypt', message.id, err);
      }
      if (!content) return { ...message, body: UNDECRYPTABLE, undecryptable: true };
      await keystore.put(`plain:${message.id}`, content);
      return reveal({ ...message, body: content.body }, content);
    });
  }

  /**
   * Encrypt and send; the stored message with its body (kept here, never on the server).
   * `attachments`: encrypted uploads (e2e/files.js), whose keys and names go in the plaintext.
   */
  send(conversationId, body, clientMsgId, attachments = []) {
    return this.serial(async () => {
      const client = await this.ready;
      if (!client) throw new Error('This browser cannot encrypt (no WebCrypto X25519).');
      const files = sealedFiles(attachments);
      const content = files.length ? { body, files } : { body };
      await keystore.put(`plain:cmid:${clientMsgId}`, content);
      const message = await client.send(conversationId, content, clientMsgId, files.map((f) => f.id));
      await keystore.put(`plain:${message.id}`, content);
      return reveal({ ...message, body }, content);
    });
  }

  async topUp() {
    const client = await this.ready;
    if (client) await client.topUp();
  }

  /** The safety number with each of the user's devices: [{deviceId, number, verified}]. */
  async safetyNumbers(userId) {
    const client = await this.ready;
    if (!client) return [];
    const reply = await this.api.request('GET', `/api/keys/users/${encodeURIComponent(userId)}`);
    const mine = client.device.identity.pub;
    const out = [];
    for (const d of reply.devices) {
      const number = await safetyNumber(mine, this.me.id, b64d(d.identity_key), userId);
      out.push({ deviceId: d.device_id, number, verified: Boolean(await keystore.get(`verified:${number}`)) });
    }
    return out;
  }

  async markVerified(number) {
    await keystore.put(`verified:${number}`, true);
  }
}
