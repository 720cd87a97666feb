// The Settings dialog: notifications and sound (this browser), the theme (this browser), and
// who may start a conversation with me (the account, on the server).

import { $, setFieldError } from '../dom.js';
import { loadNotifyPrefs, notificationPermission, saveNotifyPrefs } from '../notify.js';

const THEME_KEY = 'chat.theme';
const THEMES = ['system', 'light', 'dark'];

export function savedTheme() {
  const theme = localStorage.getItem(THEME_KEY);
  return THEMES.includes(theme) ? theme : 'system';
}

/** "system" leaves it to prefers-color-scheme (theme.css); light or dark override it. */
export function applyTheme(theme = savedTheme()) {
  const root = document.documentElement;
  if (theme === 'system') delete root.dataset.theme;
  else root.dataset.theme = theme;
}

applyTheme(); // at load, before the first view is drawn

const PERMISSION_TEXT = {
  granted: '',
  default: 'The browser has not been asked yet.',
  denied: 'The browser blocks notifications for this site; change it in the site settings.',
  unsupported: 'This browser cannot show notifications.',
};

export function setupSettings({ privacy, webPush }) {
  const dialog = $('settings-dialog');
  const desktop = $('setting-desktop');
  const sound = $('setting-sound');
  const policy = $('setting-dm-policy');

  function showPermission() {
    const state = notificationPermission();
    $('notify-permission').textContent = PERMISSION_TEXT[state] ?? '';
    $('notify-allow').hidden = state !== 'default';
  }

  async function open() {
    const prefs = loadNotifyPrefs();
    desktop.checked = prefs.desktop;
    sound.checked = prefs.sound;
    const theme = savedTheme();
    for (const radio of dialog.querySelectorAll('input[name="theme"]')) radio.checked = radio.value === theme;
    showPermission();
    $('setting-push').checked = webPush.wanted;
    setFieldError(policy, '');
    policy.disabled = true;
    dialog.showModal();
    desktop.focus();
    try {
      policy.value = (await privacy.getSettings()).dm_policy;
    } catch (err) {
      setFieldError(policy, `Could not load the setting: ${err.message}`);
      return;
    }
    policy.disabled = false;
  }

  setupPushSetting(webPush);
  $('open-settings').addEventListener('click', open);
  $('settings-close').addEventListener('click', () => dialog.close());
  desktop.addEventListener('change', () => saveNotifyPrefs({ desktop: desktop.checked }));
  sound.addEventListener('change', () => saveNotifyPrefs({ sound: sound.checked }));
  for (const radio of dialog.querySelectorAll('input[name="theme"]')) {
    radio.addEventListener('change', () => {
      if (!radio.checked) return;
      localStorage.setItem(THEME_KEY, radio.value);
      applyTheme(radio.value);
    });
  }
  $('notify-allow').addEventListener('click', async () => {
    try {
      await Notification.requestPermission();
    } finally {
      showPermission();
    }
  });

  let previous = null;
  policy.addEventListener('focus', () => {
    previous = policy.value;
  });
  policy.addEventListener('change', async () => {
    const wanted = policy.value;
    setFieldError(policy, '');
    policy.disabled = true;
    policy.setAttribute('aria-busy', 'true');
    try {
      policy.value = (await privacy.setDmPolicy(wanted)).dm_policy;
      previous = policy.value;
    } catch (err) {
      if (previous) policy.value = previous;
      setFieldError(policy, `Not saved: ${err.message}`);
    } finally {
      policy.disabled = false;
      policy.removeAttribute('aria-busy');
    }
  });

  return {
    close() {
      if (dialog.open) dialog.close();
    },
  };
}

/** The push switch (static/js/push.js): on asks permission and subscribes, off unsubscribes. */
function setupPushSetting(webPush) {
  const box = $('setting-push');
  const status = $('push-status');
  box.addEventListener('change', async () => {
    box.disabled = true;
    status.textContent = '';
    try {
      if (box.checked) await webPush.enable();
      else await webPush.disable();
      // Said once it is done (the server told too): off means no push reaches this browser.
      status.textContent = `Push notifications are ${box.checked ? 'on' : 'off'} for this browser.`;
    } catch (err) {
      box.checked = webPush.wanted;
      status.textContent = `Push notifications: ${err.message}`;
    } finally {
      box.disabled = false;
    }
  });
}
