// Small DOM helpers. Every piece of user data goes in as text (textContent), never as HTML.

/**
 * Create an element. `props`: `class`, `text`, `dataset`, `attrs`, `on` (event listeners) and
 * any other DOM property (hidden, disabled, type, ...). Children: nodes or strings (as text).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'attrs') for (const [name, v] of Object.entries(value)) el.setAttribute(name, v);
    else if (key === 'on') for (const [name, fn] of Object.entries(value)) el.addEventListener(name, fn);
    else if (key === 'style') for (const [name, v] of Object.entries(value)) el.style.setProperty(name, v);
    else el[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

/** A spinner element (decorative; the surrounding text or aria-busy says what is loading). */
export const spinner = () => h('span', { class: 'spinner', attrs: { 'aria-hidden': 'true' } });

/**
 * Show a button as busy while `work` runs; it cannot be pressed twice meanwhile.
 * Returns what `work` returns.
 */
export async function withBusy(button, work) {
  if (!button) return work();
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  button.replaceChildren(spinner(), label);
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
    button.textContent = label;
  }
}

/**
 * Render `items` into `list`, reusing the node of an item whose key and signature did not
 * change: focus and hover stay where they are while the list updates live.
 */
export function renderKeyed(list, items, key, signature, render) {
  const old = new Map();
  for (const child of list.children) old.set(child.dataset.key, child);
  const nodes = items.map((item) => {
    const k = String(key(item));
    const sig = signature(item);
    const existing = old.get(k);
    if (existing && existing.dataset.sig === sig) return existing;
    const node = render(item);
    node.dataset.key = k;
    node.dataset.sig = sig;
    if (existing && existing.contains(document.activeElement)) {
      // Keep keyboard focus on the same control of the replaced row.
      const focusId = document.activeElement.dataset.focus;
      queueMicrotask(() => node.querySelector(`[data-focus="${focusId}"]`)?.focus());
    }
    return node;
  });
  // Move nodes into place without detaching those already in position (keeps focus).
  nodes.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] ?? null);
  });
  while (list.children.length > nodes.length) list.lastElementChild.remove();
}

const TOAST_MS = 6000;
const TOAST_SAME_MS = 4000; // the same words again this soon refresh the toast shown

/**
 * A toast: `kind` is 'error', 'success' or 'info'. Errors stay a little longer. The same
 * message shown again while its toast is still up (two failed requests for one user action)
 * restarts that toast's timer instead of stacking a copy.
 */
export function toast(message, kind = 'info') {
  const box = $('toasts');
  const ttl = kind === 'error' ? TOAST_MS * 1.5 : TOAST_MS;
  for (const node of box.children) {
    if (node.dataset.text === message && node.dataset.kind === kind && Date.now() - Number(node.dataset.at) < TOAST_SAME_MS + ttl) {
      clearTimeout(node.removeTimer);
      node.dataset.at = String(Date.now());
      node.removeTimer = setTimeout(() => node.remove(), ttl);
      return node;
    }
  }
  const close = h('button', { type: 'button', text: '×', attrs: { 'aria-label': 'Dismiss' } });
  const node = h(
    'div',
    { class: `toast ${kind}`, dataset: { text: message, kind, at: String(Date.now()) }, attrs: { role: kind === 'error' ? 'alert' : 'status' } },
    h('span', { class: 'toast-text', text: message }),
    close,
  );
  close.addEventListener('click', () => node.remove());
  box.append(node);
  while (box.children.length > 4) box.firstElementChild.remove();
  node.removeTimer = setTimeout(() => node.remove(), ttl);
  return node;
}

/**
 * Ask before something that cannot be undone, in a modal <dialog> (never window.confirm).
 * Resolves true when the user pressed the confirming button; Escape or Cancel resolve false.
 */
export function confirmAction({ title, message, confirm = 'OK', danger = true }) {
  let dialog = $('confirm-dialog');
  if (!dialog) {
    dialog = h(
      'dialog',
      { id: 'confirm-dialog', class: 'dialog confirm', attrs: { 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' } },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { id: 'confirm-title' }),
        h('p', { id: 'confirm-message', class: 'confirm-message' }),
        h(
          'div',
          { class: 'dialog-actions' },
          h('button', { type: 'submit', class: 'btn ghost', id: 'confirm-cancel', value: 'cancel', text: 'Cancel' }),
          h('button', { type: 'submit', class: 'btn primary', id: 'confirm-ok', value: 'ok' }),
        ),
      ),
    );
    document.body.append(dialog);
  }
  if (dialog.open) dialog.close('cancel');
  $('confirm-title').textContent = title;
  $('confirm-message').textContent = message;
  const ok = $('confirm-ok');
  ok.textContent = confirm;
  ok.className = danger ? 'btn danger-solid' : 'btn primary';
  dialog.returnValue = '';
  const opener = document.activeElement;
  dialog.showModal();
  $('confirm-cancel').focus(); // the safe choice has the focus
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        resolve(dialog.returnValue === 'ok');
        if (opener?.isConnected) opener.focus();
      },
      { once: true },
    );
  });
}

const BACK_SHOWN_MS = 3000; // "Connected again" stays this long

/**
 * The connection banner at the top of every view: 'down' while the server cannot be reached,
 * 'back' briefly once it can again, 'ok' hidden.
 */
export function connectionBanner(state, text = '') {
  let banner = $('connection-banner');
  if (!banner) {
    banner = h('div', { id: 'connection-banner', class: 'conn-banner', hidden: true, attrs: { role: 'status', 'aria-live': 'polite' } }, h('span', { class: 'conn-text' }));
    document.body.prepend(banner);
    // The views make room for exactly the banner's height (one line or two on a phone).
    new ResizeObserver(() => {
      if (!banner.hidden) document.documentElement.style.setProperty('--banner-height', `${banner.offsetHeight}px`);
    }).observe(banner);
  }
  clearTimeout(banner.hideTimer);
  const root = document.documentElement;
  if (state === 'ok') {
    if (banner.dataset.state === 'down') state = 'back';
    else {
      banner.hidden = true;
      banner.dataset.state = 'ok';
      delete root.dataset.connection;
      return;
    }
  }
  banner.dataset.state = state;
  banner.hidden = false;
  root.dataset.connection = state;
  banner.querySelector('.conn-text').textContent =
    state === 'back' ? 'Connected again.' : text || 'No connection to the server. Reconnecting… Messages you send will wait and go out when it is back.';
  if (state === 'back') {
    banner.hideTimer = setTimeout(() => {
      banner.hidden = true;
      banner.dataset.state = 'ok';
      delete root.dataset.connection;
    }, BACK_SHOWN_MS);
  }
}

/** A stable hue from a string, for avatars and sender names. */
export function hueOf(text) {
  let hash = 0;
  for (const ch of text) hash = (hash * 31 + ch.codePointAt(0)) % 360;
  return String(hash);
}

export function avatar(name, { status = null, group = false } = {}) {
  const el = h('span', {
    class: group ? 'avatar group' : 'avatar',
    text: [...(name || '?')][0],
    style: { '--hue': hueOf(name || '?') },
    attrs: { 'aria-hidden': 'true' },
  });
  if (status) el.append(dot(status));
  return el;
}

export function dot(status) {
  return h('span', {
    class: 'dot',
    dataset: { status: status === 'online' ? 'online' : 'offline' },
    attrs: { 'aria-hidden': 'true' },
  });
}

/** Field errors: the message next to the field, aria-invalid on the input. */
export function setFieldError(input, message) {
  const box = document.getElementById(`${input.id}-error`);
  if (box) box.textContent = message || '';
  if (message) input.setAttribute('aria-invalid', 'true');
  else input.removeAttribute('aria-invalid');
}

/** Tabs with roving tabindex and arrow keys, per the ARIA tabs pattern. */
export function setupTabs(tablist, onSelect) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = false) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
    }
    if (focus) tab.focus();
    onSelect?.(tab.id);
  };
  tablist.addEventListener('click', (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab);
  });
  tablist.addEventListener('keydown', (event) => {
    const i = tabs.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (event.key === 'ArrowRight') next = tabs[(i + 1) % tabs.length];
    else if (event.key === 'ArrowLeft') next = tabs[(i - 1 + tabs.length) % tabs.length];
    else if (event.key === 'Home') next = tabs[0];
    else if (event.key === 'End') next = tabs[tabs.length - 1];
    if (next) {
      event.preventDefault();
      select(next, true);
    }
  });
  return (id) => select(tabs.find((t) => t.id === id));
}
