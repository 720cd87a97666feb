// The Admin view (site moderators and administrators only): users with their role and
// suspension, the queue of reported messages, the audit log. Also the "Report" dialog that
// every member reaches from a message's menu. The server decides who may do what; this view
// only hides what the signed-in role cannot use.

import { path } from '../api.js';
import { $, h, setFieldError, setupTabs, toast, withBusy } from '../dom.js';
import { fullTime, parseTime } from '../format.js';

const STAFF = new Set(['moderator', 'admin']);
const ROLE_NAMES = { user: 'User', moderator: 'Moderator', admin: 'Admin' };
const ACTION_NAMES = {
  'role.grant': 'Role given',
  'role.revoke': 'Role taken',
  'user.suspend': 'Suspended',
  'user.unsuspend': 'Suspension lifted',
  'report.resolve': 'Report resolved',
  'message.delete': 'Message deleted by a moderator',
};
const SEARCH_DELAY_MS = 250;

/** Whether this user may open the Admin view. */
export const isStaff = (user) => STAFF.has(user?.role);

const when = (iso) => (iso ? fullTime(parseTime(iso)) : '');

/** What the sign-in form says to a suspended account (its 403 `suspended` error). */
export function suspendedSignInText(details) {
  const end = details?.until ? `until ${when(details.until)}` : 'until a moderator lifts it';
  return `Your account is suspended ${end}. Reason: ${details?.reason || 'none given'}`;
}

function suspensionText(suspended) {
  if (!suspended) return '';
  const end = suspended.until ? `until ${when(suspended.until)}` : 'until lifted';
  return `Suspended ${end}: ${suspended.reason}`;
}

/** A small modal form: resolves with its values on submit, null on Cancel or Escape. */
function askInDialog(dialog, form, cancel, read) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    let result = null;
    const onSubmit = (event) => {
      event.preventDefault();
      const values = read();
      if (!values) return;
      result = values;
      dialog.close();
    };
    const onCancel = () => dialog.close();
    form.addEventListener('submit', onSubmit);
    cancel.addEventListener('click', onCancel);
    dialog.addEventListener(
      'close',
      () => {
        form.removeEventListener('submit', onSubmit);
        cancel.removeEventListener('click', onCancel);
        if (opener?.isConnected) opener.focus();
        resolve(result);
      },
      { once: true },
    );
    dialog.showModal();
    form.querySelector('textarea')?.focus();
  });
}

/** Ask for a reason in this dialog's textarea (1-500 characters). */
function askReason(prefix, extra = () => ({})) {
  const input = $(`${prefix}-reason`);
  input.value = '';
  setFieldError(input, '');
  return askInDialog($(`${prefix}-dialog`), $(`${prefix}-form`), $(`${prefix}-cancel`), () => {
    const reason = input.value.trim();
    if (!reason) {
      setFieldError(input, 'A reason is required.');
      input.focus();
      return null;
    }
    return { reason, ...extra() };
  });
}

/** Suspend a user: ask why and for how long, then do it. True once suspended. */
async function suspendUser(api, user) {
  $('suspend-dialog-title').textContent = `Suspend ${user.username}`;
  const asked = await askReason('suspend', () => ({ secs: $('suspend-duration').value }));
  if (!asked) return false;
  const body = { reason: asked.reason };
  if (asked.secs) body.until = new Date(Date.now() + Number(asked.secs) * 1000).toISOString();
  try {
    await api.post(path`/api/admin/users/${user.id}/suspend`, body);
    toast(`${user.username} is suspended.`);
    return true;
  } catch (err) {
    toast(err.message, 'error');
    return false;
  }
}

/** The Report dialog of a message: ask for a reason and send the report. */
export async function reportMessage(api, conversationId, message) {
  const asked = await askReason('report');
  if (!asked) return;
  try {
    await api.post(path`/api/conversations/${conversationId}/messages/${message.id}/report`, asked);
    toast('Thanks: the moderators will look at it.');
  } catch (err) {
    toast(err.message, 'error');
  }
}

export function setupAdmin({ api, store }) {
  const dialog = $('admin-dialog');
  const opener = $('open-admin');
  let searchTimer = null;
  let auditBefore = null;

  const selectTab = setupTabs(dialog.querySelector('[role="tablist"]'), (id) => {
    if (id === 'admin-tab-users') loadUsers();
    else if (id === 'admin-tab-reports') loadReports();
    else loadAudit(true);
  });

  store.on('me', () => {
    opener.hidden = !isStaff(store.me);
  });

  async function loadInto(errorId, work) {
    $(errorId).textContent = '';
    try {
      await work();
    } catch (err) {
      $(errorId).textContent = err.message;
    }
  }

  // -- users ---------------------------------------------------------------------------------

  function userRow(user) {
    const admin = store.me?.role === 'admin';
    const status = h('span', { class: 'admin-status', text: suspensionText(user.suspended) });
    const role = admin && user.id !== store.me.id
      ? h(
          'select',
          {
            attrs: { 'aria-label': `Role of ${user.username}` },
            on: { change: (event) => changeRole(user, event.target) },
          },
          Object.entries(ROLE_NAMES).map(([value, text]) => h('option', { value, text, selected: value === user.role })),
        )
      : h('span', { class: 'admin-role', text: ROLE_NAMES[user.role] || user.role });
    const mayAct = user.id !== store.me?.id && (admin || user.role === 'user');
    const action = !mayAct
      ? null
      : user.suspended
        ? h('button', { type: 'button', class: 'btn small', text: 'Unsuspend', attrs: { 'aria-label': `Unsuspend ${user.username}` }, on: { click: (e) => unsuspend(user, e.currentTarget) } })
        : h('button', { type: 'button', class: 'btn small danger', text: 'Suspend', attrs: { 'aria-label': `Suspend ${user.username}` }, on: { click: () => suspend(user) } });
    return h(
      'li',
      { class: 'admin-user', dataset: { userId: user.id } },
      h('div', { class: 'admin-user-text' }, h('strong', { text: user.username }), status),
      role,
      action,
    );
  }

  async function loadUsers() {
    await loadInto('admin-users-error', async () => {
      const reply = await api.get('/api/admin/users', { q: $('admin-user-search').value.trim(), limit: 50 });
      $('admin-user-list').replaceChildren(...reply.users.map(userRow));
    });
  }

  async function changeRole(user, select) {
    try {
      await api.put(path`/api/admin/users/${user.id}/role`, { role: select.value });
      toast(`${user.username} is now ${ROLE_NAMES[select.value].toLowerCase()}.`);
    } catch (err) {
      toast(err.message, 'error');
    }
    await loadUsers();
  }

  async function suspend(user) {
    if (await suspendUser(api, user)) await loadUsers();
  }

  async function unsuspend(user, button) {
    try {
      await withBusy(button, () => api.post(path`/api/admin/users/${user.id}/unsuspend`));
      toast(`${user.username} may sign in again.`);
    } catch (err) {
      toast(err.message, 'error');
    }
    await loadUsers();
  }

  $('admin-user-search').addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadUsers, SEARCH_DELAY_MS);
  });

  // -- reports -------------------------------------------------------------------------------

  function reportRow(report, users) {
    const name = (id) => users[id]?.username || 'Deleted user';
    const context = h(
      'ol',
      { class: 'admin-context', attrs: { 'aria-label': 'The conversation around it' } },
      report.context.map((m) =>
        h(
          'li',
          { class: m.id === report.message_id ? 'reported' : '' },
          h('strong', { text: `${name(m.sender_id)}: ` }),
          m.deleted ? h('em', { text: 'deleted' }) : m.body,
        ),
      ),
    );
    const resolve = (action, text) =>
      h('button', {
        type: 'button',
        class: action === 'dismiss' ? 'btn small' : 'btn small danger',
        text,
        on: { click: (event) => resolveReport(report, action, event.currentTarget) },
      });
    return h(
      'li',
      { class: 'admin-report', dataset: { reportId: report.id } },
      h('p', { class: 'admin-report-head' }, `${name(report.reporter_id)} reported ${name(report.sender_id)} ${when(report.created_at)}: `, h('em', { text: report.reason })),
      h('blockquote', { class: 'admin-evidence', text: report.body }),
      context,
      h('div', { class: 'admin-actions' }, resolve('dismiss', 'Dismiss'), resolve('delete', 'Delete message'), resolve('suspend', 'Suspend author')),
    );
  }

  async function loadReports() {
    await loadInto('admin-reports-error', async () => {
      const reply = await api.get('/api/admin/reports', { limit: 50 });
      $('admin-report-list').replaceChildren(...reply.reports.map((r) => reportRow(r, reply.users)));
      $('admin-reports-empty').hidden = reply.reports.length > 0;
    });
  }

  async function resolveReport(report, action, button) {
    try {
      await withBusy(button, () => api.post(path`/api/admin/reports/${report.id}/resolve`, { action }));
      toast('Report resolved.');
    } catch (err) {
      toast(err.message, 'error');
    }
    await loadReports();
  }

  // -- the audit log -------------------------------------------------------------------------

  function auditRow(entry, users) {
    const reason = entry.reason ? ` (${entry.reason})` : '';
    const name = (id) => users[id]?.username || (id === 'cli' ? 'the command line' : id);
    return h(
      'li',
      { class: 'admin-entry' },
      h('time', { text: when(entry.at), attrs: { datetime: entry.at } }),
      ` ${ACTION_NAMES[entry.action] || entry.action}${reason}: ${name(entry.target_id)}, by ${name(entry.actor_id)}`,
    );
  }

  async function loadAudit(fresh) {
    if (fresh) auditBefore = null;
    await loadInto('admin-audit-error', async () => {
      const reply = await api.get('/api/admin/audit', { before: auditBefore, limit: 50 });
      const rows = reply.entries.map((entry) => auditRow(entry, reply.users));
      if (fresh) $('admin-audit-list').replaceChildren(...rows);
      else $('admin-audit-list').append(...rows);
      auditBefore = reply.entries.at(-1)?.id ?? auditBefore;
      $('admin-audit-more').hidden = !reply.has_more;
      $('admin-audit-empty').hidden = $('admin-audit-list').children.length > 0;
    });
  }
  $('admin-audit-more').addEventListener('click', () => loadAudit(false));

  opener.addEventListener('click', () => {
    dialog.showModal();
    selectTab('admin-tab-users');
    $('admin-user-search').focus();
  });
  $('admin-close').addEventListener('click', () => dialog.close());

  return {
    close() {
      for (const id of ['admin-dialog', 'suspend-dialog', 'report-dialog']) if ($(id).open) $(id).close();
    },
    reset() {
      this.close();
      opener.hidden = true;
      for (const id of ['admin-user-list', 'admin-report-list', 'admin-audit-list']) $(id).replaceChildren();
    },
  };
}
