// The service worker (served at /sw.js, scope /): shows the Web Push notifications the server
// sends while no tab of the chat is open (docs/protocol.md, "Web Push"), and opens the
// conversation when one is clicked. A tab that is open shows its own notifications
// (static/js/notify.js): the server pushes only to users with no tab attached.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch {
    data = {};
  }
  const title = typeof data.title === 'string' && data.title ? data.title : 'Chat';
  const conversationId = typeof data.conversation_id === 'string' ? data.conversation_id : null;
  const options = {
    // No body for an encrypted conversation: the server sends none.
    body: typeof data.body === 'string' ? data.body : 'New message',
    // One notification per conversation: a newer message replaces the older one.
    tag: conversationId ? `conversation-${conversationId}` : 'chat',
    renotify: Boolean(conversationId),
    data: { conversation_id: conversationId },
  };
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(openConversation(event.notification.data?.conversation_id));
});

/** Focus a tab of the chat and have it open the conversation, or open a new tab on it. */
async function openConversation(id) {
  const tabs = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  const tab = tabs.find((client) => new URL(client.url).origin === self.location.origin);
  if (tab) {
    // The app opens it (static/js/push.js): no reload of a tab that is signed in.
    tab.postMessage({ type: 'push.open', conversation_id: id });
    await tab.focus().catch(() => {}); // focus needs the click's user activation
    return;
  }
  await self.clients.openWindow(id ? `/#c=${encodeURIComponent(id)}` : '/');
}
