// Web Push in this browser: the service worker (/sw.js) and this session's push subscription,
// turned on and off in Settings. The server pushes a DM to a user with no tab open; the worker
// shows it, and a click opens the conversation here (a message from the worker) or in a new
// tab (#c=<id>). The choice is kept in localStorage: a new session of this browser subscribes
// again (the server deletes a session's subscriptions when it ends).

const PREF_KEY = 'chat.push';

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

/** The base64url VAPID key as the bytes pushManager.subscribe takes. */
function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

export class WebPush {
  constructor({ api, openConversation }) {
    this.api = api;
    this.registration = null;
    if (!pushSupported()) return;
    this.ready = navigator.serviceWorker
      .register('/sw.js', { scope: '/' })
      .then((registration) => {
        this.registration = registration;
        return registration;
      })
      .catch(() => null);
    navigator.serviceWorker.addEventListener('message', (event) => {
      const id = event.data?.type === 'push.open' && event.data.conversation_id;
      if (typeof id === 'string') openConversation(id);
    });
  }

  get wanted() {
    return localStorage.getItem(PREF_KEY) === 'on';
  }

  /** Ask permission, subscribe with the server's VAPID key, post the subscription. */
  async enable() {
    if (!pushSupported()) throw new Error('This browser cannot receive push notifications.');
    if ((await Notification.requestPermission()) !== 'granted') {
      throw new Error('The browser does not allow notifications for this site.');
    }
    const registration = (await this.ready) || (await navigator.serviceWorker.ready);
    const { public_key: key } = await this.api.get('/api/push/vapid-public-key');
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription, key)) {
      await subscription.unsubscribe(); // made for another server key
      subscription = null;
    }
    subscription ??= await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: keyBytes(key),
    });
    await this.api.post('/api/push/subscriptions', subscription.toJSON());
    localStorage.setItem(PREF_KEY, 'on');
  }

  /** Tell the server, then drop the browser's subscription. */
  async disable() {
    localStorage.setItem(PREF_KEY, 'off');
    const subscription = await this.subscription();
    if (!subscription) return;
    const query = new URLSearchParams({ endpoint: subscription.endpoint });
    try {
      await this.api.del(`/api/push/subscriptions?${query}`);
    } finally {
      await subscription.unsubscribe();
    }
  }

  /** A new session: subscribe again if push was on here and the permission still holds. */
  async resume() {
    if (!this.wanted || !pushSupported() || Notification.permission !== 'granted') return;
    try {
      await this.enable();
    } catch {
      // Push stays off for this session; Settings shows the switch off.
    }
  }

  /** At sign-out: the server deleted the session's subscriptions; drop the browser's. */
  async signedOut() {
    const subscription = await this.subscription();
    await subscription?.unsubscribe();
  }

  async subscription() {
    if (!pushSupported()) return null;
    const registration = await this.ready;
    return registration ? registration.pushManager.getSubscription() : null;
  }
}

function sameKey(subscription, key) {
  const current = subscription.options?.applicationServerKey;
  if (!current) return true;
  const bytes = new Uint8Array(current);
  const wanted = keyBytes(key);
  return bytes.length === wanted.length && bytes.every((b, i) => b === wanted[i]);
}
