// Entry point: restore the session, wire the views, run the event stream.

import { Actions } from './actions.js';
import { Api } from './api.js';
import { Notifier } from './notify.js';
import { WebPush } from './push.js';
import { $, confirmAction, connectionBanner, toast } from './dom.js';
import { Realtime } from './realtime.js';
import { Store } from './store.js';
import { E2eSession } from './e2e/session.js';
import { addSystemLine } from './system.js';
import { sessionEndedText, setupAccount } from './views/account.js';
import { reportMessage, setupAdmin } from './views/admin.js';
import { setupAuth } from './views/auth.js';
import { setupChat } from './views/chat.js';
import { setupGroups } from './views/groups.js';
import { setupNotifications } from './views/notifications.js';
import { setupPrivacy } from './views/privacy.js';
import { Reactions } from './views/reactions.js';
import { setupSettings } from './views/settings.js';
import { setupSidebar } from './views/sidebar.js';

const api = new Api();
const store = new Store();
const actions = new Actions(api, store);
const reactions = new Reactions({ api, store, actions });
actions.changes = reactions; // the change cursor of each conversation loaded
const forceLongPoll = new URLSearchParams(location.search).get('transport') === 'longpoll';
let realtime = null;
let signingOut = false; // our own sign-out: the session.ended it causes is no news

// The open conversation lives in the URL (#c=<id>): a reload, Back and links keep it.
const conversationInHash = () => new URLSearchParams(location.hash.slice(1)).get('c');
const wide = matchMedia('(min-width: 760px)'); // the two-pane layout (app.css)

async function openConversation(id) {
  // A push or a notification can name a conversation begun since the list loaded: fetch the
  // list first, or route() would drop the id as unknown.
  if (store.conversationsLoaded && !store.conversations.has(id)) await actions.loadConversations();
  if (conversationInHash() === id) route();
  else location.hash = `c=${encodeURIComponent(id)}`;
}

function closeConversation() {
  if (conversationInHash()) history.pushState(null, '', `${location.pathname}${location.search}`);
  route();
}

const auth = setupAuth(api, (reply) => {
  api.setToken(reply.token);
  startSession(reply.user);
});
const sidebar = setupSidebar({ store, actions, openConversation });
const groups = setupGroups({ store, actions, openConversation });
const chat = setupChat({
  store,
  actions,
  reactions,
  openGroupPanel: (id) => groups.openPanel(id),
  closeConversation,
  reportMessage: (conversationId, m) => reportMessage(api, conversationId, m),
});
const privacy = setupPrivacy({ api, store, actions, openConversation });
const webPush = new WebPush({ api, openConversation });
const settings = setupSettings({ privacy, webPush });
const account = setupAccount({ api, onDeleted: () => endSession('Your account was deleted.') });
$('open-account').addEventListener('click', () => {
  settings.close();
  account.open();
});
const notifier = new Notifier({ store, actions, openConversation });
const admin = setupAdmin({ api, store });
const notifications = setupNotifications({ api, openConversation });

function route() {
  if (!store.me) return;
  const id = conversationInHash();
  const shell = $('main-view');
  if (id && (store.conversations.has(id) || !store.conversationsLoaded)) {
    store.activeId = id;
    shell.classList.add('chat-open');
    store.emit('active');
    if (store.conversations.has(id) && chat.current !== id) {
      // On a phone the keyboard would cover the messages: there the user taps the box.
      chat.show(id).then(() => wide.matches && chat.current === id && chat.focusComposer());
    }
  } else {
    if (id) history.replaceState(null, '', `${location.pathname}${location.search}`);
    store.activeId = null;
    shell.classList.remove('chat-open');
    chat.hide();
    store.emit('active');
  }
}
window.addEventListener('hashchange', route);
window.addEventListener('popstate', route);

// The conversation named in the URL can be shown once the list has arrived.
store.on('conversations', () => {
  const id = conversationInHash();
  if (!store.me || !id) return;
  if (!store.conversations.has(id) && store.conversationsLoaded) route();
  else if (store.conversations.has(id) && chat.current !== id) route();
});
store.on('active', () => {
  if (store.activeId && !store.conversations.has(store.activeId) && store.conversationsLoaded) route();
});

// Back on the tab: what arrived meanwhile is now read.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && store.activeId) actions.markRead(store.activeId);
});

function startSession(user) {
  store.me = user;
  actions.e2e = new E2eSession(api, user); // this browser's device (e2e/): keys made on first sign-in
  actions.e2e.onDevicesChanged = (conversationId, added, removed) => {
    const who = (id) => (id === user.id ? 'You' : store.nameOf(id));
    for (const id of added) addSystemLine(store, conversationId, `${who(id)} added a device: compare safety numbers again`);
    for (const id of removed) addSystemLine(store, conversationId, `${who(id)} removed a device`);
  };
  store.emit('me');
  $('boot').hidden = true;
  auth.hide();
  $('main-view').hidden = false;
  webPush.resume();
  realtime = new Realtime({
    api,
    forceLongPoll,
    onHello: (hello, resumed) => {
      store.me = hello.user;
      store.emit('me');
      // A new queue may have missed events: read the state again (never silently stale).
      if (!resumed) Promise.all([actions.resync(), reactions.catchUp()]).then(route);
      if (!resumed) notifications.load();
    },
    onEvent: (event) => {
      actions.handleEvent(event);
      privacy.onEvent(event);
      notifier.onEvent(event);
      notifications.onEvent(event);
    },
    onStatus: (state) => {
      store.transport = state;
      store.emit('transport');
      if (state.status === 'reconnecting') connectionBanner('down');
      else if (state.status === 'live') {
        connectionBanner('ok');
        actions.connectionBack(); // what waits in the outbox goes out now
      }
    },
    onSessionEnded: (reason) => endSession(signingOut ? '' : sessionEndedText(reason)),
  });
  actions.realtime = realtime;
  realtime.start();
  actions.restoreOutbox();
  route();
  // Into the app (not left on the sign-in form that just went away): the open chat's box,
  // or else the sidebar's current tab.
  const focused = document.activeElement;
  if (!focused || focused === document.body || $('auth-view').contains(focused)) {
    document.querySelector('#sidebar [role="tab"][aria-selected="true"]')?.focus();
  }
}

/** Back to the sign-in form, with nothing of the last user left in memory. */
function endSession(message = '') {
  connectionBanner('ok');
  if (!store.me) return;
  realtime?.stop();
  realtime = null;
  api.setToken(null);
  groups.closeAll();
  settings.close();
  account.close();
  admin.reset();
  privacy.reset();
  notifier.reset();
  reactions.forget();
  notifications.reset();
  chat.reset();
  sidebar.reset();
  actions.reset();
  store.reset();
  $('main-view').hidden = true;
  $('main-view').classList.remove('chat-open');
  history.replaceState(null, '', `${location.pathname}${location.search}`);
  $('toasts').replaceChildren();
  document.title = 'Chat';
  auth.show();
  if (message) toast(message, 'error');
}

api.onUnauthorized = () => endSession(signingOut ? '' : 'Your session has ended. Please sign in again.');

// The skip link jumps to the message box, or to the conversations when none is open (and
// never touches the URL's hash, which names the open conversation).
document.querySelector('.skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  if (chat.current) chat.focusComposer();
  else document.querySelector('#conversation-list button, #new-group')?.focus();
});

$('logout').addEventListener('click', async (event) => {
  const button = event.currentTarget;
  const unsent = actions.unsentCount();
  if (unsent) {
    const sure = await confirmAction({
      title: 'Log out?',
      message: `${unsent === 1 ? '1 message has' : `${unsent} messages have`} not been sent yet. Logging out now discards ${unsent === 1 ? 'it' : 'them'}.`,
      confirm: 'Log out and discard',
    });
    if (!sure) return;
    actions.dropOutbox();
  }
  button.disabled = true;
  // The server ends this session everywhere, this tab's event stream included: that
  // session.ended (or 4401 close) is our own doing, not something to warn about.
  signingOut = true;
  realtime?.stop();
  try {
    await api.post('/api/auth/logout');
  } catch (err) {
    // Signed out here anyway; the token is dropped from this browser.
    if (err.status !== 401) toast(`Sign-out could not reach the server: ${err.message}`, 'error');
  } finally {
    webPush.signedOut().catch(() => {}); // the server deleted this session's subscription

    button.disabled = false;
  }
  endSession();
  signingOut = false;
});

async function boot() {
  if (!api.token) {
    $('boot').hidden = true;
    auth.show();
    return;
  }
  for (let attempt = 0; ; attempt++) {
    try {
      const reply = await api.get('/api/me');
      connectionBanner('ok');
      startSession(reply.user);
      return;
    } catch (err) {
      if (err.status === 401) {
        api.setToken(null);
        $('boot').hidden = true;
        auth.show();
        return;
      }
      if (attempt === 0) toast(`${err.message} Retrying…`, 'error');
      connectionBanner('down', 'No connection to the server. Retrying…');
      await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 1000 * 2 ** attempt)));
    }
  }
}

boot();
