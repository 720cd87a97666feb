// End-to-end encryption in the browser (docs/e2e.md): X3DH and the Double Ratchet on WebCrypto
// (X25519, Ed25519, HKDF-SHA-256, HMAC-SHA-256, AES-256-GCM). The same protocol, byte for byte,
// as the reference client tests/e2e_client.py. Private keys are generated non-extractable and
// kept as CryptoKey objects in IndexedDB (keystore.js): they never leave the browser.

const subtle = globalThis.crypto.subtle;
const enc = new TextEncoder();

const X3DH_INFO = enc.encode('chat-e2e X3DH');
const RATCHET_INFO = enc.encode('chat-e2e ratchet');
const MESSAGE_INFO = enc.encode('chat-e2e message');
export const MAX_SKIP = 1000; // message keys skipped in one chain at most
export const MAX_SKIPPED_KEYS = 2000; // kept per session, the oldest dropped first

export class DecryptError extends Error {}

export function b64e(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

export function b64d(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  return a && b && a.length === b.length && a.every((x, i) => x === b[i]);
}

// -- primitives -----------------------------------------------------------------------------

/** A new X25519 key pair: {privateKey (non-extractable), pub (32 raw bytes)}. */
export async function x25519Pair() {
  const pair = await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
  const pub = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, pub };
}

/** A new Ed25519 key pair: {privateKey (non-extractable), pub}. */
export async function ed25519Pair() {
  const pair = await subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
  const pub = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
  return { privateKey: pair.privateKey, pub };
}

export async function dh(privateKey, publicBytes) {
  const pub = await subtle.importKey('raw', publicBytes, { name: 'X25519' }, true, []);
  return new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: pub }, privateKey, 256));
}

export async function sign(privateKey, data) {
  return new Uint8Array(await subtle.sign({ name: 'Ed25519' }, privateKey, data));
}

export async function verify(publicBytes, signature, data) {
  const pub = await subtle.importKey('raw', publicBytes, { name: 'Ed25519' }, true, ['verify']);
  return subtle.verify({ name: 'Ed25519' }, pub, signature, data);
}

export async function hkdf(ikm, salt, info, length) {
  const key = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  const bits = await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, length * 8);
  return new Uint8Array(bits);
}

async function hmac(key, data) {
  const k = await subtle.importKey('raw', key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return new Uint8Array(await subtle.sign('HMAC', k, data));
}

async function kdfRk(rk, dhOut) {
  const out = await hkdf(dhOut, rk, RATCHET_INFO, 64);
  return [out.slice(0, 32), out.slice(32)];
}

async function kdfCk(ck) {
  return [await hmac(ck, Uint8Array.of(2)), await hmac(ck, Uint8Array.of(1))]; // [next ck, mk]
}

/** The header as associated data: dh's 32 bytes, pn and n as 32-bit big-endian. */
export function headerBytes(header) {
  const nums = new Uint8Array(8);
  const view = new DataView(nums.buffer);
  view.setUint32(0, header.pn);
  view.setUint32(4, header.n);
  return concat(b64d(header.dh), nums);
}

async function messageKey(mk) {
  const out = await hkdf(mk, new Uint8Array(32), MESSAGE_INFO, 44);
  const key = await subtle.importKey('raw', out.slice(0, 32), 'AES-GCM', false, ['encrypt', 'decrypt']);
  return { key, iv: out.slice(32) };
}

async function seal(mk, plaintext, ad) {
  const { key, iv } = await messageKey(mk);
  return new Uint8Array(await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: ad }, key, plaintext));
}

async function unseal(mk, ciphertext, ad) {
  const { key, iv } = await messageKey(mk);
  try {
    return new Uint8Array(await subtle.decrypt({ name: 'AES-GCM', iv, additionalData: ad }, key, ciphertext));
  } catch {
    throw new DecryptError('the envelope does not authenticate');
  }
}

// -- the Double Ratchet -----------------------------------------------------------------------
// A session is a plain object (structured-clonable, so IndexedDB keeps it whole, CryptoKeys
// included): {rk, ad, dhs: {privateKey, pub}, dhr, cks, ckr, ns, nr, pn, skipped, x3dh, ek}.

function skippedKey(dhBytes, n) {
  return `${b64e(dhBytes)}:${n}`;
}

async function initiatorRatchet(sk, ad, theirSpk) {
  const dhs = await x25519Pair();
  const [rk, cks] = await kdfRk(sk, await dh(dhs.privateKey, theirSpk));
  return { rk, ad, dhs, dhr: theirSpk, cks, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [], steps: 0 };
}

function responderRatchet(sk, ad, spk) {
  return { rk: sk, ad, dhs: spk, dhr: null, cks: null, ckr: null, ns: 0, nr: 0, pn: 0, skipped: [], steps: 0 };
}

async function ratchetEncrypt(s, plaintext) {
  const [cks, mk] = await kdfCk(s.cks);
  s.cks = cks;
  const header = { dh: b64e(s.dhs.pub), pn: s.pn, n: s.ns };
  s.ns += 1;
  return { header, ciphertext: await seal(mk, plaintext, concat(s.ad, headerBytes(header))) };
}

async function skip(s, until) {
  if (!s.ckr) return;
  if (until - s.nr > MAX_SKIP) throw new DecryptError('too many skipped messages');
  while (s.nr < until) {
    const [ckr, mk] = await kdfCk(s.ckr);
    s.ckr = ckr;
    s.skipped.push([skippedKey(s.dhr, s.nr), mk]);
    s.nr += 1;
    if (s.skipped.length > MAX_SKIPPED_KEYS) s.skipped.shift();
  }
}

async function dhStep(s, theirDh) {
  s.pn = s.ns;
  s.ns = 0;
  s.nr = 0;
  s.dhr = theirDh;
  [s.rk, s.ckr] = await kdfRk(s.rk, await dh(s.dhs.privateKey, theirDh));
  s.dhs = await x25519Pair();
  [s.rk, s.cks] = await kdfRk(s.rk, await dh(s.dhs.privateKey, theirDh));
  s.steps += 1;
}

/** Decrypt on a copy of the session: the session changes only when the envelope is good. */
async function ratchetDecrypt(session, header, ciphertext) {
  const s = { ...session, skipped: [...session.skipped] };
  const theirDh = b64d(header.dh);
  const ad = concat(s.ad, headerBytes(header));
  const at = s.skipped.findIndex(([k]) => k === skippedKey(theirDh, header.n));
  if (at >= 0) {
    const [[, mk]] = s.skipped.splice(at, 1);
    return { state: s, plaintext: await unseal(mk, ciphertext, ad) };
  }
  if (!equal(theirDh, s.dhr)) {
    await skip(s, header.pn);
    await dhStep(s, theirDh);
  }
  await skip(s, header.n);
  const [ckr, mk] = await kdfCk(s.ckr);
  s.ckr = ckr;
  s.nr += 1;
  return { state: s, plaintext: await unseal(mk, ciphertext, ad) };
}

// -- X3DH -----------------------------------------------------------------------------------

const F = new Uint8Array(32).fill(0xff);

/** A session with a claimed bundle's device (X3DH as the initiator); throws on a bad signature. */
export async function initiate(device, bundle) {
  const spk = b64d(bundle.signed_prekey.key);
  const signing = b64d(bundle.signing_key);
  if (!(await verify(signing, b64d(bundle.signed_prekey.signature), spk))) {
    throw new DecryptError("the bundle's signed prekey does not verify");
  }
  const ikB = b64d(bundle.identity_key);
  const ek = await x25519Pair();
  const parts = [
    await dh(device.identity.privateKey, spk),
    await dh(ek.privateKey, ikB),
    await dh(ek.privateKey, spk),
  ];
  const opk = bundle.one_time_prekey;
  if (opk) parts.push(await dh(ek.privateKey, b64d(opk.key)));
  const sk = await hkdf(concat(F, ...parts), new Uint8Array(32), X3DH_INFO, 32);
  const ad = concat(device.identity.pub, ikB);
  const x3dh = {
    ik: b64e(device.identity.pub),
    ek: b64e(ek.pub),
    spk_id: bundle.signed_prekey.id,
    opk_id: opk ? opk.id : null,
  };
  return { ...(await initiatorRatchet(sk, ad, spk)), x3dh, ek: x3dh.ek };
}

/** The session a prekey envelope starts (X3DH as the responder); uses up its one-time prekey. */
export async function respond(device, header) {
  if (header.spk_id !== device.spk.id) throw new DecryptError('unknown signed prekey');
  const ikA = b64d(header.ik);
  const ekA = b64d(header.ek);
  const parts = [
    await dh(device.spk.privateKey, ikA),
    await dh(device.identity.privateKey, ekA),
    await dh(device.spk.privateKey, ekA),
  ];
  if (header.opk_id !== null && header.opk_id !== undefined) {
    const opk = device.prekeys[header.opk_id];
    if (!opk) throw new DecryptError('the one-time prekey was used already');
    parts.push(await dh(opk, ekA));
    delete device.prekeys[header.opk_id];
  }
  const sk = await hkdf(concat(F, ...parts), new Uint8Array(32), X3DH_INFO, 32);
  const ad = concat(ikA, device.identity.pub);
  return { ...responderRatchet(sk, ad, { privateKey: device.spk.privateKey, pub: device.spk.pub }), x3dh: null, ek: header.ek };
}

// -- devices and envelopes --------------------------------------------------------------------

/** A new device: its keys, and what PUT /api/keys/devices/{id} takes. */
export async function newDevice(deviceId, prekeyCount = 50) {
  const identity = await x25519Pair();
  const signing = await ed25519Pair();
  const spkPair = await x25519Pair();
  const spk = { id: 1, ...spkPair, signature: await sign(signing.privateKey, spkPair.pub) };
  const device = { deviceId, identity, signing, spk, prekeys: {}, nextPrekey: 1 };
  return device;
}

/** `count` new one-time prekeys: the private halves kept on the device, the public listed. */
export async function newPrekeys(device, count) {
  const listed = [];
  for (let i = 0; i < count; i++) {
    const pair = await x25519Pair();
    const id = device.nextPrekey++;
    device.prekeys[id] = pair.privateKey;
    listed.push({ id, key: b64e(pair.pub) });
  }
  return listed;
}

export async function uploadBody(device, prekeyCount) {
  return {
    identity_key: b64e(device.identity.pub),
    signing_key: b64e(device.signing.pub),
    signed_prekey: { id: device.spk.id, key: b64e(device.spk.pub), signature: b64e(device.spk.signature) },
    one_time_prekeys: await newPrekeys(device, prekeyCount),
  };
}

/** Encrypt for a peer device: returns {envelope, session} (store the new session). */
export async function encryptFor(session, peer, plaintext) {
  const s = { ...session, skipped: [...session.skipped] };
  const { header, ciphertext } = await ratchetEncrypt(s, plaintext);
  const prekey = s.x3dh !== null && s.x3dh !== undefined;
  return {
    session: s,
    envelope: {
      user_id: peer.user_id,
      device_id: peer.device_id,
      type: prekey ? 'prekey' : 'message',
      header: prekey ? { ...header, ...s.x3dh } : header,
      ciphertext: b64e(ciphertext),
    },
  };
}

/**
 * Decrypt an envelope from a peer device with its session (or none): returns
 * {plaintext, session}; a prekey envelope with a new ephemeral key starts a new session.
 */
export async function decryptFrom(device, session, envelope) {
  let current = session;
  if (envelope.type === 'prekey' && (!current || current.ek !== envelope.header.ek)) {
    current = await respond(device, envelope.header);
  }
  if (!current) throw new DecryptError('no session with this device');
  const { state, plaintext } = await ratchetDecrypt(current, envelope.header, b64d(envelope.ciphertext));
  if (envelope.type === 'message') state.x3dh = null; // the peer answered: it has the session
  return { state, plaintext };
}

/**
 * The 60-digit safety number of two identity keys (Signal's numeric fingerprint: 5200 rounds
 * of SHA-512 over version, key and id per side; 30 digits each, the lower id first).
 */
export async function safetyNumber(mine, myId, theirs, theirId) {
  const half = async (key, id) => {
    let hash = concat(Uint8Array.of(0, 0), key, enc.encode(id));
    for (let i = 0; i < 5200; i++) {
      hash = new Uint8Array(await subtle.digest('SHA-512', concat(hash, key)));
    }
    let digits = '';
    for (let i = 0; i < 30; i += 5) {
      const chunk = hash.slice(i, i + 5).reduce((n, b) => n * 256 + b, 0);
      digits += String(chunk % 100000).padStart(5, '0');
    }
    return digits;
  };
  const a = await half(mine, myId);
  const b = await half(theirs, theirId);
  return myId < theirId ? a + b : b + a;
}
