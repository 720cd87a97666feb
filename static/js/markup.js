// Message text to DOM nodes: links and a little formatting, built from a small tokenizer.
//
// Supported: ```code blocks```, `inline code`, *bold*, _italic_, and links that start with
// http://, https:// or mailto:. Everything else, HTML included, stays text: the result is
// made of text nodes and of <pre>, <code>, <strong>, <em> and <a> elements created here, with
// the message's characters only ever in text nodes and in a checked href.

export const ALLOWED_TAGS = ['A', 'CODE', 'EM', 'PRE', 'STRONG'];
const LINK_PROTOCOLS = new Set(['http:', 'https:', 'mailto:']);
const FENCE = /```([\s\S]*?)```/g;
const INLINE_CODE = /`([^`\n]+)`/g;
const URL_START = /(?<![\p{L}\p{N}_])(?:https?:\/\/|mailto:)[^\s<>"`]+/giu;
const TRAILING = /[.,;:!?'"*_]+$/; // "see https://example.com." links without the dot
const EMPHASIS = { '*': 'strong', _: 'em' };
// What may stand before an opening mark or after a closing one (\p{Co}: an atom).
const BOUNDARY = /[\s\p{P}\p{S}\p{Co}]/u;

/** The body as a fragment of nodes, safe to append anywhere. */
export function renderMarkup(body) {
  const fragment = document.createDocumentFragment();
  for (const part of splitBy(String(body ?? ''), FENCE)) {
    if (part.match) fragment.append(codeBlock(part.match[1]));
    else appendInline(fragment, part.text);
  }
  return fragment;
}

/** Alternating text and matches of `pattern` (a global RegExp). */
function splitBy(text, pattern) {
  const parts = [];
  let last = 0;
  pattern.lastIndex = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) parts.push({ text: text.slice(last, match.index) });
    parts.push({ match });
    last = match.index + match[0].length;
  }
  if (last < text.length) parts.push({ text: text.slice(last) });
  return parts;
}

function codeBlock(text) {
  // The line break right after the opening fence (and before the closing one) is layout.
  const code = document.createElement('code');
  code.textContent = text.replace(/^\n/, '').replace(/\n$/, '');
  const pre = document.createElement('pre');
  pre.append(code);
  return pre;
}

/**
 * Text outside code blocks. Inline code and links are cut out first as atoms (nothing inside
 * them is formatted); emphasis is then found over the rest, and may contain atoms.
 */
function appendInline(parent, text) {
  const atoms = [];
  let flat = '';
  const atom = (node) => {
    atoms.push(node);
    return String.fromCharCode(0xe000 + atoms.length - 1);
  };
  for (const part of splitBy(text, INLINE_CODE)) {
    if (part.match) {
      const code = document.createElement('code');
      code.textContent = part.match[1];
      flat += atom(code);
      continue;
    }
    for (const piece of splitBy(part.text, URL_START)) {
      if (!piece.match) {
        // A private-use character of the message itself must not pass for an atom.
        flat += piece.text.replace(/[\ue000-\uf8ff]/g, (ch) => atom(document.createTextNode(ch)));
        continue;
      }
      const [href, rest] = trimUrl(piece.match[0]);
      const link = safeLink(href);
      flat += link ? atom(link) : atom(document.createTextNode(href));
      flat += rest; // punctuation after the link: it may close an emphasis
    }
  }
  appendEmphasis(parent, flat, atoms);
}

/** A URL without the punctuation that ends the sentence around it. */
function trimUrl(raw) {
  let url = raw.replace(TRAILING, '');
  // A closing bracket belongs to the URL only if it opened one: "(see https://x.org/a_(b))".
  while (url.endsWith(')') && count(url, '(') < count(url, ')')) url = url.slice(0, -1);
  return [url, raw.slice(url.length)];
}

const count = (text, ch) => text.split(ch).length - 1;

/** An <a> for an http(s) or mailto URL; null for anything else or anything unparsable. */
function safeLink(href) {
  let url;
  try {
    url = new URL(href);
  } catch {
    return null;
  }
  if (!LINK_PROTOCOLS.has(url.protocol)) return null;
  if (url.protocol === 'mailto:' ? !url.pathname : !url.hostname) return null;
  const link = document.createElement('a');
  link.href = url.href;
  link.rel = 'noopener noreferrer';
  link.target = '_blank';
  link.textContent = href;
  return link;
}

/** *bold* and _italic_ over text in which each atom is one private-use character. */
function appendEmphasis(parent, text, atoms) {
  let plain = '';
  const flush = () => {
    if (plain) parent.append(document.createTextNode(plain));
    plain = '';
  };
  let i = 0;
  while (i < text.length) {
    const ch = text[i];
    const code = ch.charCodeAt(0);
    if (code >= 0xe000 && code < 0xe000 + atoms.length) {
      flush();
      parent.append(atoms[code - 0xe000]);
      i += 1;
      continue;
    }
    const close = EMPHASIS[ch] ? closingMark(text, i) : -1;
    if (close < 0) {
      plain += ch;
      i += 1;
      continue;
    }
    flush();
    const el = document.createElement(EMPHASIS[ch]);
    appendEmphasis(el, text.slice(i + 1, close), atoms);
    parent.append(el);
    i = close + 1;
  }
  flush();
}

/**
 * Where the mark opened at `start` closes, or -1. It opens after a boundary and before a
 * non-space, closes after a non-space and before a boundary, on the same line: "a*b*c",
 * "snake_case_name" and "2 * 3 * 4" stay as they are.
 */
function closingMark(text, start) {
  const mark = text[start];
  const before = start > 0 ? text[start - 1] : ' ';
  const after = text[start + 1];
  if (!BOUNDARY.test(before) || before === mark) return -1;
  if (after === undefined || /\s/.test(after) || after === mark) return -1;
  for (let j = start + 2; j < text.length; j++) {
    if (text[j] === '\n') return -1;
    if (text[j] !== mark) continue;
    const next = j + 1 < text.length ? text[j + 1] : ' ';
    if (!/\s/.test(text[j - 1]) && BOUNDARY.test(next) && next !== mark) return j;
  }
  return -1;
}
