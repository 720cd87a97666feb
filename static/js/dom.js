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

/** A toast: `kind` is 'error', 'success' or 'info'. Errors stay a little longer. */
export function toast(message, kind = 'info') {
  const box = $('toasts');
  const close = h('button', { type: 'button', text: '×', attrs: { 'aria-label': 'Dismiss' } });
  const node = h(
    'div',
    { class: `toast ${kind}`, attrs: { role: kind === 'error' ? 'alert' : 'status' } },
    h('span', { class: 'toast-text', text: message }),
    close,
  );
  close.addEventListener('click', () => node.remove());
  box.append(node);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => node.remove(), kind === 'error' ? TOAST_MS * 1.5 : TOAST_MS);
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
