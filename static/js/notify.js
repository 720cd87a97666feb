// Notifications: while the tab is hidden, a new DM message, a mention of me in a group or an
// invitation shows a desktop notification (with the browser's permission) and plays a short
// beep; both can be turned off (Settings, kept in localStorage). The page title carries the
// total unread count: "(3) Chat".

import { previewText } from './files.js';

const PREFS_KEY = 'chat.notify';
const DEFAULT_PREFS = { desktop: true, sound: true };
const BEEP_SECS = 0.18;
const TITLE = 'Chat';

export function loadNotifyPrefs() {
  try {
    const saved = JSON.parse(localStorage.getItem(PREFS_KEY) || '{}');
    return { ...DEFAULT_PREFS, ...(saved && typeof saved === 'object' ? saved : {}) };
  } catch {
    return { ...DEFAULT_PREFS };
  }
}

export function saveNotifyPrefs(prefs) {
  localStorage.setItem(PREFS_KEY, JSON.stringify({ ...loadNotifyPrefs(), ...prefs }));
}

/** 'granted', 'denied', 'default', or 'unsupported' (no Notification API here). */
export function notificationPermission() {
  return 'Notification' in window ? Notification.permission : 'unsupported';
}

const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');

/** Whether the body names this user as a word: "@alice", not "@alicex" nor "bob@alice". */
export function mentions(body, username) {
  if (!body || !username) return false;
  const pattern = new RegExp(`(^|[^\\w@.-])@${escapeRegExp(username)}(?![\\w-]|\\.\\w)`, 'i');
  return pattern.test(body);
}

export class Notifier {
  constructor({ store, actions, openConversation }) {
    this.store = store;
    this.actions = actions;
    this.openConversation = openConversation;
    this.audio = null;
    this.notified = new Set(); // message ids already announced (an event may come twice)
    // Browsers start audio only after a user gesture: the context is made (or resumed) on
    // the first click or key press, so that a beep can sound later in a hidden tab.
    const prime = () => this.primeAudio();
    document.addEventListener('pointerdown', prime, { capture: true });
    document.addEventListener('keydown', prime, { capture: true });
    store.on('conversations', () => this.updateTitle());
  }

  primeAudio() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    if (!this.audio) {
      try {
        this.audio = new Context();
      } catch {
        return;
      }
    }
    if (this.audio.state === 'suspended') this.audio.resume().catch(() => {});
  }

  /** The sum of every conversation's unread count, in the tab's title. */
  updateTitle() {
    let total = 0;
    for (const conv of this.store.conversations.values()) total += conv.unread_count || 0;
    document.title = total ? `(${total > 999 ? '999+' : total}) ${TITLE}` : TITLE;
  }

  reset() {
    this.notified.clear();
    document.title = TITLE;
  }

  /** Called with every event after the store has taken it. */
  async onEvent(event) {
    if (event.type !== 'message.new' || !event.message) return;
    const m = event.message;
    const me = this.store.me;
    if (!me || m.sender_id === me.id || this.notified.has(m.id)) return;
    if (document.visibilityState !== 'hidden') return;
    let conv = this.store.conversations.get(m.conversation_id);
    if (!conv) {
      // The first message of a conversation new to us: the list is being read again.
      await this.actions.reloadConversationsSoon();
      conv = this.store.conversations.get(m.conversation_id);
      if (!conv) return;
    }
    const sender = this.store.nameOf(m.sender_id);
    let title = null;
    if (m.kind === 'invitation') title = `${sender} invited you`;
    else if (conv.kind === 'dm') title = sender;
    else if ((m.mentions || []).includes(me.id) || mentions(m.body, me.username)) {
      title = `${sender} mentioned you in ${conv.name || 'a group'}`;
    }
    if (!title) return;
    this.notified.add(m.id);
    this.announce(title, previewText(m), conv.id);
  }

  announce(title, body, conversationId) {
    const prefs = loadNotifyPrefs();
    if (prefs.desktop && notificationPermission() === 'granted') {
      try {
        const note = new Notification(title, { body: body.slice(0, 200), tag: conversationId });
        note.addEventListener('click', () => {
          window.focus();
          this.openConversation(conversationId);
          note.close();
        });
      } catch (err) {
        // Some platforms allow notifications only from a service worker: the beep remains.
        console.warn('notification failed', err);
      }
    }
    if (prefs.sound) this.beep();
  }

  /** A short two-tone beep, made with WebAudio (no sound file). */
  beep() {
    this.primeAudio();
    const ctx = this.audio;
    if (!ctx) return;
    const now = ctx.currentTime;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = 'sine';
    osc.frequency.setValueAtTime(880, now);
    osc.frequency.setValueAtTime(660, now + BEEP_SECS / 2);
    gain.gain.setValueAtTime(0.0001, now);
    gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + BEEP_SECS);
    osc.connect(gain).connect(ctx.destination);
    osc.start(now);
    osc.stop(now + BEEP_SECS + 0.02);
  }
}
