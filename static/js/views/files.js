// Attachments in the open conversation: the composer's Attach button, drag and drop onto the
// conversation, images pasted into the message box; each file uploads at once with its own
// progress bar and Cancel, and waits as a chip above the box until the message goes. Also the
// viewer: a dialog that shows the conversation's images full size, one after the other.

import { $, h, toast } from '../dom.js';
import { uploadEncrypted } from '../e2e/files.js';
import { MAX_ATTACHMENTS, fitInside, humanSize, icon, isImage, maxUploadBytes } from '../files.js';

const UPLOADS_AT_ONCE = 3; // the server takes 4 at once per user: another tab may need one
const CHIP_THUMB_PX = 40;

/**
 * The composer's side. `current()` is the open conversation; `onReady(conversationId)` runs
 * when a send that waited for its uploads may go (chat.js sends then).
 */
export function setupComposerFiles({ actions, input, current, onReady }) {
  const form = input.form;
  const pane = $('chat-pane');
  const limit = maxUploadBytes();
  const trays = new Map(); // conversation id -> [item]: files chosen for its next message
  const waiting = new Set(); // conversations whose send waits for their uploads
  let running = 0;
  let nextKey = 0;

  const picker = h('input', { type: 'file', id: 'attach-input', multiple: true, hidden: true, tabIndex: -1 });
  const button = h(
    'button',
    { type: 'button', class: 'icon-btn attach-toggle', id: 'attach-button', attrs: { 'aria-label': 'Attach files' }, on: { click: () => picker.click() } },
    icon('clip', 22),
  );
  const tray = h('ul', { class: 'att-tray', id: 'attach-tray', hidden: true, attrs: { 'aria-label': 'Attachments to send' } });
  const status = h('p', { class: 'att-status', id: 'attach-status', attrs: { role: 'status' } });
  // Attach, then the emoji button, then the box: the emoji stay one Shift+Tab from typing.
  (form.querySelector('#emoji-toggle') || input).before(button);
  form.prepend(tray, status, picker);

  picker.addEventListener('change', () => {
    add([...picker.files]);
    picker.value = ''; // the same file may be chosen again
    input.focus();
  });

  // Paste: images (or any file) from the clipboard; text pastes as text.
  input.addEventListener('paste', (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (!files.length) return;
    event.preventDefault();
    add(files);
  });

  // Drag and drop anywhere on the open conversation. Outside it, a dropped file must not
  // make the browser leave the page to show it.
  const carriesFiles = (event) => [...(event.dataTransfer?.types || [])].includes('Files');
  const canAttach = () => Boolean(current()) && !form.hidden && !button.hidden;
  let depth = 0;
  pane.addEventListener('dragenter', (event) => {
    if (!carriesFiles(event) || !canAttach()) return;
    event.preventDefault();
    depth += 1;
    pane.classList.add('drop-target');
  });
  pane.addEventListener('dragover', (event) => {
    if (!carriesFiles(event) || !canAttach()) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    pane.classList.add('drop-target');
  });
  pane.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) pane.classList.remove('drop-target');
  });
  pane.addEventListener('drop', (event) => {
    depth = 0;
    pane.classList.remove('drop-target');
    if (!carriesFiles(event)) return;
    event.preventDefault();
    if (canAttach()) add([...event.dataTransfer.files]);
  });
  for (const type of ['dragover', 'drop']) {
    window.addEventListener(type, (event) => {
      if (carriesFiles(event) && !pane.contains(event.target)) event.preventDefault();
    });
  }

  const itemsOf = (id) => trays.get(id) || [];

  /**
   * Files chosen for the open conversation: what the browser can tell is refused (empty, too
   * large, more than a message holds) is said at once and never sent.
   */
  function add(files) {
    const id = current();
    if (!id || !files.length) return;
    const items = itemsOf(id);
    for (const file of files) {
      if (items.length >= MAX_ATTACHMENTS) {
        toast(`A message holds at most ${MAX_ATTACHMENTS} files.`, 'error');
        break;
      }
      const name = file.name || 'file';
      if (file.size > limit) {
        toast(`${name} is too large: the limit is ${humanSize(limit)}.`, 'error');
        continue;
      }
      if (file.size === 0) {
        toast(`${name} is empty.`, 'error');
        continue;
      }
      items.push({ key: `f${nextKey++}`, file, name, size: file.size, state: 'queued', loaded: 0, upload: null, controller: new AbortController() });
    }
    trays.set(id, items);
    pump();
    render();
  }

  /** Start queued uploads, a few at a time, oldest first across conversations. */
  function pump() {
    for (const [id, items] of trays) {
      for (const item of items) {
        if (running >= UPLOADS_AT_ONCE) return;
        if (item.state === 'queued') start(id, item);
      }
    }
  }

  async function start(id, item) {
    running += 1;
    item.state = 'uploading';
    try {
      const encrypted = actions.store.conversations.get(id)?.encrypted; // the key goes in the message
      const upload = encrypted ? (file, options) => uploadEncrypted(actions.api, file, options) : (file, options) => actions.upload(file, options);
      item.upload = await upload(item.file, {
        signal: item.controller.signal,
        onProgress: (loaded) => {
          item.loaded = loaded;
          renderProgress(item);
        },
        onWaiting: () => {
          item.loaded = 0;
          renderProgress(item);
        },
      });
      item.state = 'done';
    } catch (err) {
      if (item.controller.signal.aborted || err?.name === 'AbortError') return; // cancelled: already gone
      drop(id, item);
      // A 401 signs the page out, which says so itself.
      if (err?.status !== 401) toast(`${item.name} was not uploaded: ${err.message}`, 'error');
      waiting.delete(id); // the user decides what to send now
    } finally {
      running -= 1;
      pump();
      render();
      settle(id);
    }
  }

  function drop(id, item) {
    const items = itemsOf(id).filter((i) => i !== item);
    if (items.length) trays.set(id, items);
    else trays.delete(id);
  }

  /** Cancel an upload, or take a finished one off the message. */
  function remove(id, item) {
    item.controller.abort();
    drop(id, item);
    render();
    settle(id);
    input.focus();
  }

  /** A waiting send goes once nothing of its conversation is uploading any more. */
  function settle(id) {
    if (!waiting.has(id) || busy(id)) return;
    waiting.delete(id);
    render();
    onReady(id);
  }

  const busy = (id) => itemsOf(id).some((i) => i.state === 'queued' || i.state === 'uploading');

  function renderProgress(item) {
    const bar = tray.querySelector(`li[data-key="${item.key}"] progress`);
    if (bar) bar.value = item.loaded;
  }

  function chip(id, item) {
    const done = item.state === 'done';
    const upload = item.upload;
    let preview = h('span', { class: 'att-file-icon' }, icon('file'));
    if (done && isImage(upload) && upload.thumbnail_url) {
      const [width, height] = fitInside(upload.width, upload.height, CHIP_THUMB_PX, CHIP_THUMB_PX);
      preview = h('img', { class: 'att-chip-img', src: upload.thumbnail_url, alt: '', width, height });
    }
    const what = done
      ? h('span', { class: 'att-size', text: humanSize(item.size) })
      : h('progress', { max: item.size, value: item.loaded, attrs: { 'aria-label': `Uploading ${item.name}` } });
    return h(
      'li',
      { class: 'att-chip', dataset: { key: item.key, state: item.state } },
      preview,
      h('span', { class: 'att-file-text' }, h('span', { class: 'att-name', text: item.name, title: item.name }), what),
      h('button', {
        type: 'button',
        class: 'att-remove',
        text: '×',
        attrs: { 'aria-label': done ? `Remove ${item.name}` : `Cancel upload of ${item.name}` },
        on: { click: () => remove(id, item) },
      }),
    );
  }

  function render() {
    const id = current();
    const items = id ? itemsOf(id) : [];
    const focused = tray.contains(document.activeElement);
    tray.replaceChildren(...items.map((item) => chip(id, item)));
    tray.hidden = !items.length;
    if (focused && !tray.contains(document.activeElement)) input.focus();
    const wait = id && waiting.has(id);
    status.textContent = wait ? 'The message goes as soon as the files are uploaded…' : '';
    form.classList.toggle('sending-files', Boolean(wait));
  }

  return {
    render,
    add,
    /** Something of this conversation is still uploading. */
    busy,
    /** The finished uploads of this conversation, in the order chosen. */
    uploads: (id) => itemsOf(id).filter((i) => i.state === 'done').map((i) => i.upload),
    /** Send once the uploads are done (nothing happens if they are cancelled and nothing is left). */
    sendWhenReady(id) {
      waiting.add(id);
      render();
    },
    waiting: (id) => waiting.has(id),
    /** The message went: its files leave the composer. */
    clear(id) {
      trays.delete(id);
      waiting.delete(id);
      render();
    },
    /** Sign-out: every upload stops, nothing stays for the next user. */
    reset() {
      for (const items of trays.values()) for (const item of items) item.controller.abort();
      trays.clear();
      waiting.clear();
      render();
    },
  };
}

/**
 * The viewer: the conversation's images full size in a modal dialog, labelled by the file's
 * name. ArrowLeft/ArrowRight go to the previous and next image of the conversation (as the
 * list shows them), Escape closes, and the focus goes back to the thumbnail that opened it.
 */
export function setupViewer(list) {
  const dialog = $('viewer');
  const stage = $('viewer-stage');
  const title = $('viewer-title');
  const count = $('viewer-count');
  const download = $('viewer-download');
  let fileId = null;
  let opener = null;

  const thumbs = () => [...list.querySelectorAll('.att-thumb')];

  function show(thumb) {
    const all = thumbs();
    const index = all.indexOf(thumb);
    const d = thumb.dataset;
    fileId = d.fileId;
    title.textContent = d.name;
    count.textContent = `Image ${index + 1} of ${all.length} · ${humanSize(Number(d.size))}`;
    download.href = d.url;
    download.download = d.name;
    download.setAttribute('aria-label', `Download ${d.name}`);
    // The box has its size before the image arrives; a new element, so the previous image
    // never shows under the next one's name.
    const room = stage.getBoundingClientRect();
    const [width, height] = fitInside(Number(d.width), Number(d.height), Math.max(120, room.width - 16), Math.max(120, room.height - 16));
    stage.replaceChildren(h('img', { id: 'viewer-image', src: d.url, alt: d.name, width, height, decoding: 'async' }));
    $('viewer-prev').disabled = index <= 0;
    $('viewer-next').disabled = index >= all.length - 1;
  }

  function move(step) {
    const all = thumbs();
    const index = all.findIndex((t) => t.dataset.fileId === fileId);
    const next = all[index + step];
    if (next) show(next);
  }

  dialog.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowLeft' || event.key === 'ArrowRight') {
      event.preventDefault();
      move(event.key === 'ArrowLeft' ? -1 : 1);
    }
  });
  $('viewer-prev').addEventListener('click', () => move(-1));
  $('viewer-next').addEventListener('click', () => move(1));
  $('viewer-close').addEventListener('click', () => dialog.close());
  // A click on the backdrop (the dialog itself, outside its content) closes it too.
  dialog.addEventListener('click', (event) => event.target === dialog && dialog.close());
  dialog.addEventListener('close', () => {
    stage.replaceChildren();
    const back = opener?.isConnected ? opener : list.querySelector(`.att-thumb[data-file-id="${CSS.escape(fileId || '')}"]`);
    back?.focus();
    opener = null;
  });
  list.addEventListener('click', (event) => {
    const thumb = event.target.closest('.att-thumb');
    if (!thumb) return;
    opener = thumb;
    if (!dialog.open) dialog.showModal();
    show(thumb);
    $('viewer-close').focus();
  });

  return {
    close() {
      if (dialog.open) dialog.close();
    },
  };
}
