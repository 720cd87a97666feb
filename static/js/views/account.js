// The Account dialog: change the password, see and revoke sessions, delete the account. The
// server's rules are checked as you submit; its answers land next to the field they concern.

import { $, confirmAction, h, setFieldError, toast, withBusy } from '../dom.js';
import { fullTime, parseTime, shortWhen } from '../format.js';
import { checkPassword } from '../validation.js';

const REASON_TEXT = {
  password_changed: 'Your password was changed in another session. Please sign in again.',
  revoked: 'This session was signed out from another one. Please sign in again.',
  account_deleted: 'Your account was deleted.',
  suspended: 'Your account was suspended by a moderator. Signing in again tells why and until when.',
};

/** What to tell the user when the server ended the session, by session.ended's reason. */
export function sessionEndedText(reason) {
  return REASON_TEXT[reason] || 'Your session has ended. Please sign in again.';
}

/** A readable name for a User-Agent string: the browser and the system, when recognisable. */
function deviceName(agent) {
  if (!agent) return 'Unknown client';
  const browser = /Edg\//.test(agent)
    ? 'Edge'
    : /Firefox\//.test(agent)
      ? 'Firefox'
      : /Chrom(e|ium)\//.test(agent)
        ? 'Chrome'
        : /Safari\//.test(agent)
          ? 'Safari'
          : null;
  const system = /Android/.test(agent)
    ? 'Android'
    : /iPhone|iPad/.test(agent)
      ? 'iOS'
      : /Windows/.test(agent)
        ? 'Windows'
        : /Mac OS X/.test(agent)
          ? 'macOS'
          : /Linux/.test(agent)
            ? 'Linux'
            : null;
  if (browser && system) return `${browser} on ${system}`;
  return browser || system || agent.slice(0, 60);
}

/** Wire the dialog. `onDeleted()` runs once the account is gone (back to the sign-in form). */
export function setupAccount({ api, onDeleted }) {
  const dialog = $('account-dialog');
  const list = $('session-list');
  const current = $('password-current');
  const fresh = $('password-new');
  const deletePassword = $('delete-password');

  function clearForms() {
    for (const input of [current, fresh, deletePassword]) {
      input.value = '';
      setFieldError(input, '');
    }
    for (const id of ['password-form-error', 'delete-form-error', 'session-list-error']) $(id).textContent = '';
  }

  /** The server's error where it belongs: on its field when it names one we show. */
  function showError(err, fields, formError) {
    const input = fields[err.field] || (err.code === 'invalid_credentials' ? fields.password : null);
    if (input) {
      setFieldError(input, err.code === 'invalid_credentials' ? 'That is not your password.' : err.message);
      input.focus();
    } else {
      formError.textContent = err.message;
    }
  }

  function sessionRow(session) {
    const used = parseTime(session.last_used_at);
    const meta = [session.address || 'unknown address', used ? `last used ${shortWhen(used)}` : null].filter(Boolean);
    const name = deviceName(session.user_agent);
    return h(
      'li',
      { dataset: { session: session.id, current: String(session.current) } },
      h(
        'div',
        { class: 'session-text' },
        h('span', { class: 'session-agent', text: name, title: session.user_agent || '' }),
        h('span', { class: 'session-meta', text: meta.join(' · '), title: used ? fullTime(used) : '' }),
      ),
      session.current
        ? h('span', { class: 'session-current', text: 'This session' })
        : h('button', {
            type: 'button',
            class: 'btn ghost small danger',
            text: 'Revoke',
            attrs: { 'aria-label': `Revoke ${name}, ${meta.join(', ')}` },
            on: { click: (event) => revoke(session, event.currentTarget) },
          }),
    );
  }

  async function loadSessions() {
    $('session-list-error').textContent = '';
    list.setAttribute('aria-busy', 'true');
    try {
      const reply = await api.get('/api/account/sessions');
      list.replaceChildren(...reply.sessions.map(sessionRow));
    } catch (err) {
      $('session-list-error').textContent = `Could not load the sessions: ${err.message}`;
    } finally {
      list.setAttribute('aria-busy', 'false');
    }
  }

  async function revoke(session, button) {
    try {
      await withBusy(button, () => api.del(`/api/account/sessions/${encodeURIComponent(session.id)}`));
      toast('Session signed out.');
    } catch (err) {
      if (err.status !== 404) {
        $('session-list-error').textContent = `Not revoked: ${err.message}`;
        return;
      }
    }
    await loadSessions();
  }

  $('password-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('password-form-error').textContent = '';
    const missing = current.value ? '' : 'Current password is required.';
    const bad = checkPassword(fresh.value);
    setFieldError(current, missing);
    setFieldError(fresh, bad);
    if (missing || bad) {
      (missing ? current : fresh).focus();
      return;
    }
    try {
      const reply = await withBusy($('password-submit'), () =>
        api.post('/api/account/password', { current_password: current.value, new_password: fresh.value }),
      );
      current.value = '';
      fresh.value = '';
      const n = reply.revoked_sessions;
      toast(n ? `Password changed. ${n === 1 ? '1 other session was' : `${n} other sessions were`} signed out.` : 'Password changed.');
      await loadSessions();
    } catch (err) {
      showError(err, { current_password: current, password: current, new_password: fresh }, $('password-form-error'));
    }
  });

  $('delete-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('delete-form-error').textContent = '';
    if (!deletePassword.value) {
      setFieldError(deletePassword, 'Password is required.');
      deletePassword.focus();
      return;
    }
    setFieldError(deletePassword, '');
    const sure = await confirmAction({
      title: 'Delete your account?',
      message: 'This cannot be undone. Your friends, requests, blocks and sessions are erased; your messages stay, from "Deleted user".',
      confirm: 'Delete account',
    });
    if (!sure) return;
    try {
      await withBusy($('delete-submit'), () => api.request('DELETE', '/api/account', { body: { password: deletePassword.value } }));
    } catch (err) {
      showError(err, { password: deletePassword }, $('delete-form-error'));
      return;
    }
    dialog.close();
    onDeleted();
  });

  $('account-close').addEventListener('click', () => dialog.close());

  return {
    open() {
      clearForms();
      list.replaceChildren();
      dialog.showModal();
      current.focus();
      loadSessions();
    },
    close() {
      if (dialog.open) dialog.close();
    },
  };
}
