// Attachments, the parts every view shares: the server's limits as the page states them, sizes
// in words, a message's files as a preview line, the upload itself (with its retries), and a
// message's files as nodes (thumbnails sized before they load, file chips with a download link).

import { ApiError } from './api.js';
import { h } from './dom.js';
import { encryptedAttachment } from './e2e/files.js';

export const MAX_ATTACHMENTS = 10; // per message (chat/attachments.py)
const DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024; // the server's default, if the page says nothing
const THUMB_BOX_PX = 280; // an inline image fits in this square (thumbnails are at most 320 px)
const UPLOAD_RETRIES = 3; // a 429 (too many at once, or too many lately) is waited out this often
const RETRY_AFTER_MAX_S = 30;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The largest upload the server accepts, from the page (templates/index.html). */
export function maxUploadBytes() {
  const stated = Number(document.querySelector('meta[name="chat-max-upload-bytes"]')?.content);
  return Number.isFinite(stated) && stated > 0 ? stated : DEFAULT_MAX_UPLOAD_BYTES;
}

/** "812 B", "4.2 KB", "25 MB" (binary units, as the server's limit is counted). */
export function humanSize(bytes) {
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, '')} ${units[unit]}`;
}

export const isImage = (a) => a.kind === 'image' || a.kind === 'gif';

/** What a message of files only says in the conversation list and notifications. */
export function attachmentSummary(attachments = []) {
  const n = attachments.length;
  if (!n) return '';
  const count = (kind) => attachments.filter((a) => a.kind === kind).length;
  if (count('image') === n) return n === 1 ? 'Photo' : `${n} photos`;
  if (count('gif') === n) return n === 1 ? 'GIF' : `${n} GIFs`;
  if (n === 1) return attachments[0].name;
  return `${n} files`;
}

/** The preview of a message: its text, or what its files are. */
export const previewText = (m) =>
  m.deleted ? 'Message deleted' : m.body ? m.body.replace(/\s+/g, ' ') : m.encrypted ? 'Encrypted message' : attachmentSummary(m.attachments);

/** [width, height] of a box of the image's aspect ratio that fits in maxWidth x maxHeight. */
export function fitInside(width, height, maxWidth, maxHeight) {
  const w = width > 0 ? width : maxWidth;
  const ht = height > 0 ? height : maxHeight;
  const scale = Math.min(1, maxWidth / w, maxHeight / ht);
  return [Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(ht * scale))];
}

/**
 * Upload one file: resolves with the server's upload object. A 429 is waited out (its
 * Retry-After) a few times; `onWaiting` says so meanwhile. Rejects with ApiError, or an
 * AbortError once `signal` aborts.
 */
export async function uploadFile(api, file, { onProgress, onWaiting, signal, query } = {}) {
  for (let attempt = 0; ; attempt++) {
    try {
      const reply = await api.upload('/api/uploads', query || { name: file.name || 'file' }, file, { onProgress, signal });
      return reply.upload;
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 429 || attempt >= UPLOAD_RETRIES) throw err;
      onWaiting?.();
      const seconds = Math.min(RETRY_AFTER_MAX_S, Number(err.retryAfter) || 2);
      await sleep(seconds * 1000);
      if (signal?.aborted) throw new DOMException('The upload was cancelled.', 'AbortError');
    }
  }
}

const SVG = 'http://www.w3.org/2000/svg';

/** A small line icon (decorative): 'file', 'clip' or 'download'. */
export function icon(name, size = 20) {
  const paths = {
    file: 'M7 3h7l5 5v13H7zM14 3v5h5',
    clip: 'M21 11.5l-8.5 8.5a5 5 0 0 1-7-7L14 4.5a3.4 3.4 0 0 1 4.8 4.8L10.3 17.8a1.7 1.7 0 0 1-2.4-2.4L15.5 7.8',
    download: 'M12 4v11M7 10.5l5 5 5-5M5 20h14',
  };
  const svg = document.createElementNS(SVG, 'svg');
  for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: size, height: size, 'aria-hidden': 'true' })) svg.setAttribute(k, String(v));
  const path = document.createElementNS(SVG, 'path');
  for (const [k, v] of Object.entries({ d: paths[name], fill: 'none', stroke: 'currentColor', 'stroke-width': '1.8', 'stroke-linecap': 'round', 'stroke-linejoin': 'round' })) {
    path.setAttribute(k, v);
  }
  svg.append(path);
  return svg;
}

/**
 * An inline image: a button (it opens the viewer) around the thumbnail, whose box has the
 * image's size and aspect ratio before a byte of it arrives, so nothing below it moves.
 */
function thumbnail(a) {
  const [width, height] = fitInside(a.width, a.height, THUMB_BOX_PX, THUMB_BOX_PX);
  const label = `View ${a.kind === 'gif' ? 'GIF' : 'image'} ${a.name}`;
  return h(
    'button',
    {
      type: 'button',
      class: 'att-thumb',
      dataset: { fileId: a.id, url: a.url, name: a.name, kind: a.kind, width: a.width || 0, height: a.height || 0, size: a.size || 0 },
      attrs: { 'aria-label': label },
      style: { 'aspect-ratio': `${width} / ${height}`, width: `${width}px` },
    },
    h('img', { class: 'att-img', src: a.thumbnail_url || a.url, alt: '', width, height, decoding: 'async', draggable: false }),
    a.kind === 'gif' ? h('span', { class: 'att-badge', text: 'GIF', attrs: { 'aria-hidden': 'true' } }) : null,
  );
}

/** A file: its name, its size, and a link that downloads it (the signed url). */
export function fileChip(a) {
  const size = humanSize(a.size || 0);
  return h(
    'div',
    { class: 'att-file', dataset: { fileId: a.id } },
    h('span', { class: 'att-file-icon' }, icon('file')),
    h('span', { class: 'att-file-text' }, h('span', { class: 'att-name', text: a.name, title: a.name }), h('span', { class: 'att-size', text: size })),
    h(
      'a',
      { class: 'att-download', href: a.url, download: a.name, attrs: { 'aria-label': `Download ${a.name}, ${size}` } },
      icon('download', 18),
      h('span', { class: 'att-download-text', text: 'Download', attrs: { 'aria-hidden': 'true' } }),
    ),
  );
}

/** A message's files: its images in a gallery, then its other files as chips. */
export function renderAttachments(attachments) {
  const images = attachments.filter(isImage);
  const others = attachments.filter((a) => !isImage(a));
  return h(
    'div',
    { class: 'attachments' },
    images.length ? h('div', { class: 'att-gallery' }, images.map(thumbnail)) : null,
    others.map((a) => (a.e2e ? encryptedAttachment(a) : fileChip(a))), // decrypted here (e2e/files.js)
  );
}
