// An encrypted conversation's header actions (docs/e2e.md): the safety-number screen of a DM
// (the 60 digits computed from both identity keys, one number per device of the contact, and
// "Mark verified" once compared), and the export decrypted here (the server's has ciphertext).

import { $, confirmAction, toast } from '../dom.js';

/** The server's export of the conversation with each message decrypted for this device. */
async function decryptedExport(api, e2e, conversationId) {
  const doc = await api.request('GET', `/api/conversations/${encodeURIComponent(conversationId)}/export`);
  for (const part of doc.conversations) {
    const opened = await e2e.openAll(part.messages);
    part.messages = opened.map(({ envelopes, no_envelope, ...m }) => m);
  }
  return doc;
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const link = Object.assign(document.createElement('a'), { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

const grouped = (digits) => digits.match(/.{1,5}/g).join(' ');

export function setupSafety({ store, actions, current }) {
  $('chat-export').addEventListener('click', async () => {
    const id = current();
    if (!id || !actions.e2e) return;
    try {
      const doc = await decryptedExport(actions.api, actions.e2e, id);
      download(`chat-export-decrypted-${id}.json`, JSON.stringify(doc, null, 2));
    } catch (err) {
      toast(`Could not export: ${err.message}`, 'error');
    }
  });

  $('chat-safety').addEventListener('click', async () => {
    const conv = store.conversations.get(current());
    const partner = store.partnerOf(conv);
    if (!partner || !actions.e2e) return;
    const numbers = await actions.e2e.safetyNumbers(partner);
    const name = store.nameOf(partner);
    if (!numbers.length) {
      toast(`${name} has no device with encryption keys yet.`, 'error');
      return;
    }
    const shown = numbers.map((n, i) => `Device ${i + 1}${n.verified ? ' (verified)' : ''}: ${grouped(n.number)}`).join('\n');
    const sure = await confirmAction({
      title: `Safety number with ${name}`,
      message: `Compare these numbers with ${name}'s screen, in person or on a call. If they match, nobody is in between.\n${shown}`,
      confirm: 'Mark verified',
      danger: false,
    });
    if (!sure) return;
    for (const n of numbers) await actions.e2e.markVerified(n.number);
    toast(`${name} is verified.`, 'success');
  });
}
