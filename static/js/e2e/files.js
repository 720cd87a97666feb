// Files of encrypted conversations (docs/e2e.md, *Files*). Before it leaves the browser a file is
// encrypted with AES-256-GCM under a random 256-bit key and 96-bit IV of its own; the server
// gets the ciphertext only (POST /api/uploads?encrypted=true, no name), and the key, IV, name,
// type and size travel inside the encrypted message. A reader downloads the ciphertext by the
// attachment's signed url, decrypts it here and shows it from an object URL.

import { h } from '../dom.js';
import { fileChip, uploadFile } from '../files.js';
import { b64d, b64e } from './crypto.js';

const KEY_BITS = 256;
const IV_BYTES = 12;
// Shown inline when the sender says the file is one of these; anything else is a download only
// (a Blob of another type opened from its object URL could run as a page of this origin).
const INLINE_TYPES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp']);

const opened = new Map(); // file id -> Promise of its decrypted Blob (each file fetched once)

/** Encrypt a File: the ciphertext as a Blob, and what the message's plaintext says of it. */
export async function encryptFile(file) {
  const key = await crypto.subtle.generateKey({ name: 'AES-GCM', length: KEY_BITS }, true, ['encrypt']);
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const sealed = await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, await file.arrayBuffer());
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', key));
  const meta = { key: b64e(raw), iv: b64e(iv), name: file.name || 'file', type: file.type || 'application/octet-stream', size: file.size };
  return { blob: new Blob([sealed], { type: 'application/octet-stream' }), meta };
}

/**
 * Upload a file for an encrypted conversation (files.js's uploadFile, with its progress and
 * retries): the server's upload object, shown with the real name, type and size (`e2e` holds
 * them with the key, for the message's plaintext).
 */
export async function uploadEncrypted(api, file, options) {
  const { blob, meta } = await encryptFile(file);
  const upload = await uploadFile(api, blob, { ...options, query: { encrypted: 'true' } });
  return withMeta(upload, { id: upload.id, ...meta });
}

function withMeta(attachment, meta) {
  return { ...attachment, name: meta.name, size: meta.size, content_type: meta.type, e2e: meta };
}

/** What a message's plaintext carries of its encrypted uploads: [{id, key, iv, name, type, size}]. */
export const sealedFiles = (attachments = []) => attachments.filter((a) => a.e2e).map((a) => ({ ...a.e2e, id: a.id }));

const wellFormed = (f) =>
  f && typeof f.id === 'string' && typeof f.key === 'string' && typeof f.iv === 'string' && typeof f.name === 'string' && typeof f.type === 'string' && Number.isFinite(f.size);

/** The message with its attachments as the decrypted content names them (the server's say "encrypted"). */
export function reveal(message, content) {
  const files = new Map((Array.isArray(content?.files) ? content.files : []).filter(wellFormed).map((f) => [f.id, f]));
  if (!message.attachments?.length || !files.size) return message;
  return { ...message, attachments: message.attachments.map((a) => (files.has(a.id) ? withMeta(a, files.get(a.id)) : a)) };
}

/** The file's bytes, decrypted (a Blob of the type given: octet-stream unless shown inline). */
function decrypted(a, type) {
  if (!opened.has(a.id)) {
    const work = (async () => {
      const response = await fetch(a.url, { credentials: 'omit' });
      if (!response.ok) throw new Error(`the file could not be downloaded (${response.status})`);
      const key = await crypto.subtle.importKey('raw', b64d(a.e2e.key), 'AES-GCM', false, ['decrypt']);
      const plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: b64d(a.e2e.iv) }, key, await response.arrayBuffer());
      return new Uint8Array(plain);
    })();
    work.catch(() => opened.delete(a.id)); // a later render tries again
    opened.set(a.id, work);
  }
  return opened.get(a.id).then((bytes) => new Blob([bytes], { type }));
}

/**
 * An encrypted attachment: a file chip whose link downloads the decrypted bytes under the
 * real name, and above it the image itself when it is one.
 */
export function encryptedAttachment(a) {
  const chip = fileChip({ ...a, url: '#' });
  const link = chip.querySelector('a.att-download');
  let ready = false;
  link.addEventListener('click', async (event) => {
    if (ready) return; // the object URL is in href: the browser downloads it
    event.preventDefault();
    try {
      link.href = URL.createObjectURL(await decrypted(a, 'application/octet-stream'));
      ready = true;
      link.click();
    } catch (err) {
      console.warn('could not decrypt', a.id, err);
      link.textContent = 'Cannot be decrypted';
    }
  });
  if (!INLINE_TYPES.has(a.content_type)) return chip;
  const img = h('img', { class: 'att-img att-e2e-img', alt: a.name, decoding: 'async', draggable: false });
  decrypted(a, a.content_type).then(
    (blob) => {
      img.src = URL.createObjectURL(blob);
    },
    (err) => console.warn('could not decrypt', a.id, err),
  );
  return h('div', { class: 'att-e2e', dataset: { fileId: a.id } }, img, chip);
}
