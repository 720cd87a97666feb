// The composer's emoji picker: a curated set, grouped, searchable by name, usable with the
// keyboard alone; the chosen emoji goes in at the caret of the message box.

import { h } from '../dom.js';
import { EMOJI_GROUPS } from '../emoji-data.js';

const SVG = 'http://www.w3.org/2000/svg';

function smileyIcon() {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', '22');
  svg.setAttribute('height', '22');
  svg.setAttribute('aria-hidden', 'true');
  const shapes = [
    ['circle', { cx: 12, cy: 12, r: 9 }],
    ['path', { d: 'M8.5 14.5c.9 1.3 2.1 2 3.5 2s2.6-.7 3.5-2' }],
    ['circle', { cx: 9, cy: 10, r: 0.6 }],
    ['circle', { cx: 15, cy: 10, r: 0.6 }],
  ];
  for (const [tag, attrs] of shapes) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    el.setAttribute('fill', 'none');
    el.setAttribute('stroke', 'currentColor');
    el.setAttribute('stroke-width', '1.8');
    el.setAttribute('stroke-linecap', 'round');
    svg.append(el);
  }
  return svg;
}

/** Does `query` (words, any case) match the emoji's name or search words, each word a prefix? */
function matches(words, item) {
  const hay = `${item[1]} ${item[2] || ''}`.toLowerCase().split(/[\s-]+/);
  return words.every((w) => hay.some((word) => word.startsWith(w)));
}

/**
 * Put the picker's button before `input` (a textarea) in its form. `onInsert` runs after an
 * emoji went in (the box's own `input` event fires too).
 */
export function setupEmojiPicker({ input, onInsert = () => {} }) {
  const toggle = h(
    'button',
    {
      type: 'button',
      class: 'icon-btn emoji-toggle',
      id: 'emoji-toggle',
      attrs: { 'aria-label': 'Insert emoji', 'aria-haspopup': 'dialog', 'aria-expanded': 'false', 'aria-controls': 'emoji-picker' },
    },
    smileyIcon(),
  );
  const search = h('input', {
    type: 'search',
    id: 'emoji-search',
    autocomplete: 'off',
    spellcheck: false,
    placeholder: 'Search emoji',
    attrs: { 'aria-controls': 'emoji-grid' },
  });
  const grid = h('div', { class: 'emoji-grid', id: 'emoji-grid' });
  const empty = h('p', { class: 'emoji-empty', text: 'No emoji found.', hidden: true });
  const panel = h(
    'div',
    { class: 'emoji-picker', id: 'emoji-picker', hidden: true, attrs: { role: 'dialog', 'aria-label': 'Emoji' } },
    h('label', { class: 'sr-only', htmlFor: 'emoji-search', text: 'Search emoji' }),
    search,
    grid,
    empty,
  );
  input.before(toggle);
  input.form.append(panel);
  let buttons = [];
  let picking = null; // pick(onPick) waits for a choice: it goes there, not into the box

  function build() {
    if (buttons.length) return;
    for (const group of EMOJI_GROUPS) {
      const headingId = `emoji-group-${group.id}`;
      const items = group.items.map((item) =>
        h('button', {
          type: 'button',
          class: 'emoji',
          text: item[0],
          tabIndex: -1,
          title: item[1],
          attrs: { 'aria-label': item[1] },
          dataset: { emoji: item[0] },
        }),
      );
      for (const [i, b] of items.entries()) b.item = group.items[i];
      buttons.push(...items);
      grid.append(
        h(
          'section',
          { class: 'emoji-group', attrs: { 'aria-labelledby': headingId } },
          h('h3', { id: headingId, text: group.label }),
          h('div', { class: 'emoji-cells', attrs: { role: 'group', 'aria-labelledby': headingId } }, items),
        ),
      );
    }
    buttons[0].tabIndex = 0;
  }

  const visible = () => buttons.filter((b) => !b.hidden);

  function setTabStop(target) {
    for (const b of buttons) b.tabIndex = b === target ? 0 : -1;
  }

  function filter() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const b of buttons) b.hidden = words.length > 0 && !matches(words, b.item);
    for (const section of grid.children) section.hidden = ![...section.querySelectorAll('.emoji')].some((b) => !b.hidden);
    const shown = visible();
    empty.hidden = shown.length > 0;
    setTabStop(shown[0] || null);
  }

  function open() {
    build();
    panel.hidden = false;
    toggle.setAttribute('aria-expanded', 'true');
    // On a touch screen the search field would bring up the keyboard over the emoji.
    if (matchMedia('(pointer: coarse)').matches) (visible()[0] || search).focus();
    else search.focus();
  }

  function close({ focusInput = true } = {}) {
    if (panel.hidden) return;
    panel.hidden = true;
    picking = null;
    toggle.setAttribute('aria-expanded', 'false');
    search.value = '';
    filter();
    if (focusInput) input.focus();
  }

  function insert(emoji) {
    if (picking) {
      const onPick = picking;
      picking = null;
      onPick(emoji);
      return;
    }
    // The box keeps its selection while the picker has the focus: the emoji replaces it.
    const start = input.selectionStart ?? input.value.length;
    const end = input.selectionEnd ?? start;
    input.focus();
    input.setRangeText(emoji, start, end, 'end');
    input.dispatchEvent(new Event('input', { bubbles: true }));
    onInsert(emoji);
  }

  toggle.addEventListener('click', () => (panel.hidden ? open() : close()));
  search.addEventListener('input', filter);
  search.addEventListener('keydown', (event) => {
    if (event.key === 'ArrowDown' || (event.key === 'Enter' && !event.isComposing)) {
      const first = visible()[0];
      if (!first) return;
      event.preventDefault();
      if (event.key === 'Enter') {
        insert(first.dataset.emoji);
        close({ focusInput: false });
      } else first.focus();
    }
  });
  grid.addEventListener('click', (event) => {
    const b = event.target.closest('button.emoji');
    if (!b) return;
    insert(b.dataset.emoji);
    close({ focusInput: false });
  });
  grid.addEventListener('focusin', (event) => {
    if (event.target.matches('button.emoji')) setTabStop(event.target);
  });
  grid.addEventListener('keydown', (event) => {
    const b = event.target.closest('button.emoji');
    if (!b) return;
    const next = neighbour(b, event.key);
    if (next === undefined) return;
    event.preventDefault();
    if (next) next.focus();
    else if (event.key === 'ArrowUp') search.focus();
  });
  panel.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') {
      event.preventDefault();
      event.stopPropagation();
      close();
    }
  });
  // A press anywhere else closes it.
  document.addEventListener('pointerdown', (event) => {
    if (!panel.hidden && !panel.contains(event.target) && !toggle.contains(event.target)) close({ focusInput: false });
  });
  panel.addEventListener('focusout', (event) => {
    if (!panel.hidden && event.relatedTarget && !panel.contains(event.relatedTarget) && event.relatedTarget !== toggle) close({ focusInput: false });
  });

  /** The emoji the arrow key leads to from `b` (null: none there; undefined: not an arrow). */
  function neighbour(b, key) {
    const shown = visible();
    const i = shown.indexOf(b);
    if (key === 'ArrowLeft') return shown[i - 1] || null;
    if (key === 'ArrowRight') return shown[i + 1] || null;
    if (key === 'Home') return shown[0];
    if (key === 'End') return shown[shown.length - 1];
    if (key !== 'ArrowUp' && key !== 'ArrowDown') return undefined;
    // Up and down go to the nearest emoji in the row above or below, across group headings.
    const here = b.getBoundingClientRect();
    const down = key === 'ArrowDown';
    let rowTop = null;
    let best = null;
    for (const other of down ? shown.slice(i + 1) : shown.slice(0, i).reverse()) {
      const r = other.getBoundingClientRect();
      if (down ? r.top <= here.top + 1 : r.top >= here.top - 1) continue;
      if (rowTop === null) rowTop = r.top;
      if (Math.abs(r.top - rowTop) > 1) break;
      if (!best || Math.abs(r.left - here.left) < Math.abs(best.getBoundingClientRect().left - here.left)) best = other;
    }
    return best;
  }

  /** Open the picker for a choice that goes to onPick (a reaction), not into the box. */
  function pick(onPick) {
    open();
    picking = onPick;
  }

  return { close: () => close({ focusInput: false }), pick, toggle, panel };
}
